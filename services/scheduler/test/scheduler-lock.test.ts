/**
 * One scheduler per database: a second one refuses to start, with one line naming the first, and
 * changes nothing; the database is free again once the first stops or dies.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { hostname } from "node:os";
import pg from "pg";
import { SchedulerLockedError, isSchedulerLockedError } from "../src/scheduler.js";
import {
  SCHEDULER_LOCK_KEY,
  acquireSchedulerLock,
  type SchedulerLockedError as LockedError,
} from "../src/persistence/scheduler-lock.js";
import { ServiceProcess, SCHEDULER_MAIN, killAll, startSchedulerProcess } from "./e2e/processes.js";
import { startTestDatabase, startTestScheduler, testLogger, waitFor, workflowClient } from "./support.js";

describe("one scheduler per database", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let pool: pg.Pool;

  before(async () => {
    db = await startTestDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    // pool.end() resolves before its connections are closed: the test database's shutdown may
    // still end one, which must not become an uncaught 'error' event.
    pool.on("error", () => undefined);
  });

  after(async () => {
    await killAll();
    await pool?.end();
    await db?.close();
  });

  /** Backend pids holding the scheduler lock. */
  async function holders(): Promise<number[]> {
    const { rows } = await pool.query<{ pid: number }>(
      `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
         AND classid::bigint = $1 AND objid::bigint = $2`,
      [(SCHEDULER_LOCK_KEY >> 32n).toString(), (SCHEDULER_LOCK_KEY & 0xffffffffn).toString()],
    );
    return rows.map((r) => r.pid);
  }

  it("refuses a second scheduler in the same process, names the first, and starts one after it stopped", async () => {
    const first = await startTestScheduler(db.url);
    try {
      const second = startTestScheduler(db.url);
      const error = await second.then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(isSchedulerLockedError(error), `expected SchedulerLockedError, got ${String(error)}`);
      assert.ok(error instanceof SchedulerLockedError);
      assert.equal(error.holder.pid, process.pid);
      // The host, cut short where PostgreSQL's 63 bytes of application_name end.
      assert.ok(
        error.holder.host !== undefined &&
          error.holder.host !== "" &&
          hostname().startsWith(error.holder.host),
        `host ${error.holder.host}`,
      );
      assert.ok(error.holder.since !== undefined && error.holder.since.getTime() <= Date.now());
      assert.match(
        error.message,
        new RegExp(
          `^another scheduler is already running against this database \\(pid ${process.pid} on host .+ since \\d{4}-.+\\); to run several replicas, set SCHEDULER_CLUSTER=true on every scheduler \\(docs/replicas\\.md\\)$`,
        ),
      );
      // The first one still serves and still holds the lock (one session).
      await workflowClient(first.address).listWorkflows({});
      assert.equal((await holders()).length, 1);
    } finally {
      await first.stop();
    }
    assert.deepEqual(await holders(), [], "stop() gives the lock back");
    const third = await startTestScheduler(db.url);
    try {
      assert.equal(third.state, "RUNNING");
    } finally {
      await third.stop();
    }
  });

  it("a second scheduler process prints one line and exits non-zero, having changed nothing", async () => {
    const first = await startTestScheduler(db.url);
    try {
      const migrations = await pool.query("SELECT count(*)::int AS n FROM nexusflow_migrations");
      const refused = new ServiceProcess("scheduler-refused", SCHEDULER_MAIN, {
        DATABASE_URL: db.url,
        SCHEDULER_HOST: "127.0.0.1",
        SCHEDULER_PORT: "0",
      });
      // Without the lock it would start and keep running: fail within a minute instead of hanging.
      await waitFor(
        "the second scheduler process to exit",
        () => (refused.alive ? undefined : true),
        60_000,
      ).catch(async (e: unknown) => {
        await refused.kill();
        throw e;
      });
      const { code } = await refused.exited;
      assert.equal(code, 1, refused.tail());
      const lines = refused.lines.filter((l) => l.raw !== undefined);
      assert.equal(lines.length, 1, refused.tail());
      assert.match(
        lines[0]?.raw ?? "",
        /^nexusflow-scheduler: another scheduler is already running against this database \(pid \d+ on host .+ since .+\); to run several replicas, set SCHEDULER_CLUSTER=true on every scheduler \(docs\/replicas\.md\)$/,
      );
      assert.ok(
        !refused.lines.some((l) => l.msg === "recovered active runs" || l.msg === "scheduler listening"),
        refused.tail(),
      );
      const after = await pool.query("SELECT count(*)::int AS n FROM nexusflow_migrations");
      assert.deepEqual(after.rows, migrations.rows);
      await workflowClient(first.address).listWorkflows({});
    } finally {
      await first.stop();
    }
  });

  it("frees the database when the holder is SIGKILLed", async () => {
    const { process: holder } = await startSchedulerProcess("scheduler-killed", db.url, 0);
    await assert.rejects(startTestScheduler(db.url), isSchedulerLockedError);
    await holder.kill();
    // PostgreSQL ends the dead process's session (and with it the lock) once it sees the socket close.
    await waitFor("the killed scheduler's lock to go", async () =>
      (await holders()).length === 0 ? true : undefined,
    );
    const next = await startTestScheduler(db.url);
    await next.stop();
  });

  it("takes the lock again when its session is lost, so a second scheduler is still refused", async () => {
    const first = await startTestScheduler(db.url);
    try {
      const [before] = await holders();
      assert.ok(before !== undefined);
      await pool.query("SELECT pg_terminate_backend($1)", [before]);
      await waitFor("the lock to be taken again", async () => {
        const now = await holders();
        return now.length === 1 && now[0] !== before ? true : undefined;
      });
      await assert.rejects(startTestScheduler(db.url), isSchedulerLockedError);
      assert.equal(first.state, "RUNNING");
      await workflowClient(first.address).listWorkflows({});
    } finally {
      await first.stop();
    }
  });

  it("reports the database lost when another scheduler took the lock while the session was down", async () => {
    const lost: LockedError[] = [];
    const lock = await acquireSchedulerLock({
      url: db.url,
      log: testLogger("lock"),
      onLost: (e) => lost.push(e),
      retryInitialMs: 1000,
    });
    const other = new pg.Client({ connectionString: db.url, application_name: "other-scheduler" });
    await other.connect();
    try {
      const [held] = await holders();
      assert.ok(held !== undefined);
      await pool.query("SELECT pg_terminate_backend($1)", [held]);
      // Another session takes the lock before the holder reconnects (a second after the loss).
      await waitFor("the lock to be free", async () => ((await holders()).length === 0 ? true : undefined));
      const { rows } = await other.query<{ locked: boolean }>(
        "SELECT pg_try_advisory_lock($1::bigint) AS locked",
        [SCHEDULER_LOCK_KEY.toString()],
      );
      assert.equal(rows[0]?.locked, true);
      const [error] = await waitFor("the holder to report the loss", () =>
        lost.length > 0 ? lost : undefined,
      );
      assert.ok(isSchedulerLockedError(error));
    } finally {
      await lock.release();
      await other.end();
    }
  });
});
