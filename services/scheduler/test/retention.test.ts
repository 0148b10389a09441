/**
 * Run retention against a real scheduler, PostgreSQL and artifact store (the filesystem, and S3
 * when S3_ENDPOINT is set: skipped locally without it, required under CI=true): finished runs past
 * the retention go with their tasks, attempts, idempotency key, published outbox rows, logs and
 * files; recent and active runs stay, and so does a run while a rerun of it is stored; the optional
 * export is the GetRun view; 0 turns it off.
 */
import assert from "node:assert/strict";
import { Code as ConnectCode, ConnectError } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type TestContext, after, before, describe, it } from "node:test";
import { type JsonValue, fromJson, toJson } from "@bufbuild/protobuf";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { requireService } from "@nexusflow/common/testing";
import {
  type ArtifactStore,
  FilesystemArtifactStore,
  S3ArtifactStore,
  readAll,
  runPrefix,
} from "@nexusflow/common/artifacts";
import { ArtifactLogSink, Executor } from "@nexusflow/executor";
import { RunSchema, RunStatus } from "@nexusflow/gen";
import pg from "pg";
import { RunRetention, exportKey } from "../src/persistence/retention.js";
import type { Scheduler, SchedulerOptions } from "../src/scheduler.js";
import { registerSpec, type WorkflowClient } from "./e2e/harness.js";
import {
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "./support.js";

type Backend = "filesystem" | "s3";

/** A store for the scheduler and one for the executor, on the same place, and how to remove it. */
async function openStores(
  backend: Backend,
): Promise<{ scheduler: ArtifactStore; executor: ArtifactStore; dispose(): Promise<void> }> {
  if (backend === "filesystem") {
    const root = await mkdtemp(join(tmpdir(), "nf-retention-"));
    const executor = new FilesystemArtifactStore({ root });
    await executor.ensureReady();
    return {
      scheduler: new FilesystemArtifactStore({ root }),
      executor,
      dispose: () => rm(root, { recursive: true, force: true }),
    };
  }
  const options = {
    endpoint: process.env["S3_ENDPOINT"] ?? "",
    accessKey: process.env["S3_ACCESS_KEY"] ?? "",
    secretKey: process.env["S3_SECRET_KEY"] ?? "",
    region: process.env["S3_REGION"] ?? "us-east-1",
    bucket: `nf-retention-${randomUUID()}`,
  };
  const executor = new S3ArtifactStore(options);
  await executor.ensureReady(); // creates the bucket
  return {
    scheduler: new S3ArtifactStore(options),
    executor,
    dispose: async () => {
      await executor.delete();
      const { Client: MinioClient } = await import("minio");
      const url = new URL(options.endpoint);
      await new MinioClient({
        endPoint: url.hostname,
        port: Number(url.port || 80),
        useSSL: url.protocol === "https:",
        accessKey: options.accessKey,
        secretKey: options.secretKey,
        region: options.region,
        pathStyle: true,
      }).removeBucket(options.bucket);
    },
  };
}

const DAY = 86_400_000;

for (const backend of ["filesystem", "s3"] as const) {
  describe(`run retention (${backend})`, () => {
    let db: Awaited<ReturnType<typeof startTestDatabase>> | undefined;
    let pool: pg.Pool;
    let stores: Awaited<ReturnType<typeof openStores>> | undefined;
    let scheduler: Scheduler | undefined;
    let executor: Executor | undefined;
    let client: WorkflowClient;

    const available = (t: TestContext): boolean =>
      backend === "filesystem" || requireService(t, "S3_ENDPOINT") !== undefined;

    /** (Re)starts the scheduler with `options` (purges only when a test asks, unless it sets an interval). */
    async function start(options: Partial<SchedulerOptions> = {}): Promise<Scheduler> {
      await executor?.stop();
      await scheduler?.stop();
      const store = stores?.executor;
      assert.ok(store !== undefined);
      scheduler = await startTestScheduler((db as NonNullable<typeof db>).url, {
        artifacts: stores?.scheduler,
        runRetentionIntervalMs: 3_600_000,
        ...options,
      });
      client = workflowClient(scheduler.address);
      executor = new Executor({
        schedulerAddress: scheduler.address,
        executorId: `retention-${backend}`,
        logger: testLogger("executor"),
        taskTypes: ["files.make"],
        artifacts: store,
        logSink: new ArtifactLogSink({ store, flushIntervalMs: 20 }),
      }).register("files.make", async (input: { n: number }, ctx) => {
        ctx.log.info("making a file", { n: input.n });
        await ctx.artifacts.put("out.txt", `file ${input.n}`, { contentType: "text/plain" });
        return { n: input.n };
      });
      await executor.start();
      return scheduler;
    }

    /** Keys stored under the run's prefix. */
    async function artifactsOf(runId: string): Promise<string[]> {
      return (await stores!.scheduler.list(runPrefix(runId), { metadata: false })).map((r) => r.key);
    }

    /** A finished run with a log and a file in the store. */
    async function finishedRun(n: number, idempotencyKey = ""): Promise<string> {
      const { run } = await client.startRun({
        workflowName: "ret-files",
        input: jsonToValue({ n }),
        idempotencyKey,
      });
      assert.ok(run);
      assert.equal((await waitForRun(client, run.id)).status, RunStatus.SUCCEEDED);
      await waitFor(`run ${run.id}'s log and file`, async () => {
        const keys = await artifactsOf(run.id);
        return keys.some((k) => k.endsWith("/out.txt")) && keys.some((k) => k.endsWith("/logs.jsonl"))
          ? true
          : undefined;
      });
      return run.id;
    }

    /** Moves a run into the past: created at `createdAt`, ended (when it has) a minute later. */
    async function age(runId: string, createdAt: Date): Promise<void> {
      await pool.query(
        `UPDATE workflow_runs SET created_at = $2,
           ended_at = CASE WHEN ended_at IS NULL THEN NULL ELSE $2::timestamptz + interval '1 minute' END WHERE id = $1`,
        [runId, createdAt],
      );
    }

    async function rowCounts(runId: string): Promise<Record<string, number>> {
      const { rows } = await pool.query<Record<string, number>>(
        `SELECT (SELECT count(*)::int FROM workflow_runs WHERE id = $1) AS runs,
                (SELECT count(*)::int FROM task_runs WHERE run_id = $1) AS tasks,
                (SELECT count(*)::int FROM task_attempts WHERE run_id = $1) AS attempts,
                (SELECT count(*)::int FROM idempotency_keys WHERE run_id = $1) AS keys,
                (SELECT count(*)::int FROM outbox_events WHERE run_id = $1 AND published_at IS NOT NULL) AS published,
                (SELECT count(*)::int FROM outbox_events WHERE run_id = $1 AND published_at IS NULL) AS unpublished`,
        [runId],
      );
      return rows[0] as Record<string, number>;
    }

    before(async () => {
      if (backend === "s3" && (process.env["S3_ENDPOINT"] ?? "") === "") return;
      db = await startTestDatabase();
      pool = new pg.Pool({ connectionString: db.url, max: 2 });
      // pool.end() resolves before its connections are closed: the test database's shutdown may
      // still end one, which must not become an uncaught 'error' event.
      pool.on("error", () => undefined);
      stores = await openStores(backend);
      await start();
      await registerSpec(client, {
        name: "ret-files",
        version: 1,
        steps: [{ id: "make", type: "files.make", input: { n: "{{ input.n }}" } }],
      });
      // Nobody runs `held`: its runs stay active.
      await registerSpec(client, { name: "ret-held", version: 1, steps: [{ id: "wait", type: "held" }] });
    });

    after(async () => {
      await executor?.stop();
      await scheduler?.stop();
      await pool?.end();
      await stores?.dispose();
      await db?.close();
    });

    it("deletes old finished runs with their rows, key, published events and artifacts; keeps recent and active runs", async (t) => {
      if (!available(t)) return;
      const s = await start();
      const key = `ret-key-${randomUUID()}`;
      const old = await finishedRun(1, key);
      const recent = await finishedRun(2);
      const { run: active } = await client.startRun({ workflowName: "ret-held", input: jsonToValue({}) });
      assert.ok(active);
      // The relay is not running here: publish all of the old run's outbox rows but its last.
      await pool.query(
        `UPDATE outbox_events SET published_at = now()
          WHERE run_id = $1 AND id < (SELECT max(id) FROM outbox_events WHERE run_id = $1)`,
        [old],
      );
      const before = await rowCounts(old);
      assert.ok(
        before.tasks === 1 && before.attempts === 1 && before.keys === 1 && before.published! >= 1,
        JSON.stringify(before),
      );
      const longAgo = new Date(Date.now() - 40 * DAY);
      await age(old, longAgo);
      await age(active.id, longAgo);

      const result = await s.retention.purge();
      assert.deepEqual(result, { deleted: 1, exported: 0, failed: 0 });
      assert.deepEqual(await rowCounts(old), {
        runs: 0,
        tasks: 0,
        attempts: 0,
        keys: 0,
        published: 0,
        unpublished: 1,
      });
      assert.deepEqual(await artifactsOf(old), []);
      // The key is free: the same request starts a new run.
      const again = await client.startRun({
        workflowName: "ret-files",
        input: jsonToValue({ n: 1 }),
        idempotencyKey: key,
      });
      assert.equal(again.created, true);

      assert.equal((await rowCounts(recent)).runs, 1);
      assert.ok((await artifactsOf(recent)).length >= 2, "the recent run's artifacts stay");
      assert.equal((await rowCounts(active.id)).runs, 1, "an active run is never deleted");
      assert.ok(s.engine.isActive(active.id));
      await client.cancelRun({ runId: active.id });
      await waitForRun(client, again.run!.id);
    });

    it("deletes a schedule's fires with their runs, and its refused fires past the retention", async (t) => {
      if (!available(t)) return;
      const s = await start();
      const old = await finishedRun(3);
      const recent = await finishedRun(4);
      const longAgo = new Date(Date.now() - 40 * DAY);
      await age(old, longAgo);
      const uid = randomUUID();
      await pool.query(
        `INSERT INTO schedules (schedule_id, uid, workflow_name, spec, paused, cursor_at, created_at, updated_at)
         VALUES ('ret-sched', $1, 'ret-files', '{}', true, now(), now(), now())`,
        [uid],
      );
      const fire = (key: string, status: string, runId: string | null, createdAt: Date) =>
        pool.query(
          `INSERT INTO schedule_fires (schedule_uid, fire_key, fire_at, origin, status, run_id, error, created_at)
           VALUES ($1, $2, $4, 'SCHEDULED', $3, $5, $6, $4)`,
          [uid, key, status, createdAt, runId, runId === null ? "refused" : null],
        );
      await fire("old-run", "STARTED", old, longAgo);
      await fire("recent-run", "STARTED", recent, new Date());
      await fire("old-refused", "FAILED", null, longAgo);
      await fire("recent-refused", "FAILED", null, new Date());

      assert.equal((await s.retention.purge()).deleted, 1);
      const { rows } = await pool.query<{ fire_key: string }>(
        "SELECT fire_key FROM schedule_fires WHERE schedule_uid = $1 ORDER BY fire_key",
        [uid],
      );
      assert.deepEqual(
        rows.map((r) => r.fire_key),
        ["recent-refused", "recent-run"],
      );
      await pool.query("DELETE FROM schedules WHERE uid = $1", [uid]);
    });

    it("keeps a run while a rerun of it is stored (its outputs are the rerun's), then deletes both", async (t) => {
      if (!available(t)) return;
      const s = await start();
      const original = await finishedRun(7);
      const { run: rerun } = await client.rerunRun({ runId: original, fromStep: "make" });
      assert.ok(rerun);
      assert.equal((await waitForRun(client, rerun.id)).status, RunStatus.SUCCEEDED);
      await age(original, new Date(Date.now() - 40 * DAY));
      assert.equal((await s.retention.purge()).deleted, 0);
      assert.equal((await rowCounts(original)).runs, 1);
      assert.ok((await artifactsOf(original)).length >= 2, "its artifacts stay");
      // The rerun past the retention too: it goes first, then the run it was made of.
      await age(rerun.id, new Date(Date.now() - 39 * DAY));
      assert.equal((await s.retention.purge()).deleted, 1);
      assert.equal((await rowCounts(rerun.id)).runs, 0);
      assert.equal((await s.retention.purge()).deleted, 1);
      assert.equal((await rowCounts(original)).runs, 0);
      assert.deepEqual(await artifactsOf(original), []);
    });

    it("refuses to rerun a run due for deletion (its files may be gone before its rows)", async (t) => {
      if (!available(t)) return;
      await start({ runRetentionMs: DAY });
      const due = await finishedRun(11);
      // Ended within the margin before the retention: a purge may be deleting its files now.
      await age(due, new Date(Date.now() - DAY + 5 * 60_000));
      await assert.rejects(client.rerunRun({ runId: due, fromStep: "make" }), (e: unknown) => {
        assert.ok(e instanceof ConnectError);
        assert.equal(e.code, ConnectCode.FailedPrecondition);
        assert.match(e.message, /due for deletion by the run retention/);
        return true;
      });
      // Well within the retention: rerun as usual.
      const kept = await finishedRun(12);
      await age(kept, new Date(Date.now() - DAY / 2));
      const { run } = await client.rerunRun({ runId: kept, fromStep: "make" });
      assert.ok(run);
      assert.equal((await waitForRun(client, run.id)).status, RunStatus.SUCCEEDED);
    });

    it("deletes in batches until no run is past the retention", async (t) => {
      if (!available(t)) return;
      await start();
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await finishedRun(100 + i));
      for (const id of ids) await age(id, new Date(Date.now() - 2 * DAY));
      const retention = new RunRetention({
        pool,
        store: stores!.scheduler,
        log: testLogger("retention"),
        retentionMs: DAY,
        batchSize: 2,
        pauseMs: 5,
      });
      assert.deepEqual(await retention.purge(), { deleted: 5, exported: 0, failed: 0 });
      for (const id of ids) {
        assert.equal((await rowCounts(id)).runs, 0);
        assert.deepEqual(await artifactsOf(id), []);
      }
    });

    /**
     * `pool` whose connections report the runs each `DELETE FROM workflow_runs` is given, and
     * fail it as a statement timeout would (SQLSTATE 57014) when `cancel` says so.
     */
    function watchedPool(deletes: string[][], cancel: (ids: string[]) => boolean = () => false): pg.Pool {
      const bind = <T extends object>(target: T, prop: string | symbol): unknown => {
        const v: unknown = Reflect.get(target, prop);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      };
      return new Proxy(pool, {
        get(target, prop) {
          if (prop !== "connect") return bind(target, prop);
          return async () => {
            const client = await target.connect();
            return new Proxy(client, {
              get(c, p) {
                if (p !== "query") return bind(c, p);
                return (text: unknown, values?: unknown[]) => {
                  if (typeof text === "string" && text.startsWith("DELETE FROM workflow_runs")) {
                    const ids = values?.[0] as string[];
                    deletes.push(ids);
                    if (cancel(ids))
                      return Promise.reject(
                        Object.assign(new Error("canceling statement due to statement timeout"), {
                          code: "57014",
                        }),
                      );
                  }
                  return c.query(text as string, values);
                };
              },
            });
          };
        },
      });
    }

    it("keeps each batch within its rows, and halves a batch a statement timeout cancels", async (t) => {
      if (!available(t)) return;
      await start();
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) ids.push(await finishedRun(200 + i));
      for (const id of ids) await age(id, new Date(Date.now() - 2 * DAY));
      // Each run is its row and its task's: 3 rows allow one run per batch.
      const deletes: string[][] = [];
      const byRows = new RunRetention({
        pool: watchedPool(deletes),
        store: stores!.scheduler,
        log: testLogger("retention"),
        retentionMs: DAY,
        batchRows: 3,
        pauseMs: 5,
      });
      assert.deepEqual(await byRows.purge(), { deleted: 4, exported: 0, failed: 0 });
      assert.deepEqual(
        deletes.map((d) => d.length),
        [1, 1, 1, 1],
      );
      for (const id of ids) assert.equal((await rowCounts(id)).runs, 0);

      // Cancelled for more than one run (a timeout shorter than a batch): halves until it fits; a
      // run cancelled alone is left for the next purge, not retried for ever.
      const more: string[] = [];
      for (let i = 0; i < 4; i++) more.push(await finishedRun(300 + i));
      for (const id of more) await age(id, new Date(Date.now() - 2 * DAY));
      const stuck = more[3] as string;
      const cancelled: string[][] = [];
      const halving = new RunRetention({
        pool: watchedPool(cancelled, (batch) => batch.length > 1 || batch[0] === stuck),
        store: stores!.scheduler,
        log: testLogger("retention"),
        retentionMs: DAY,
        pauseMs: 5,
      });
      assert.deepEqual(await halving.purge(), { deleted: 3, exported: 0, failed: 0 });
      assert.deepEqual(
        cancelled.map((d) => d.length),
        [4, 2, 1, 1, 2, 1, 1],
      );
      for (const id of more) assert.equal((await rowCounts(id)).runs, id === stuck ? 1 : 0);
    });

    it("exports each run as its GetRun view to exports/{yyyy}/{mm}/{dd}/{run_id}.json before deleting it", async (t) => {
      if (!available(t)) return;
      const s = await start({ exportRunsBeforeDelete: true });
      const runId = await finishedRun(3, `ret-export-${randomUUID()}`);
      const createdAt = new Date("2026-01-02T03:04:05.678Z");
      await age(runId, createdAt);
      const { run: view } = await client.getRun({ runId });
      assert.ok(view);

      assert.deepEqual(await s.retention.purge(), { deleted: 1, exported: 1, failed: 0 });
      const key = exportKey(runId, createdAt);
      assert.equal(key, `exports/2026/01/02/${runId}.json`);
      const document = JSON.parse(
        (await readAll(await stores!.scheduler.get(key))).toString("utf8"),
      ) as JsonValue;
      assert.deepEqual(document, toJson(RunSchema, view));
      const exported = fromJson(RunSchema, document);
      assert.equal(exported.id, runId);
      assert.equal(exported.status, RunStatus.SUCCEEDED);
      assert.deepEqual(valueToJson(exported.input), { n: 3 });
      assert.deepEqual(
        exported.tasks.map((x) => [x.stepId, x.attempts.length]),
        [["make", 1]],
      );
      assert.equal((await stores!.scheduler.stat(key))?.contentType, "application/json");
      assert.equal((await rowCounts(runId)).runs, 0);
      assert.deepEqual(await artifactsOf(runId), []);
    });

    it("purges on its interval by itself", async (t) => {
      if (!available(t)) return;
      const runId = await finishedRun(4);
      const s = await start({ runRetentionMs: DAY, runRetentionIntervalMs: 100 });
      await age(runId, new Date(Date.now() - 2 * DAY));
      // The rows go in the purge's commit; its count and the stored objects follow it.
      await waitFor("the periodic purge to delete the run, count it and its objects", async () =>
        (await rowCounts(runId)).runs === 0 &&
        s.retention.stats.deleted >= 1 &&
        (await artifactsOf(runId)).length === 0
          ? true
          : undefined,
      );
    });

    it("keeps everything with a retention of 0", async (t) => {
      if (!available(t)) return;
      const s = await start({ runRetentionMs: 0, runRetentionIntervalMs: 100 });
      const runId = await finishedRun(5);
      await age(runId, new Date(Date.now() - 400 * DAY));
      assert.equal(s.retention.enabled, false);
      assert.deepEqual(await s.retention.purge(), { deleted: 0, exported: 0, failed: 0 });
      assert.equal((await rowCounts(runId)).runs, 1);
      assert.ok((await artifactsOf(runId)).length >= 2);
    });
  });
}
