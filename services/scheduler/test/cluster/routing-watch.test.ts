/**
 * A WatchRun whose run leaves the replica it was opened at (issue #22, milestone 4): a replica
 * alone holds every partition; a second one joins, rebalancing hands half of them over, and a
 * watch opened at the first on a run of a partition handed over goes on through the new owner,
 * seeing every update once (it used to stay open and see nothing). Then the owner of a watched run
 * stops renewing its leases without knowing it (its heartbeats wait behind a lock, as a paused
 * process would): the other replica takes its partitions, and a watch that followed the run
 * through the silent owner's stream goes on from the new owner.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { jsonToValue } from "@nexusflow/common";
import { RunStatus, TaskStatus, type WatchRunResponse } from "@nexusflow/gen";
import { partitionOf } from "../../src/cluster/partitioning.js";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec, startTestDatabase, startTestScheduler, waitFor, workflowClient } from "../support.js";

const T = { timeout: 60_000 };

describe("a WatchRun whose run moves to another replica", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let sql: pg.Pool;
  const started: Scheduler[] = [];
  const replica = async (): Promise<Scheduler> => {
    const s = await startTestScheduler(server.url, { cluster: true, partitionLeaseMs: 1000 });
    started.push(s);
    return s;
  };

  before(async () => {
    server = await startTestDatabase();
    sql = new pg.Pool({ connectionString: server.url, max: 2 });
  });
  after(async () => {
    for (const s of started.splice(0)) await s.stop();
    await sql?.end();
    await server?.close();
  });

  it("follows the run to the replica its partition was handed to, every update once", T, async () => {
    const a = await replica();
    assert.equal(a.partitions.held().length, 16);
    const statusOf = (m: WatchRunResponse | undefined, step: string): TaskStatus | undefined =>
      m?.run?.tasks.find((t) => t.stepId === step)?.status;
    const client = workflowClient(a.address);
    await registerSpec(client, {
      name: "routing-moving",
      version: 1,
      steps: [
        { id: "gate", wait: { signal: "go" } },
        { id: "after", dependsOn: ["gate"], wait: { signal: "done" } },
      ],
    });
    // Rebalancing hands the highest partitions over: a run in 8..15 moves when a second replica joins.
    let runId = "";
    while (partitionOf(runId || "00000000", 16) < 8) {
      const { run } = await client.startRun({ workflowName: "routing-moving", input: jsonToValue({}) });
      runId = run?.id ?? "";
    }
    const messages: WatchRunResponse[] = [];
    const watching = (async () => {
      for await (const m of client.watchRun({ runId })) messages.push(m);
    })();
    await waitFor("the first snapshot", () => messages.length > 0);

    const b = await replica();
    // (The run waits for a signal: parked, in memory at neither.)
    const partition = partitionOf(runId, 16);
    await waitFor("B takes the run's partition", () =>
      b.partitions.held().some((h) => h.partition === partition),
    );
    assert.equal(a.engine.isActive(runId), false);
    // Both signals sent to A (forwarded to B), seen by the watch opened at A.
    await client.signalRun({ runId, name: "go" });
    await waitFor("the gate's success seen at A", () =>
      messages.some((m) => statusOf(m, "gate") === TaskStatus.SUCCEEDED),
    );
    await client.signalRun({ runId, name: "done" });
    await watching;
    assertOnce(messages);

    // The run is B's; a watch at A follows it through B's stream.
    const other =
      (await workflowClient(b.address).startRun({ workflowName: "routing-moving", input: jsonToValue({}) }))
        .run?.id ?? "";
    assert.ok(b.partitions.held().some((h) => h.partition === partitionOf(other, 16)));
    const followed: WatchRunResponse[] = [];
    const following = (async () => {
      for await (const m of client.watchRun({ runId: other })) followed.push(m);
    })();
    await waitFor("the first snapshot, through B", () => followed.length > 0);
    const blocker = await sql.connect();
    try {
      await blocker.query("BEGIN");
      await blocker.query("SELECT 1 FROM replicas WHERE id = $1 FOR UPDATE", [b.partitions.replicaId]);
      const partition = partitionOf(other, 16);
      await waitFor("A takes B's partitions once their leases expire", () =>
        a.partitions.held().some((h) => h.partition === partition),
      );
      // B does not know yet: its stream stays open and silent. The signal goes to A, the owner now.
      await client.signalRun({ runId: other, name: "go" });
      await waitFor("the gate's success seen at A, from A", () =>
        followed.some((m) => statusOf(m, "gate") === TaskStatus.SUCCEEDED),
      );
      await client.signalRun({ runId: other, name: "done" });
      await following;
    } finally {
      await blocker.query("ROLLBACK");
      blocker.release();
    }
    assertOnce(followed);
  });
});

/** The stream ended with the run's success and each message changed something; each wait succeeded once. */
function assertOnce(messages: readonly WatchRunResponse[]): void {
  const statusOf = (m: WatchRunResponse | undefined, step: string): TaskStatus | undefined =>
    m?.run?.tasks.find((t) => t.stepId === step)?.status;
  assert.equal(messages.at(-1)?.run?.status, RunStatus.SUCCEEDED);
  // A message changes a task, or the run's status (its end may come in a commit after its last task's).
  const states = messages.map((m) =>
    JSON.stringify([
      m.run?.status,
      m.run?.tasks.map((t) => [t.id, t.status, t.attempts.length, t.pendingReason]),
    ]),
  );
  for (let i = 1; i < states.length; i++)
    assert.notEqual(states[i], states[i - 1], `message ${i} repeats message ${i - 1}`);
  for (const step of ["gate", "after"])
    assert.equal(
      messages.filter(
        (m, i) =>
          statusOf(m, step) === TaskStatus.SUCCEEDED &&
          statusOf(messages[i - 1], step) !== TaskStatus.SUCCEEDED,
      ).length,
      1,
      `the success of ${step} was seen once`,
    );
}
