/**
 * A scheduler that stops while a StartRun waits for its commit (the database slow to take it)
 * answers that call UNAVAILABLE (retry; with an idempotency key the retry finds the run if it was
 * stored), never CANCELLED by a server cut short before the engine settled what it had.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec } from "../e2e/harness.js";
import { startTestDatabase, startTestScheduler, waitFor, workflowClient } from "../support.js";

describe("a StartRun in flight while its scheduler stops", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let pool: pg.Pool;
  let scheduler: Scheduler | undefined;

  before(async () => {
    db = await startTestDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    pool.on("error", () => undefined);
    scheduler = await startTestScheduler(db.url);
    await registerSpec(workflowClient(scheduler.address), {
      name: "in-flight",
      version: 1,
      steps: [{ id: "only", type: "held" }],
    });
  });
  after(async () => {
    await scheduler?.stop();
    await pool?.end();
    await db?.close();
  });

  it("is answered UNAVAILABLE, not cancelled", async () => {
    const s = scheduler as Scheduler;
    const client = workflowClient(s.address);
    // Commits that write a key wait: the table is locked against writes until the call is answered.
    const locker = await pool.connect();
    await locker.query("BEGIN");
    await locker.query("LOCK TABLE idempotency_keys IN SHARE MODE");
    let stopping: Promise<void> | undefined;
    try {
      const call = client
        .startRun({ workflowName: "in-flight", input: jsonToValue({}), idempotencyKey: "stop-1" })
        .then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
      // Stops once the run is in memory (its commit waiting on the lock).
      await waitFor("the run in memory, its commit waiting", () => s.engine.stats().activeRuns > 0);
      stopping = s.stop();
      const answer = await call;
      assert.ok(answer instanceof ConnectError, "the call fails");
      assert.equal(answer.code, Code.Unavailable, answer.message);
    } finally {
      await locker.query("COMMIT");
      locker.release();
      await stopping;
    }
  });
});
