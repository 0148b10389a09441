/**
 * What a task writes (issue 28), pinned in rows: a no-op single-step run inserts its run and its
 * task, shares one outbox row per group commit with the other tasks of that commit, updates the
 * run once and the task once per later commit, and
 * writes no attempt row (its only attempt lives in the task row). A task that retries keeps every
 * attempt for GetRun: the latest in its row, the earlier ones in task_attempt_history, all in the
 * task_attempts view. Data written before that layout reads the same after the upgrade.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { jsonToValue } from "@nexusflow/common";
import { Executor, TaskError } from "@nexusflow/executor";
import { RunStatus, TaskStatus } from "@nexusflow/gen";
import pg from "pg";
import { openDatabase, type Database } from "../../src/persistence/database.js";
import { openMigrationOrm } from "../../src/persistence/migrator.js";
import { migrationsList } from "../../src/persistence/migrations/index.js";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec, task } from "../e2e/harness.js";
import {
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";
import { measureWriteCost } from "./measure.js";

describe("rows written per task", () => {
  it("a no-op run: its run and task inserted, 3 updates, no attempt row, one outbox row per commit", async () => {
    const cost = await measureWriteCost({ runs: 400 });
    const t = cost.tables;
    const row = (name: string) => t[name] as NonNullable<(typeof t)[string]>;
    const detail = JSON.stringify({ tables: cost.tables, groupCommitsPerTask: cost.groupCommitsPerTask });
    assert.equal(row("workflow_runs").inserted, 1, detail);
    assert.equal(row("task_runs").inserted, 1, detail);
    assert.equal(row("task_attempt_history").inserted, 0, detail);
    assert.equal(row("task_attempt_history").updated, 0, detail);
    assert.equal(row("idempotency_keys").inserted, 0, detail);
    // Five events (run started, task leased, started, succeeded, run completed), in one outbox row
    // per group commit with every other task's of that commit: never more rows than statements.
    assert.equal(cost.eventsPerTask, 5, detail);
    assert.ok(row("outbox_events").inserted > 0, detail);
    assert.ok(row("outbox_events").inserted <= cost.groupCommitsPerTask + 1e-9, detail);
    // The run row's one update is its completion; the lease's commit carries the run's event
    // sequence on the task row, not on the run row.
    assert.equal(row("workflow_runs").updated, 1, detail);
    assert.ok(row("task_runs").updated >= 2 && row("task_runs").updated <= 2.5, detail);
    assert.equal(row("outbox_events").updated, 0, detail);
    // Bytes follow from the rows (the measure's baseline was 5,318 per task, 4,033 with an outbox
    // row per run and commit, 2,667 now at 2,000 runs): the run, task and attempt tables about
    // 2,100 per task, the events (outbox and its TOAST table) about 500.
    const records = JSON.stringify(cost.records);
    const state =
      row("workflow_runs").walBytes + row("task_runs").walBytes + row("task_attempt_history").walBytes;
    assert.ok(state <= 2_400, `${state} WAL bytes per task in runs, tasks and attempts: ${records}`);
    assert.ok(cost.walBytes <= 3_100, `${cost.walBytes} WAL bytes per task: ${records}`);
  });
});

describe("attempts of a task that retries", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let executor: Executor;
  let pool: pg.Pool;

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    const failures = new Map<number, number>();
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "retrier",
      logger: testLogger("executor"),
    }).register("flaky", (input: { n: number; fail: number }) => {
      const seen = failures.get(input.n) ?? 0;
      failures.set(input.n, seen + 1);
      if (seen < input.fail) throw TaskError.retryable("FLAKY", `failure ${seen + 1}`);
      return { ok: input.n };
    });
    await executor.start();
    await waitFor(
      "the executor's session",
      () =>
        [...scheduler.engine.sessions()].some((s) => s.executorId === "retrier" && s.credit > 0) || undefined,
    );
  });

  after(async () => {
    await executor?.stop();
    await scheduler?.stop();
    await pool?.end();
    await db?.close();
  });

  it("GetRun lists every attempt; the latest is in the task row, the earlier ones in the history", async () => {
    const client = workflowClient(scheduler.address);
    await registerSpec(client, {
      name: "retries",
      version: 1,
      steps: [
        {
          id: "s",
          type: "flaky",
          input: { n: "{{ input.n }}", fail: "{{ input.fail }}" },
          retry: { maxAttempts: 4, initialInterval: "10ms", jitter: "none" },
        },
      ],
    });
    const start = async (n: number, fail: number): Promise<string> => {
      const { run } = await client.startRun({ workflowName: "retries", input: jsonToValue({ n, fail }) });
      assert.ok(run !== undefined);
      return run.id;
    };
    const [twice, once, never] = await Promise.all([start(1, 2), start(2, 1), start(3, 0)]);
    for (const [runId, failed] of [
      [twice, 2],
      [once, 1],
      [never, 0],
    ] as const) {
      const run = await waitForRun(client, runId);
      assert.equal(run.status, RunStatus.SUCCEEDED);
      const attempts = task(run, "s").attempts;
      assert.deepEqual(
        attempts.map((a) => [a.number, a.status, a.executorId, a.error?.type ?? ""]),
        [
          ...Array.from({ length: failed }, (_, i) => [i + 1, TaskStatus.FAILED, "retrier", "FLAKY"]),
          [failed + 1, TaskStatus.SUCCEEDED, "retrier", ""],
        ],
      );
      for (const a of attempts) {
        assert.ok(a.leaseTime !== undefined && a.startTime !== undefined && a.endTime !== undefined);
        assert.equal(a.fencingToken, BigInt(a.number));
      }
      const history = await pool.query<{ number: number; status: string }>(
        "SELECT number, status FROM task_attempt_history WHERE run_id = $1 ORDER BY number",
        [runId],
      );
      assert.deepEqual(
        history.rows.map((r) => [r.number, r.status]),
        Array.from({ length: failed }, (_, i) => [i + 1, "FAILED"]),
      );
      const row = await pool.query<{ attempt: number; attempt_status: string }>(
        "SELECT attempt, attempt_status FROM task_runs WHERE run_id = $1",
        [runId],
      );
      assert.deepEqual(row.rows, [{ attempt: failed + 1, attempt_status: "SUCCEEDED" }]);
    }
  });
});

describe("upgrading to the latest attempt in the task row", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let db: Database;
  let orm: Awaited<ReturnType<typeof openMigrationOrm>>;

  before(async () => {
    server = await startTestDatabase();
    db = await openDatabase({ url: server.url, log: testLogger("db") });
    orm = await openMigrationOrm(server.url, testLogger("db"));
  });

  after(async () => {
    await orm?.close(true);
    await db?.close();
    await server?.close();
  });

  it("moves each task's latest attempt into its row; the view reads every attempt as before", async () => {
    await db.pool.query("CREATE DATABASE nf_attempt_upgrade");
    const url = new URL(server.url);
    url.pathname = "/nf_attempt_upgrade";
    const client = new pg.Client({ connectionString: url.toString() });
    await client.connect();
    try {
      const driver = orm.em.getDriver();
      const index = migrationsList.findIndex(
        (m) => m.name === "Migration20261205040000LatestAttemptInTaskRow",
      );
      assert.ok(index > 0);
      const sql = (m: (typeof migrationsList)[number], down = false): string[] => {
        const migration = new m.class(driver, orm.config);
        if (down) migration.down();
        else migration.up();
        return migration.getQueries().map(String);
      };
      for (const m of migrationsList.slice(0, index)) for (const q of sql(m)) await client.query(q);
      const runId = randomUUID();
      const [retried, running, queued] = [randomUUID(), randomUUID(), randomUUID()];
      await client.query(
        `INSERT INTO workflow_definitions (id, name, version, spec, content_hash) VALUES (1, 'w', 1, '{}', 'h')`,
      );
      await client.query(
        `INSERT INTO workflow_runs (id, definition_id, workflow_name, workflow_version, status) VALUES ($1, 1, 'w', 1, 'RUNNING')`,
        [runId],
      );
      await client.query(
        `INSERT INTO task_runs (id, run_id, step_id, kind, type, status, position, attempt, fencing_token, executor_id)
         VALUES ($2, $1, 'a', 'STEP', 't', 'SUCCEEDED', 0, 2, 2, 'e2'),
                ($3, $1, 'b', 'STEP', 't', 'RUNNING', 1, 1, 1, 'e1'),
                ($4, $1, 'c', 'STEP', 't', 'QUEUED', 2, 0, 0, NULL)`,
        [runId, retried, running, queued],
      );
      await client.query(
        `INSERT INTO task_attempts (task_run_id, number, run_id, fencing_token, executor_id, status, error, logs,
                                    leased_at, started_at, ended_at)
         VALUES ($2, 1, $1, 1, 'e1', 'FAILED', '{"type":"X"}', '{"key":"l1"}', '2026-01-01', '2026-01-01', '2026-01-02'),
                ($2, 2, $1, 2, 'e2', 'SUCCEEDED', NULL, '{"key":"l2"}', '2026-01-03', '2026-01-03', '2026-01-04'),
                ($3, 1, $1, 1, 'e1', 'RUNNING', NULL, NULL, '2026-01-05', '2026-01-05', NULL)`,
        [runId, retried, running],
      );
      const everyAttempt = async (): Promise<unknown[]> =>
        (
          await client.query<Record<string, unknown>>(
            `SELECT task_run_id, number, run_id, fencing_token::int, executor_id, status, error, logs, leased_at,
                    started_at, ended_at FROM task_attempts ORDER BY task_run_id, number`,
          )
        ).rows;
      const before = await everyAttempt();
      assert.equal(before.length, 3);
      const upgrade = migrationsList[index] as (typeof migrationsList)[number];
      for (const q of sql(upgrade)) await client.query(q);
      assert.deepEqual(await everyAttempt(), before);
      const history = await client.query("SELECT task_run_id, number FROM task_attempt_history");
      assert.deepEqual(history.rows, [{ task_run_id: retried, number: 1 }]);
      const rows = await client.query<{ id: string; attempt_status: string | null }>(
        "SELECT id, attempt_status FROM task_runs ORDER BY position",
      );
      assert.deepEqual(
        rows.rows.map((r) => r.attempt_status),
        ["SUCCEEDED", "RUNNING", null],
      );
      // And back: the table as it was.
      for (const q of sql(upgrade, true)) await client.query(q);
      assert.deepEqual(await everyAttempt(), before);
    } finally {
      await client.end();
      await db.pool.query("DROP DATABASE nf_attempt_upgrade");
    }
  });
});
