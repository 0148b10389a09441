/**
 * The coordinator role alone (cluster/coordinator.ts), over leases driven by the test: its roles
 * start when partition 0 is held (at start or when taken), stop (their stop awaited) when it is
 * lost or before it is handed over, start again at a new epoch, and a sole replica always leads.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Coordinator, type CoordinatorFence, type CoordinatorLeases } from "../../src/cluster/coordinator.js";
import type { PartitionListener } from "../../src/cluster/partition-leases.js";
import { PartitionFencedError } from "../../src/cluster/partitioning.js";
import { testLogger, waitFor } from "../support.js";

/** Leases whose partitions the test sets, telling the listener as PartitionLeases does. */
class TestLeases implements CoordinatorLeases {
  readonly replicaId = "00000000-0000-4000-8000-000000000001";
  readonly owned = new Map<number, number>();
  private readonly listeners: PartitionListener[] = [];

  epochOf(partition: number): number | undefined {
    return this.owned.get(partition);
  }
  listen(listener: PartitionListener): void {
    this.listeners.push(listener);
  }
  fenced(error: PartitionFencedError): void {
    this.lose(error.partitions.filter((p) => this.owned.has(p)));
  }
  take(partition: number, epoch: number): void {
    this.owned.set(partition, epoch);
    for (const l of this.listeners) l.onTaken?.([partition]);
  }
  lose(partitions: number[]): void {
    for (const p of partitions) this.owned.delete(p);
    for (const l of this.listeners) l.onLost?.(partitions);
  }
  async release(partitions: number[]): Promise<void> {
    for (const l of this.listeners) await l.beforeRelease?.(partitions);
    for (const p of partitions) this.owned.delete(p);
  }
}

/** A role recording its terms; its stop resolves when the test lets it. */
function recordingRole() {
  const terms: { fence: CoordinatorFence | undefined; stopped: boolean }[] = [];
  let stopGate: Promise<void> = Promise.resolve();
  return {
    terms,
    holdStops(gate: Promise<void>) {
      stopGate = gate;
    },
    role: {
      name: "recording",
      start(fence: CoordinatorFence | undefined) {
        const term = { fence, stopped: false };
        terms.push(term);
        return {
          stop: async () => {
            await stopGate;
            term.stopped = true;
          },
        };
      },
    },
  };
}

describe("the coordinator role", () => {
  it("leads while partition 0 is held, at each epoch, and stops its roles when it is lost or handed over", async () => {
    const leases = new TestLeases();
    const r = recordingRole();
    const c = new Coordinator({ leases, roles: [r.role], log: testLogger("coordinator") });
    leases.owned.set(3, 1);
    c.start();
    await waitFor("following", () => c.state.kind === "FOLLOWING");
    assert.equal(r.terms.length, 0, "partition 3 alone does not make it the coordinator");

    leases.take(0, 4);
    await waitFor("leading", () => c.leading);
    assert.deepEqual(r.terms[0]?.fence, { owner: leases.replicaId, epoch: 4 });
    assert.deepEqual(c.fence, { owner: leases.replicaId, epoch: 4 });

    // A write refused by the fence: partition 0 is lost, the role stops.
    const refused = c.refused(Object.assign(new Error("fenced"), { code: "NF001", detail: "0" }));
    assert.ok(refused instanceof PartitionFencedError);
    assert.equal(c.refused(new Error("another error")), undefined);
    assert.equal(c.fence, undefined, "no fence once partition 0 is lost");
    await waitFor("the role stopped", () => r.terms[0]?.stopped === true);
    assert.equal(c.leading, false);

    // Taken again at a later epoch: a new term.
    leases.take(0, 6);
    await waitFor("leading again", () => c.leading && r.terms.length === 2);
    assert.equal(r.terms[1]?.fence?.epoch, 6);

    // Handed over: the release waits for the role's stop.
    let open!: () => void;
    r.holdStops(new Promise((resolve) => (open = resolve)));
    let released = false;
    const releasing = leases.release([0]).then(() => (released = true));
    await waitFor("following", () => c.state.kind === "FOLLOWING");
    assert.equal(released, false, "partition 0 is not handed over while the role's pass runs");
    assert.equal(leases.epochOf(0), 6);
    open();
    await releasing;
    assert.equal(r.terms[1]?.stopped, true);
    await c.stop();
    assert.equal(c.state.kind, "STOPPED");
    leases.take(0, 8);
    assert.equal(r.terms.length, 2, "a stopped coordinator starts nothing");
  });

  it("leads at once and unfenced when sole, until stopped", async () => {
    const leases = new TestLeases();
    const r = recordingRole();
    const c = new Coordinator({ leases, roles: [r.role], log: testLogger("coordinator"), sole: true });
    c.start();
    assert.equal(c.leading, true, "in the same turn");
    assert.equal(r.terms[0]?.fence, undefined);
    assert.equal(c.fence, undefined);
    leases.lose([0]);
    assert.equal(c.leading, true, "a sole replica does not follow the leases");
    await c.stop();
    assert.equal(r.terms[0]?.stopped, true);
  });
});
