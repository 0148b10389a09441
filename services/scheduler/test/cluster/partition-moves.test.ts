/**
 * A scheduler's runs follow its partitions (issue #22, docs/replicas.md), on a real PostgreSQL with
 * a real executor: runs are in flight in every partition when another replica takes one of them
 * (as its takeover does, through SQL: owner changed, epoch + 1). The scheduler unloads exactly that
 * partition's runs (nothing more of them is written, their leases are cancelled on the executor's
 * session), finishes the runs of the others, starts new runs only in partitions it holds, and when
 * the partition is handed back (owner null) loads its runs again and finishes them: no step whose
 * success was recorded runs again.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import { RunStatus } from "@nexusflow/gen";
import type { Executor, TaskContext } from "@nexusflow/executor";
import pg from "pg";
import { partitionOf } from "../../src/cluster/partitioning.js";
import { PostgresParkedRuns } from "../../src/persistence/parked-runs.js";
import type { Scheduler } from "../../src/scheduler.js";
import {
  registerSpec,
  startRunOf,
  startTestDatabase,
  startTestExecutor,
  startTestScheduler,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

describe("a scheduler's runs follow its partitions", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let sql: pg.Pool;
  let scheduler: Scheduler;
  let executor: Executor;
  /** Handlers entered, by run and step, in order. */
  const entered: { runId: string; stepId: string; attempt: number; signal: AbortSignal }[] = [];
  /** Step `hold` waits for its run's gate, or for the test's gate to open (each test makes its own). */
  let gate = newGate();
  const gates = new Map<string, () => void>();

  before(async () => {
    server = await startTestDatabase();
    sql = new pg.Pool({ connectionString: server.url, max: 2 });
    scheduler = await startTestScheduler(server.url, {
      partitionLeaseMs: 1000,
      parking: { parkAfterMs: 100, wakePollMs: 60_000 },
    });
    executor = await startTestExecutor(scheduler, { executorId: "moves", slots: 200 }, (e) => {
      e.register("record", (_input: unknown, ctx: TaskContext) => {
        entered.push({ runId: ctx.runId, stepId: ctx.stepId, attempt: ctx.attempt, signal: ctx.signal });
        return { ok: true };
      });
      e.register("hold", (_input: unknown, ctx: TaskContext) => {
        entered.push({ runId: ctx.runId, stepId: ctx.stepId, attempt: ctx.attempt, signal: ctx.signal });
        const all = gate;
        return new Promise((resolve, reject) => {
          const go = (): void => resolve({ done: true });
          gates.set(ctx.runId, go);
          void all.opened.then(go);
          ctx.signal.addEventListener("abort", () => reject(new Error("cancelled")), { once: true });
        });
      });
    });
  });
  after(async () => {
    gate.open();
    await executor?.stop();
    await scheduler?.stop();
    await sql?.end();
    await server?.close();
  });

  /** What is stored of the runs `ids`: every row that a write of theirs would change. */
  const stored = async (ids: readonly string[]): Promise<string> => {
    const { rows } = await sql.query<{ state: string }>(
      `SELECT json_build_object(
         'runs', (SELECT json_agg(r ORDER BY r.id) FROM workflow_runs r WHERE r.id = ANY($1::uuid[])),
         'tasks', (SELECT json_agg(t ORDER BY t.id) FROM task_runs t WHERE t.run_id = ANY($1::uuid[])),
         'attempts', (SELECT json_agg(a ORDER BY a.task_run_id, a.number) FROM task_attempts a
           JOIN task_runs t ON t.id = a.task_run_id WHERE t.run_id = ANY($1::uuid[])),
         'outbox', (SELECT count(*) FROM outbox_events o WHERE o.run_id = ANY($1::uuid[])))::text AS state`,
      [ids],
    );
    return rows[0]?.state ?? "";
  };

  it("unloads a partition taken over, finishes the others, and loads it again when handed back", async () => {
    const client = workflowClient(scheduler.address);
    await registerSpec(client, {
      name: "moves",
      version: 1,
      steps: [
        { id: "first", type: "record" },
        { id: "hold", type: "hold", dependsOn: ["first"], retry: { maxAttempts: 3 } },
      ],
    });
    const count = scheduler.partitions.partitionCount;
    // Runs in flight across partitions, at least three in the one that moves.
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push(await startRunOf(client, "moves"));
    const byPartition = Map.groupBy(ids, (id) => partitionOf(id, count));
    const moved = [...byPartition].sort(([, a], [, b]) => b.length - a.length)[0]?.[0] ?? 0;
    const movedRuns = byPartition.get(moved) ?? [];
    while (movedRuns.length < 3) {
      const id = await startRunOf(client, "moves");
      ids.push(id);
      if (partitionOf(id, count) === moved) movedRuns.push(id);
    }
    const others = ids.filter((id) => partitionOf(id, count) !== moved);
    assert.ok(
      new Set(others.map((id) => partitionOf(id, count))).size >= 3,
      "runs in several other partitions",
    );
    const holding = (runIds: readonly string[]) =>
      runIds.every((id) => entered.some((e) => e.runId === id && e.stepId === "hold"));
    await waitFor("every run holding in its second step", () => holding(ids));

    // Another replica takes the partition over, as its takeover does.
    const other = randomUUID();
    await sql.query(
      "UPDATE partitions SET owner = $1, epoch = epoch + 1, lease_expires_at = now() + interval '1 hour' WHERE partition = $2",
      [other, moved],
    );
    // From here on the fence refuses any write of those runs: what is stored now must stay.
    const before = await stored(movedRuns);
    await waitFor("the partition to be lost", () => scheduler.partitions.epochOf(moved) === undefined);
    await waitFor("its runs unloaded", () => movedRuns.every((id) => !scheduler.engine.isActive(id)));
    assert.ok(
      others.every((id) => scheduler.engine.isActive(id)),
      "the other partitions' runs stay",
    );
    // Their leases were cancelled on the executor's session; no other lease was.
    const holds = (id: string) => entered.filter((e) => e.runId === id && e.stepId === "hold");
    await waitFor("the moved runs' leases cancelled", () =>
      movedRuns.every((id) => holds(id).every((e) => e.signal.aborted)),
    );
    assert.ok(others.every((id) => holds(id).every((e) => !e.signal.aborted)));
    assert.equal(scheduler.engine.partitions.stats.revokedLeases, movedRuns.length);

    // A run started now goes to a partition held; the others finish.
    const late = await startRunOf(client, "moves");
    assert.notEqual(partitionOf(late, count), moved);
    gate.open();
    for (const id of [...others, late])
      assert.equal((await waitForRun(client, id)).status, RunStatus.SUCCEEDED, `run ${id}`);
    assert.equal(await stored(movedRuns), before, "nothing of the moved runs was written meanwhile");
    assert.ok(movedRuns.every((id) => !scheduler.engine.isActive(id)));

    // Handed back (as a replica stopping does): the next heartbeat takes it, its runs load and finish.
    await sql.query("UPDATE partitions SET owner = NULL, lease_expires_at = now() WHERE partition = $1", [
      moved,
    ]);
    await waitFor("the partition taken again", () => scheduler.partitions.epochOf(moved) !== undefined);
    for (const id of movedRuns) {
      const run = await waitForRun(client, id);
      assert.equal(run.status, RunStatus.SUCCEEDED, `run ${id}`);
    }
    const epoch = await sql.query<{ owner: string; epoch: string }>(
      "SELECT owner, epoch FROM partitions WHERE partition = $1",
      [moved],
    );
    assert.equal(epoch.rows[0]?.owner, scheduler.partitions.replicaId);
    assert.equal(Number(epoch.rows[0]?.epoch), scheduler.partitions.epochOf(moved));

    // No step whose success was recorded ran again: `first` ran once in every run; `hold` of a
    // moved run ran twice (its first attempt was cancelled, never recorded), of the others once.
    for (const id of [...ids, late]) {
      const firsts = entered.filter((e) => e.runId === id && e.stepId === "first");
      assert.equal(firsts.length, 1, `run ${id}: step first ran ${firsts.length} times`);
      assert.equal(holds(id).length, movedRuns.includes(id) ? 2 : 1, `run ${id}: step hold`);
    }
    const attempts = await sql.query<{ step_id: string; succeeded: number }>(
      `SELECT t.step_id, count(*) FILTER (WHERE a.status = 'SUCCEEDED')::int AS succeeded
       FROM task_runs t JOIN task_attempts a ON a.task_run_id = t.id
       WHERE t.run_id = ANY($1::uuid[]) GROUP BY t.run_id, t.step_id`,
      [[...ids, late]],
    );
    assert.ok(
      attempts.rows.every((r) => r.succeeded === 1),
      JSON.stringify(attempts.rows),
    );
  });

  it("unloads a partition whose commit the fence refused, and ends the session that could not be acknowledged", async () => {
    gate = newGate();
    const client = workflowClient(scheduler.address);
    const count = scheduler.partitions.partitionCount;
    const ids: string[] = [];
    for (let i = 0; i < 16; i++) ids.push(await startRunOf(client, "moves"));
    await waitFor("every run holding in its second step", () =>
      ids.every((id) => entered.some((e) => e.runId === id && e.stepId === "hold")),
    );
    const moved = partitionOf(ids[0] as string, count);
    const movedRuns = ids.filter((id) => partitionOf(id, count) === moved);
    const others = ids.filter((id) => partitionOf(id, count) !== moved);
    const [session] = scheduler.engine.sessions();
    assert.ok(session !== undefined);

    // The scheduler's heartbeats wait behind a lock on its row: only the fence can tell it.
    const blocker = await sql.connect();
    let before: string;
    try {
      await blocker.query("BEGIN");
      await blocker.query("SELECT 1 FROM replicas WHERE id = $1 FOR UPDATE", [
        scheduler.partitions.replicaId,
      ]);
      await sql.query(
        "UPDATE partitions SET owner = $1, epoch = epoch + 1, lease_expires_at = now() + interval '1 hour' WHERE partition = $2",
        [randomUUID(), moved],
      );
      before = await stored(movedRuns);
      const fenced = scheduler.writerStats.fencedCommits;
      // One run of it finishes its step: the completion is accepted, its commit refused.
      gates.get(movedRuns[0] as string)?.();
      await waitFor("the commit refused by the fence", () => scheduler.writerStats.fencedCommits > fenced);
      await waitFor("its runs unloaded", () => movedRuns.every((id) => !scheduler.engine.isActive(id)));
      assert.equal(scheduler.partitions.epochOf(moved), undefined);
      assert.ok(others.every((id) => scheduler.engine.isActive(id)));
      // The completion was never committed: its Acked is not sent, the session ends, the executor
      // attaches again (its report sent again is rejected: the run is not here).
      await waitFor("the executor attached again", () =>
        scheduler.engine.sessions().some((s) => s.id !== session.id && s.executorId === "moves"),
      );
    } finally {
      await blocker.query("ROLLBACK");
      blocker.release();
    }
    gate.open();
    for (const id of others) assert.equal((await waitForRun(client, id)).status, RunStatus.SUCCEEDED);
    assert.equal(await stored(movedRuns), before, "nothing of the moved runs was written");

    await sql.query("UPDATE partitions SET owner = NULL, lease_expires_at = now() WHERE partition = $1", [
      moved,
    ]);
    for (const id of movedRuns) assert.equal((await waitForRun(client, id)).status, RunStatus.SUCCEEDED);
    for (const id of ids) {
      const ran = (step: string) => entered.filter((e) => e.runId === id && e.stepId === step).length;
      assert.equal(ran("first"), 1, `run ${id}: step first`);
      assert.equal(ran("hold"), movedRuns.includes(id) ? 2 : 1, `run ${id}: step hold`);
    }
  });

  it("leaves the parked runs of a partition taken over alone, and wakes them when it comes back", async () => {
    const client = workflowClient(scheduler.address);
    const count = scheduler.partitions.partitionCount;
    await registerSpec(client, {
      name: "approval",
      version: 1,
      steps: [{ id: "approve", wait: { signal: "approval", timeout: "24h" } }],
    });
    await registerSpec(client, {
      name: "nap",
      version: 1,
      steps: [{ id: "nap", sleep: { until: "{{ input.until }}" } }],
    });
    // Sleeps due in a few seconds, in several partitions; signal waits, one in the sleeper's partition.
    const until = new Date(Date.now() + 4000).toISOString();
    const naps: string[] = [];
    for (let i = 0; i < 12; i++) naps.push(await startRunOf(client, "nap", { until }));
    const moved = partitionOf(naps[0] as string, count);
    const approvals: string[] = [];
    while (!approvals.some((id) => partitionOf(id, count) === moved) || approvals.length < 8)
      approvals.push(await startRunOf(client, "approval"));
    const parked = async (id: string) =>
      !scheduler.engine.isActive(id) &&
      (await sql.query("SELECT 1 FROM parked_runs WHERE run_id = $1", [id])).rowCount === 1;
    for (const id of [...naps, ...approvals]) await waitFor(`run ${id} parked`, () => parked(id));

    await sql.query(
      "UPDATE partitions SET owner = $1, epoch = epoch + 1, lease_expires_at = now() + interval '1 hour' WHERE partition = $2",
      [randomUUID(), moved],
    );
    await waitFor("the partition to be lost", () => scheduler.partitions.epochOf(moved) === undefined);
    const movedApproval = approvals.find((id) => partitionOf(id, count) === moved) as string;
    const otherApproval = approvals.find((id) => partitionOf(id, count) !== moved) as string;
    // A signal for a run of the partition taken: UNAVAILABLE (retry), nothing loaded or written.
    const refused = await client
      .signalRun({ runId: movedApproval, name: "approval", payload: jsonToValue("early") })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    assert.ok(refused instanceof ConnectError, String(refused));
    assert.equal(refused.code, Code.Unavailable);
    await client.signalRun({ runId: otherApproval, name: "approval", payload: jsonToValue("yes") });
    assert.equal((await waitForRun(client, otherApproval)).status, RunStatus.SUCCEEDED);
    // The sleeps of the other partitions wake when due; the moved one's is left parked.
    const movedNaps = naps.filter((id) => partitionOf(id, count) === moved);
    for (const id of naps.filter((x) => !movedNaps.includes(x)))
      assert.equal((await waitForRun(client, id)).status, RunStatus.SUCCEEDED);
    for (const id of [...movedNaps, movedApproval]) assert.ok(await parked(id), `run ${id} still parked`);

    // Handed back: the due sleeps wake at once, the signal reaches its run.
    await sql.query("UPDATE partitions SET owner = NULL, lease_expires_at = now() WHERE partition = $1", [
      moved,
    ]);
    await waitFor("the partition taken again", () => scheduler.partitions.epochOf(moved) !== undefined);
    for (const id of movedNaps) assert.equal((await waitForRun(client, id)).status, RunStatus.SUCCEEDED);
    await client.signalRun({ runId: movedApproval, name: "approval", payload: jsonToValue("late") });
    assert.equal((await waitForRun(client, movedApproval)).status, RunStatus.SUCCEEDED);
  });

  it("does not load a parked run whose partition is lost while its parked rows are deleted", async () => {
    const client = workflowClient(scheduler.address);
    const count = scheduler.partitions.partitionCount;
    await registerSpec(client, {
      name: "approval-lost",
      version: 1,
      steps: [{ id: "approve", wait: { signal: "approval", timeout: "24h" } }],
    });
    const runId = await startRunOf(client, "approval-lost");
    const moved = partitionOf(runId, count);
    await waitFor(
      `run ${runId} parked`,
      async () =>
        !scheduler.engine.isActive(runId) &&
        (await sql.query("SELECT 1 FROM parked_runs WHERE run_id = $1", [runId])).rowCount === 1,
    );
    // Another replica takes the partition right after the scheduler deleted the run's parked rows
    // (fenced: still its own then), before the run is recovered into memory.
    const unpark = Object.getOwnPropertyDescriptor(PostgresParkedRuns.prototype, "unpark")?.value as (
      this: PostgresParkedRuns,
      id: string,
    ) => Promise<boolean>;
    PostgresParkedRuns.prototype.unpark = async function (this: PostgresParkedRuns, id: string) {
      const deleted = await unpark.call(this, id);
      if (id === runId) {
        await sql.query(
          "UPDATE partitions SET owner = $1, epoch = epoch + 1, lease_expires_at = now() + interval '1 hour' WHERE partition = $2",
          [randomUUID(), moved],
        );
        await waitFor("the partition to be lost", () => scheduler.partitions.epochOf(moved) === undefined);
      }
      return deleted;
    };
    let refused: unknown;
    try {
      refused = await client.signalRun({ runId, name: "approval", payload: jsonToValue("early") }).then(
        () => undefined,
        (e: unknown) => e,
      );
    } finally {
      PostgresParkedRuns.prototype.unpark = unpark;
    }
    assert.ok(refused instanceof ConnectError, String(refused));
    assert.equal(refused.code, Code.Unavailable);
    assert.equal(scheduler.engine.isActive(runId), false, "no copy of the run left in memory");

    // Handed back: the run is loaded as an active one (no longer parked), and takes the signal.
    await sql.query("UPDATE partitions SET owner = NULL, lease_expires_at = now() WHERE partition = $1", [
      moved,
    ]);
    await waitFor("the partition taken again", () => scheduler.partitions.epochOf(moved) !== undefined);
    await waitFor("the run loaded", () => scheduler.engine.isActive(runId));
    await client.signalRun({ runId, name: "approval", payload: jsonToValue("late") });
    const ended = await waitForRun(client, runId);
    assert.equal(ended.status, RunStatus.SUCCEEDED);
  });
});

/** A gate the handlers wait on until the test opens it. */
function newGate(): { opened: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}
