/**
 * ReplicaDiscovery's refresh: every interval while the scheduler is in cluster mode; not on the
 * interval while the last answer said `sole` (the installation's only scheduler), until a session
 * ends. Timers are node:test's mock timers; the calls go to a fake client answering at once.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { createLogger } from "@nexusflow/common";
import { ListReplicasResponseSchema } from "@nexusflow/gen";
import { ReplicaDiscovery } from "./replica-discovery.js";

const logger = createLogger("replica-discovery-test", "silent");

/** Lets the asks that timers started run to their end (their awaits are promises, not timers). */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * A discovery over one fake client whose ListReplicas calls go to `answer` (with the call's
 * completion: it answers a map of 16 partitions, `sole` as given), every map it applies in `applied`.
 */
function discoveryOver(answer: (respond: (sole: boolean) => void) => void): {
  discovery: ReplicaDiscovery;
  applied: number[];
} {
  const client = {
    makeUnaryRequest: (...args: unknown[]) => {
      const done = args.at(-1) as (error: null, response: unknown) => void;
      answer((sole) => done(null, create(ListReplicasResponseSchema, { partitionCount: 16, sole })));
    },
  } as unknown as grpc.Client;
  const applied: number[] = [];
  const discovery = new ReplicaDiscovery({
    intervalMs: 3_000,
    logger,
    active: () => true,
    clients: () => [client],
    metadata: () => new grpc.Metadata(),
    apply: (map) => applied.push(map.partitionCount),
  });
  return { discovery, applied };
}

describe("ReplicaDiscovery", () => {
  it("asks on its interval only while the scheduler is in cluster mode, and again after a session ends", async (t) => {
    t.mock.timers.enable({ apis: ["setInterval", "setTimeout"] });
    let asks = 0;
    let sole = true;
    const { discovery, applied } = discoveryOver((respond) => {
      asks++;
      respond(sole);
    });
    // The least gap between two asks (200 ms) counts on the real clock: tick past it each time.
    const tick = async (ms: number): Promise<void> => {
      t.mock.timers.tick(ms);
      await settle();
    };
    discovery.start();
    await tick(250);
    assert.equal(asks, 1);
    assert.equal(discovery.sole, true);
    // A sole scheduler: intervals pass, nothing is asked.
    await tick(3_000);
    await tick(3_000);
    await tick(3_000);
    assert.equal(asks, 1);
    // A session ended: asked at once, and on the interval until an answer says sole again.
    discovery.sessionEnded();
    await tick(250);
    assert.equal(asks, 2);
    assert.equal(discovery.sole, true);
    await tick(3_000);
    assert.equal(asks, 2);
    // The scheduler came back in cluster mode: the interval asks again.
    sole = false;
    discovery.sessionEnded();
    await tick(250);
    assert.equal(asks, 3);
    assert.equal(discovery.sole, false);
    await tick(3_000);
    await tick(250);
    assert.equal(asks, 4);
    await tick(3_000);
    await tick(250);
    assert.equal(asks, 5);
    assert.deepEqual(applied, [16, 16, 16, 16, 16]);
    discovery.stop();
  });

  it("takes no sole from an answer to an ask sent before a session ended", async () => {
    const answers: ((sole: boolean) => void)[] = [];
    const { discovery } = discoveryOver((respond) => answers.push(respond));
    discovery.soon();
    while (answers.length === 0) await settle();
    // The old scheduler answers sole after its session ended (it came back in cluster mode).
    discovery.sessionEnded();
    answers[0]?.(true);
    await settle();
    assert.equal(discovery.sole, false);
    discovery.stop();
  });
});
