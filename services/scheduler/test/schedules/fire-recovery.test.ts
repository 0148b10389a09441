/**
 * The two crash windows of a fire, set up exactly: a fire committed STARTING whose run was never
 * started (the crash came before StartRun), and one whose run was committed but not recorded (the
 * crash came before the fire was settled). A scheduler started afterwards starts the first once
 * and finds the second's run, even with the engine's idempotency keys expired at once (retention
 * 1 ms): the fire's own key lookup is what keeps it from starting a second run.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue } from "@nexusflow/common";
import { OverlapPolicy, ScheduleService } from "@nexusflow/gen";
import pg from "pg";
import type { Scheduler } from "../../src/index.js";
import { startTestDatabase, startTestScheduler, waitFor, workflowClient } from "../support.js";

describe("a fire left STARTING by a crash", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler | undefined;
  let sql: pg.Client;

  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
  });

  after(async () => {
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
  });

  it("is started once, or finds the run it started, after a restart", async () => {
    const options = { idempotencyKeyRetentionMs: 1 };
    scheduler = await startTestScheduler(db.url, options);
    const schedules = createClient(
      ScheduleService,
      createGrpcTransport({ baseUrl: `http://${scheduler.address}` }),
    );
    await workflowClient(scheduler.address).registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({ name: "tick", version: 1, steps: [{ id: "wait", type: "recovery.never" }] }),
      },
    });
    await schedules.createSchedule({
      scheduleId: "rec",
      spec: {
        cron: "* * * * * *",
        workflowName: "tick",
        input: jsonToValue({}),
        overlapPolicy: OverlapPolicy.ALLOW_ALL,
        maxConcurrentRuns: 1000,
      },
    });
    await waitFor("two fires", async () => {
      const { schedule } = await schedules.getSchedule({ scheduleId: "rec" });
      return (schedule?.startedCount ?? 0n) >= 2n;
    });
    await schedules.pauseSchedule({ scheduleId: "rec" });
    await scheduler.stop();

    // Crash after the run was committed, before the fire was settled.
    const { rows: started } = await sql.query<{ schedule_uid: string; fire_key: string; run_id: string }>(
      `SELECT schedule_uid, fire_key, run_id FROM schedule_fires ORDER BY fire_at DESC LIMIT 1`,
    );
    const settledLate = started[0];
    assert.ok(settledLate);
    await sql.query(
      `UPDATE schedule_fires SET status = 'STARTING', run_id = NULL WHERE schedule_uid = $1 AND fire_key = $2`,
      [settledLate.schedule_uid, settledLate.fire_key],
    );
    // Crash after the fire was committed, before StartRun: a fire time with no run at all.
    const { rows: first } = await sql.query<{ fire_at: Date }>(
      `SELECT min(fire_at) AS fire_at FROM schedule_fires`,
    );
    const unstarted = new Date((first[0]?.fire_at as Date).getTime() - 1000);
    await sql.query(
      `INSERT INTO schedule_fires (schedule_uid, fire_key, fire_at, origin, status, created_at)
       VALUES ($1, $2, $3, 'SCHEDULED', 'STARTING', now())`,
      [settledLate.schedule_uid, unstarted.toISOString(), unstarted],
    );

    scheduler = await startTestScheduler(db.url, options);
    await waitFor("no fire STARTING", async () => {
      const { rows } = await sql.query(`SELECT 1 FROM schedule_fires WHERE status = 'STARTING'`);
      return rows.length === 0;
    });
    const { rows: after } = await sql.query<{ fire_key: string; run_id: string | null; status: string }>(
      `SELECT fire_key, run_id, status FROM schedule_fires ORDER BY fire_at`,
    );
    assert.ok(
      after.every((f) => f.status === "STARTED" && f.run_id !== null),
      JSON.stringify(after),
    );
    assert.equal(after.find((f) => f.fire_key === settledLate.fire_key)?.run_id, settledLate.run_id);
    const { rows: runs } = await sql.query<{ fire: string; n: number | string }>(
      `SELECT labels->>'schedule-fire' AS fire, count(*) AS n FROM workflow_runs
       WHERE labels->>'schedule' = 'rec' GROUP BY 1`,
    );
    assert.deepEqual(
      runs.filter((r) => Number(r.n) !== 1),
      [],
      "a fire time with more than one run",
    );
    assert.equal(runs.length, after.length, "one run per fire");
    assert.ok(
      runs.some((r) => r.fire === unstarted.toISOString()),
      "the unstarted fire has its run",
    );
  });
});
