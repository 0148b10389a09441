/**
 * PartitionRuns.newId (engine/partition-load.ts): every id is a v4 UUID in a partition this
 * replica holds, from one random UUID whatever the share held, and ids stay distinct.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { partitionOf } from "../../src/cluster/partitioning.js";
import { PartitionRuns, type PartitionRunsHost } from "../../src/engine/partition-load.js";

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** PartitionRuns over `held` of `count` partitions (newId reads nothing else of its host). */
function runsHolding(
  count: number,
  held: readonly number[],
  handingOver: readonly number[] = [],
): PartitionRuns {
  const epochs = new Map(held.map((p) => [p, 1]));
  const host = {
    partitions: {
      partitionCount: count,
      epochOf: (p: number) => epochs.get(p),
      held: () => [...epochs].map(([partition, epoch]) => ({ partition, epoch })),
      handingOver: (p: number) => handingOver.includes(p),
    },
  } as unknown as PartitionRunsHost;
  return new PartitionRuns(host);
}

describe("PartitionRuns.newId", () => {
  for (const [count, held] of [
    [16, [3]],
    [16, [0, 7, 15]],
    [4096, [4095]],
    [7, [0, 6]],
  ] as const) {
    it(`gives ids in the partitions held (${held.join(", ")} of ${count})`, () => {
      const runs = runsHolding(count, held);
      const ids = new Set<string>();
      const seen = new Set<number>();
      for (let i = 0; i < 2000; i++) {
        const id = runs.newId();
        assert.match(id, UUID_V4);
        const p = partitionOf(id, count);
        assert.ok(held.includes(p as never), `${id} is in partition ${p}`);
        seen.add(p);
        ids.add(id);
      }
      assert.equal(ids.size, 2000);
      assert.equal(seen.size, held.length, "every partition held gets ids");
    });
  }

  it("gives no id in a partition being handed over", () => {
    const runs = runsHolding(16, [2, 5, 9], [5, 9]);
    for (let i = 0; i < 2000; i++) assert.equal(partitionOf(runs.newId(), 16), 2);
  });

  it("gives a random id when no partition is held", () => {
    const id = runsHolding(16, []).newId();
    assert.match(id, UUID_V4);
  });
});
