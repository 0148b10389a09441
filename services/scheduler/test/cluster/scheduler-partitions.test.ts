/**
 * A scheduler and its partitions (issue #22): alone (it holds the scheduler lock) it owns every
 * partition from its start, even those a crashed predecessor's unexpired leases still name; a
 * clean stop hands them over; and when another replica takes its partitions, its next commit is
 * refused, the call answers UNAVAILABLE, nothing of it is stored, and the scheduler unloads the
 * runs of those partitions but keeps serving (partition-moves.test.ts has the runs move).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import pg from "pg";
import type { SchedulerLockedError } from "../../src/scheduler.js";
import { registerSpec } from "../e2e/harness.js";
import { startTestDatabase, startTestScheduler, waitFor, workflowClient } from "../support.js";

describe("a scheduler's partitions", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let sql: pg.Pool;

  before(async () => {
    server = await startTestDatabase();
    sql = new pg.Pool({ connectionString: server.url, max: 2 });
  });
  after(async () => {
    await sql?.end();
    await server?.close();
  });

  const partitions = async () =>
    (
      await sql.query<{ partition: number; owner: string | null; epoch: number; live: boolean }>(
        "SELECT partition, owner, epoch, lease_expires_at > now() AS live FROM partitions ORDER BY partition",
      )
    ).rows;

  it("owns every partition at once, takes those of a crashed predecessor at once, and hands them over on stopping", async () => {
    const first = await startTestScheduler(server.url);
    const id = first.partitions.replicaId;
    assert.deepEqual(
      (await partitions()).map((p) => [p.owner, p.epoch, p.live]),
      Array.from({ length: 16 }, () => [id, 1, true]),
    );
    await waitFor("the replica's address", async () => {
      const { rows } = await sql.query<{ address: string }>("SELECT address FROM replicas WHERE id = $1", [
        id,
      ]);
      return rows[0]?.address === first.address;
    });
    await first.stop();
    assert.ok((await partitions()).every((p) => p.owner === null && !p.live));
    assert.equal((await sql.query("SELECT 1 FROM replicas")).rowCount, 0);

    // A crashed predecessor's leases name it for a long while yet: the next scheduler (holding the
    // scheduler lock, so alone) takes them at once, each at the next epoch.
    await sql.query("UPDATE partitions SET owner = $1, lease_expires_at = now() + interval '1 hour'", [
      randomUUID(),
    ]);
    const second = await startTestScheduler(server.url);
    try {
      assert.deepEqual(
        (await partitions()).map((p) => [p.owner, p.epoch]),
        Array.from({ length: 16 }, () => [second.partitions.replicaId, 2]),
      );
    } finally {
      await second.stop();
    }
  });

  it("answers UNAVAILABLE, stores nothing and unloads its runs when another replica took its partitions", async () => {
    const fatal: SchedulerLockedError[] = [];
    const scheduler = await startTestScheduler(server.url, { onFatal: (e) => fatal.push(e) });
    try {
      const client = workflowClient(scheduler.address);
      await registerSpec(client, { name: "fenced", version: 1, steps: [{ id: "a", type: "noop" }] });
      const { run } = await client.startRun({ workflowName: "fenced", input: jsonToValue({}) });
      assert.ok(run);
      // Another replica takes every partition over (as its takeover does: epoch + 1), while this
      // one, not having renewed since, still believes it holds them.
      await sql.query(
        "UPDATE partitions SET owner = $1, epoch = epoch + 1, lease_expires_at = now() + interval '1 minute'",
        [randomUUID()],
      );
      const err = await client.startRun({ workflowName: "fenced", input: jsonToValue({ n: 2 }) }).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof ConnectError, String(err));
      assert.equal(err.code, Code.Unavailable);
      // Every partition lost (the refused run's at once, the others at the next heartbeat): no run
      // stays in memory, and the scheduler goes on serving.
      await waitFor("every partition lost", () => scheduler.partitions.held().length === 0);
      await waitFor("the runs unloaded", () => scheduler.engine.stats().activeRuns === 0);
      assert.equal(scheduler.state, "RUNNING");
      assert.deepEqual(fatal, []);
      // Only the run started before the takeover is stored.
      const runs = await sql.query<{ id: string }>("SELECT id FROM workflow_runs");
      assert.deepEqual(
        runs.rows.map((r) => r.id),
        [run.id],
      );
    } finally {
      await scheduler.stop();
    }
  });
});
