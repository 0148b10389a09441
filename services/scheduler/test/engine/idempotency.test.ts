/**
 * StartRun idempotency keys against a real scheduler and PostgreSQL: scoped per workflow, a reused
 * key with another input or labels is ALREADY_EXISTS naming the run, the same request returns the
 * same run (also when calls race, and after a restart), and a key expires after its retention.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { Code as ApiCode, isApiError, jsonToValue } from "@nexusflow/common";
import { Executor } from "@nexusflow/executor";
import { RunStatus } from "@nexusflow/gen";
import { ErrorInfoSchema, ResourceInfoSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec, type WorkflowClient } from "../e2e/harness.js";
import {
  failure,
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

describe("StartRun idempotency keys", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let pool: pg.Pool;
  let scheduler: Scheduler | undefined;
  let executor: Executor | undefined;
  let client: WorkflowClient;

  /** (Re)starts the scheduler (and an executor for `noop`) against the test database. */
  async function start(options: Parameters<typeof startTestScheduler>[1] = {}): Promise<void> {
    await executor?.stop();
    await scheduler?.stop();
    scheduler = await startTestScheduler(db.url, options);
    client = workflowClient(scheduler.address);
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "idempotency",
      logger: testLogger("executor"),
      taskTypes: ["noop"],
    });
    await executor.start();
  }

  function assertConflict(e: ConnectError, runId: string): void {
    assert.equal(e.code, Code.AlreadyExists, e.message);
    assert.ok(e.rawMessage.includes(runId), `the message names run ${runId}: ${e.rawMessage}`);
    const [info] = e.findDetails(ErrorInfoSchema);
    assert.equal(info?.reason, "IDEMPOTENCY_KEY_REUSED");
    assert.equal(info.metadata["run_id"], runId);
    const [resource] = e.findDetails(ResourceInfoSchema);
    assert.equal(resource?.resourceName, runId);
    assert.equal(resource.resourceType, "nexusflow.v1.Run");
  }

  before(async () => {
    db = await startTestDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    // pool.end() resolves before its connections are closed: the test database's shutdown may
    // still end one, which must not become an uncaught 'error' event.
    pool.on("error", () => undefined);
    await start();
    // `held` has no executor: its runs stay active (in the scheduler's memory) until cancelled.
    for (const name of ["idem-a", "idem-b"])
      await registerSpec(client, { name, version: 1, steps: [{ id: "only", type: "noop" }] });
    for (const name of ["idem-held", "idem-held-2"])
      await registerSpec(client, { name, version: 1, steps: [{ id: "wait", type: "held" }] });
  });

  after(async () => {
    await executor?.stop();
    await scheduler?.stop();
    await pool?.end();
    await db?.close();
  });

  it("scopes a key to its workflow: the same key under two workflows starts two runs", async () => {
    const key = `scoped-${Date.now()}`;
    // Held runs stay active (answered from memory); once cancelled, from the database.
    const names = ["idem-held", "idem-held-2"];
    const started: string[] = [];
    for (const workflowName of names) {
      const r = await client.startRun({ workflowName, input: jsonToValue({ n: 1 }), idempotencyKey: key });
      assert.ok(r.run);
      assert.equal(r.created, true, workflowName);
      started.push(r.run.id);
    }
    assert.notEqual(started[0], started[1]);
    const repeat = async (): Promise<string[]> =>
      Promise.all(
        names.map(async (workflowName) => {
          const r = await client.startRun({
            workflowName,
            input: jsonToValue({ n: 1 }),
            idempotencyKey: key,
          });
          assert.equal(r.created, false);
          return r.run?.id ?? "";
        }),
      );
    assert.deepEqual(await repeat(), started);
    for (const runId of started) await client.cancelRun({ runId });
    await waitFor("the runs to leave memory", () =>
      started.some((id) => scheduler?.engine.isActive(id)) ? undefined : true,
    );
    assert.deepEqual(await repeat(), started);
  });

  it("answers the same request with the same run (input key order does not matter), while active and once finished", async () => {
    const key = `same-${Date.now()}`;
    const input = { a: 1, b: { c: [1, 2], d: "x" } };
    const request = {
      workflowName: "idem-a",
      input: jsonToValue(input),
      idempotencyKey: key,
      labels: { team: "x", env: "t" },
    };
    const first = await client.startRun(request);
    assert.ok(first.run);
    const reordered = await client.startRun({
      ...request,
      input: jsonToValue({ b: { d: "x", c: [1, 2] }, a: 1 }),
      labels: { env: "t", team: "x" },
    });
    assert.equal(reordered.run?.id, first.run.id);
    assert.equal(reordered.created, false);
    assert.equal((await waitForRun(client, first.run.id)).status, RunStatus.SUCCEEDED);
    const finished = await client.startRun(request);
    assert.equal(finished.run?.id, first.run.id);
    assert.equal(finished.created, false);
  });

  it("refuses a reused key with another input or other labels: ALREADY_EXISTS naming the run", async () => {
    const key = `mismatch-${Date.now()}`;
    const request = {
      workflowName: "idem-held",
      input: jsonToValue({ n: 1 }),
      idempotencyKey: key,
      labels: { l: "1" },
    };
    const first = await client.startRun(request);
    assert.ok(first.run);
    // Active (held in memory): answered without the database.
    assertConflict(
      await failure(client.startRun({ ...request, input: jsonToValue({ n: 2 }) })),
      first.run.id,
    );
    assertConflict(await failure(client.startRun({ ...request, labels: { l: "2" } })), first.run.id);
    assertConflict(await failure(client.startRun({ ...request, labels: {} })), first.run.id);
    // Finished: answered from the database.
    await client.cancelRun({ runId: first.run.id });
    await waitFor("the run to leave memory", () =>
      scheduler?.engine.isActive(first.run!.id) ? undefined : true,
    );
    assertConflict(
      await failure(client.startRun({ ...request, input: jsonToValue({ n: 2 }) })),
      first.run.id,
    );
    const same = await client.startRun(request);
    assert.equal(same.run?.id, first.run.id);
    const { rows } = await pool.query(
      "SELECT count(*)::int AS n FROM workflow_runs WHERE idempotency_key = $1",
      [key],
    );
    assert.deepEqual(rows, [{ n: 1 }], "no run was started by the refused calls");
  });

  it("answers a call repeated after the first gave up waiting for its commit once the run is committed", async () => {
    const key = `uncommitted-${Date.now()}`;
    const request = { workflowName: "idem-held", input: jsonToValue({ n: 7 }), idempotencyKey: key };
    // Commits that write a key wait (the table is locked against writes; reads go on): the first
    // call gives up after the engine's commit timeout with UNAVAILABLE, its run still in memory.
    const locker = await pool.connect();
    let unlocked = false;
    const unlock = async (): Promise<void> => {
      if (unlocked) return;
      unlocked = true;
      await locker.query("COMMIT");
    };
    try {
      await locker.query("BEGIN");
      await locker.query("LOCK TABLE idempotency_keys IN SHARE MODE");
      const first = await failure(client.startRun(request));
      assert.equal(first.code, Code.Unavailable, first.message);
      // The same call again, still uncommitted: never NOT_FOUND for the run its key names.
      const again = await client.startRun(request).then(
        (r) => r,
        (e: unknown) => e,
      );
      if (again instanceof ConnectError) assert.equal(again.code, Code.Unavailable, again.message);
      else assert.equal((again as { created: boolean }).created, false);
      await unlock();
    } finally {
      await unlock().catch(() => undefined);
      locker.release();
    }
    const settled = await client.startRun(request);
    assert.equal(settled.created, false);
    const { rows } = await pool.query<{ id: string }>(
      "SELECT id::text FROM workflow_runs WHERE workflow_name = $1 AND idempotency_key = $2",
      ["idem-held", key],
    );
    assert.deepEqual(
      rows.map((r) => r.id),
      [settled.run?.id],
    );
    await client.cancelRun({ runId: settled.run?.id ?? "" });
  });

  it("starts one run for racing identical calls", async () => {
    const key = `race-${Date.now()}`;
    const request = { workflowName: "idem-a", input: jsonToValue({ n: 7 }), idempotencyKey: key };
    const results = await Promise.all(Array.from({ length: 8 }, () => client.startRun(request)));
    const ids = new Set(results.map((r) => r.run?.id));
    assert.equal(ids.size, 1, `one run: ${[...ids].join(", ")}`);
    assert.equal(results.filter((r) => r.created).length, 1);
    const { rows } = await pool.query(
      "SELECT count(*)::int AS n FROM workflow_runs WHERE idempotency_key = $1",
      [key],
    );
    assert.deepEqual(rows, [{ n: 1 }]);
  });

  it("answers a call racing the first one with another input ALREADY_EXISTS, and the identical ones its run", async () => {
    const engine = scheduler!.engine;
    const key = `race-odd-${Date.now()}`;
    const request = {
      workflowName: "idem-a",
      workflowVersion: 0,
      input: { n: 1 },
      idempotencyKey: key,
      labels: {},
    };
    // In this order, before any of them awaits: the first one starts the run, the others wait for it.
    const first = engine.startRun(request);
    const odd = engine.startRun({ ...request, input: { n: 2 } });
    const same = [engine.startRun({ ...request, input: { n: 1 } }), engine.startRun(request)];
    const started = await first;
    assert.equal(started.created, true);
    const error = await odd.then(
      () => assert.fail("the call with another input must fail"),
      (e: unknown) => e,
    );
    assert.ok(isApiError(error), String(error));
    assert.equal(error.code, ApiCode.ALREADY_EXISTS);
    assert.ok(error.message.includes(started.runId), error.message);
    assert.deepEqual(await Promise.all(same), [
      { runId: started.runId, created: false },
      { runId: started.runId, created: false },
    ]);
    // A racing call whose first call failed (invalid input) tries again on its own.
    const badKey = `race-bad-${Date.now()}`;
    const bad = engine.startRun({ ...request, workflowVersion: 99, idempotencyKey: badKey });
    const good = engine.startRun({ ...request, idempotencyKey: badKey });
    await assert.rejects(bad, (e: unknown) => isApiError(e) && e.code === ApiCode.NOT_FOUND);
    assert.equal((await good).created, true);
  });

  it("keeps keys across a scheduler restart (PostgreSQL), for finished, active and carried-over keys", async () => {
    const suffix = Date.now();
    const finishedReq = {
      workflowName: "idem-a",
      input: jsonToValue({ r: 1 }),
      idempotencyKey: `restart-f-${suffix}`,
    };
    const activeReq = {
      workflowName: "idem-held",
      input: jsonToValue({ r: 2 }),
      idempotencyKey: `restart-a-${suffix}`,
    };
    const legacyReq = {
      workflowName: "idem-a",
      input: jsonToValue({ r: 3 }),
      idempotencyKey: `restart-l-${suffix}`,
      labels: { x: "y" },
    };
    const finished = (await client.startRun(finishedReq)).run;
    const active = (await client.startRun(activeReq)).run;
    const legacy = (await client.startRun(legacyReq)).run;
    assert.ok(finished && active && legacy);
    await waitForRun(client, finished.id);
    await waitForRun(client, legacy.id);
    // A key from before the key table has no hash: it is computed from its run when next used.
    await pool.query("UPDATE idempotency_keys SET request_hash = NULL WHERE run_id = $1", [legacy.id]);

    await start();
    assert.ok(scheduler?.engine.isActive(active.id), "the held run was recovered");
    for (const [req, run] of [
      [finishedReq, finished],
      [activeReq, active],
      [legacyReq, legacy],
    ] as const) {
      const again = await client.startRun(req);
      assert.equal(again.run?.id, run.id, req.idempotencyKey);
      assert.equal(again.created, false);
      assertConflict(await failure(client.startRun({ ...req, input: jsonToValue({ other: true }) })), run.id);
    }
    assertConflict(await failure(client.startRun({ ...legacyReq, labels: {} })), legacy.id);
    await client.cancelRun({ runId: active.id });
  });

  it("expires a key after the retention: the same key then starts a new run", async () => {
    await start({ idempotencyKeyRetentionMs: 200 });
    try {
      const key = `expiry-${Date.now()}`;
      const request = { workflowName: "idem-a", input: jsonToValue({ e: 1 }), idempotencyKey: key };
      const first = await client.startRun(request);
      assert.ok(first.run);
      // Until it expires, repeats get the first run; afterwards, a new one (polling, not sleeping).
      const second = await waitFor("the key to expire", async () => {
        const r = await client.startRun(request);
        assert.ok(r.run);
        return r.run.id === first.run!.id ? undefined : r;
      });
      assert.equal(second.created, true);
      const { rows } = await pool.query<{ run_id: string }>(
        "SELECT run_id FROM idempotency_keys WHERE workflow_name = 'idem-a' AND idempotency_key = $1",
        [key],
      );
      assert.deepEqual(
        rows.map((r) => r.run_id),
        [second.run!.id],
        "the key names the new run",
      );
      // An expired key with another input starts a run too (no ALREADY_EXISTS).
      const other = await waitFor("the key to expire again", async () => {
        const r = await client.startRun({ ...request, input: jsonToValue({ e: 2 }) }).catch((e: unknown) => {
          if (ConnectError.from(e).code === Code.AlreadyExists) return undefined;
          throw e;
        });
        return r?.created === true ? r : undefined;
      });
      assert.ok(other.run && other.run.id !== second.run!.id);
    } finally {
      await start();
    }
  });
});
