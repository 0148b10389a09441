/**
 * A replica that cannot confirm it still holds a partition (issue #22: paused past its lease, or
 * cut off from the database) believes it owns runs that another replica may own now, with leases
 * that replica granted or adopted. It must not judge an executor's leases of those runs: an Attach
 * listing one does not revoke it (the executor would abort a task whose owner holds its lease on a
 * live session, and nothing would ever expire it; its own current leases listed are reclaimed), and
 * a report on one is answered NOT_FOUND (ask the map where the run is), not "stale lease". Once a heartbeat confirms the partition, it judges
 * as before. Here the heartbeats stall behind a lock a test transaction holds on `partitions`.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jsonToValue } from "@nexusflow/common";
import pg from "pg";
import { partitionOf } from "../../src/cluster/partitioning.js";
import type { Scheduler } from "../../src/scheduler.js";
import { RawSession, startTestDatabase, startTestScheduler, waitFor, workflowClient } from "../support.js";

describe("a replica not sure it still holds a partition", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let sql: pg.Pool;
  const sessions: RawSession[] = [];
  /** A raw session attached as `executorId` listing `held`. */
  const attach = async (executorId: string, held: object[] = []) => {
    const s = new RawSession(scheduler.address);
    sessions.push(s);
    s.send({
      case: "attach",
      value: { executorId, taskTypes: ["unsure-task"], slots: 1, heldLeases: held, protocolVersion: 2 },
    });
    return { s, ack: await s.next("attachAck") };
  };

  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Pool({ connectionString: db.url, max: 2 });
    // A lease long enough that a heartbeat slowed by a loaded machine (a CI run) does not make
    // the replica unsure between the test's checks; short enough that the stall below is brief.
    scheduler = await startTestScheduler(db.url, { partitionLeaseMs: 3000 });
    await workflowClient(scheduler.address).registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({ name: "unsure", version: 1, steps: [{ id: "only", type: "unsure-task" }] }),
      },
    });
  });
  after(async () => {
    for (const s of sessions) s.close();
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
  });

  it("neither revokes nor calls stale a lease of its runs until a heartbeat confirms the partition", async () => {
    const { s: first } = await attach("unsure-x");
    const { run } = await workflowClient(scheduler.address).startRun({
      workflowName: "unsure",
      input: jsonToValue({}),
    });
    assert.ok(run);
    first.send({ case: "credit", value: { n: 1 } });
    const lease = await first.next("lease");
    const key = lease.key;
    assert.ok(key);
    first.send({ case: "started", value: { key } });
    const partition = partitionOf(run.id, scheduler.partitions.partitionCount);
    assert.equal(scheduler.partitions.sure(partition), true, "a replica heartbeating is sure");
    // The lease as another replica would have granted it after taking the partition: the next token.
    const othersKey = { ...key, fencingToken: key.fencingToken + 1n, runId: run.id };

    // The heartbeats stall: the partitions table is locked until the test lets go.
    const locker = await sql.connect();
    try {
      await locker.query("BEGIN");
      await locker.query("LOCK TABLE partitions IN ACCESS EXCLUSIVE MODE");
      await waitFor("the replica to be unsure of the partition", () => !scheduler.partitions.sure(partition));
      assert.notEqual(scheduler.partitions.epochOf(partition), undefined, "it still believes it holds it");

      // Its own lease, listed, is reclaimed (harmless: were the partition gone, unloading would
      // cancel it with partition_moved); the other is not revoked.
      const { s: second, ack } = await attach("unsure-x", [{ ...key, runId: run.id }, othersKey]);
      assert.deepEqual(ack.revoked, [], "a lease of a partition not confirmed is not revoked");
      assert.equal(scheduler.engine.activeRun(run.id)?.tasks.get("only")?.sessionId, ack.sessionId);
      second.send({ case: "completed", value: { key: othersKey, output: jsonToValue({}) } });
      const rejected = await second.next("rejected");
      assert.equal(rejected.code, "NOT_FOUND", rejected.message);
      assert.match(rejected.message, /cannot confirm it still owns/);
      await locker.query("COMMIT");
    } catch (e) {
      await locker.query("ROLLBACK").catch(() => undefined);
      throw e;
    } finally {
      locker.release();
    }

    // Confirmed again: the same lease is judged, and is not this replica's.
    await waitFor("the replica to be sure again", () => scheduler.partitions.sure(partition));
    const { s: third, ack } = await attach("unsure-x", [othersKey]);
    assert.deepEqual(
      ack.revoked.map((k) => k.fencingToken),
      [othersKey.fencingToken],
      "revoked once judged",
    );
    third.send({ case: "completed", value: { key: othersKey, output: jsonToValue({}) } });
    const rejected = await third.next("rejected");
    assert.equal(rejected.code, "FAILED_PRECONDITION", rejected.message);
  });
});
