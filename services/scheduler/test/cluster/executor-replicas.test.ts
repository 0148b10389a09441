/**
 * Executors to every replica (issue #22, docs/replicas.md milestone 2), with real processes'
 * objects: two schedulers in cluster mode share one PostgreSQL and split the partitions; one real
 * executor is given only A's address. It discovers B (ReplicaService.ListReplicas), keeps a
 * session to each, and both lease to it: runs started on A and on B all finish. Then a partition
 * move: B stops cleanly while a step it leased runs; A takes B's partitions, the executor's
 * reports of that lease reach A (which adopts the lease in its grace), and the run finishes with
 * that step run once. Last, a new replica joins and A hands half its partitions over while a step
 * of one of them runs: the Cancel says the partition moved, the task goes on, and the new replica
 * adopts its lease.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { RunStatus } from "@nexusflow/gen";
import type { Executor, TaskContext } from "@nexusflow/executor";
import pg from "pg";
import { partitionOf } from "../../src/cluster/partitioning.js";
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

describe("an executor with a session to every scheduler replica", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let sql: pg.Pool;
  const replicas: Scheduler[] = [];
  let executor: Executor | undefined;
  /** Step `hold` of a run waits until the test releases it. */
  const holds = new Map<string, { release: () => void; signal: AbortSignal; attempt: number }>();

  before(async () => {
    server = await startTestDatabase();
    sql = new pg.Pool({ connectionString: server.url, max: 2 });
  });
  after(async () => {
    for (const h of holds.values()) h.release();
    await executor?.stop();
    for (const s of replicas.splice(0)) await s.stop();
    await sql?.end();
    await server?.close();
  });

  const replica = async (): Promise<Scheduler> => {
    const s = await startTestScheduler(server.url, { cluster: true, partitionLeaseMs: 1000 });
    replicas.push(s);
    return s;
  };
  const hasSession = (s: Scheduler): boolean =>
    s.engine.sessions().some((x) => x.executorId === "replicas" && x.credit > 0);

  it("discovers the replicas from one address, and every replica leases to it", async () => {
    const a = await replica();
    const b = await replica();
    await waitFor(
      "an even split",
      () => a.partitions.held().length === 8 && b.partitions.held().length === 8,
    );
    executor = await startTestExecutor(
      a,
      { executorId: "replicas", slots: 8, replicaRefreshMs: 200 },
      (e) => {
        e.register("work", (input: { n: number }) => ({ doubled: input.n * 2 }));
        e.register("hold", (_input: unknown, ctx: TaskContext) => {
          return new Promise((resolve, reject) => {
            holds.set(ctx.runId, {
              release: () => resolve({ held: true }),
              signal: ctx.signal,
              attempt: ctx.attempt,
            });
            ctx.signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true });
          });
        });
      },
    );
    const ex = executor;
    await waitFor("a session to each replica", () => (hasSession(a) && hasSession(b)) || undefined);
    assert.deepEqual(
      [...ex.replicaSessions.keys()].sort(),
      [a.partitions.replicaId, b.partitions.replicaId].sort(),
      "one session per replica, keyed by the replica each reached",
    );
    // Credit is shared: never more than the slots outstanding across the sessions.
    const credit = (): number =>
      [a, b]
        .flatMap((s) => s.engine.sessions().filter((x) => x.executorId === "replicas"))
        .reduce((n, x) => n + x.credit + x.leases.size, 0);
    assert.ok(credit() <= 8, `credit and leases outstanding ${credit()} exceed the 8 slots`);

    await registerSpec(workflowClient(a.address), {
      name: "replicas-two",
      version: 1,
      steps: [
        { id: "one", type: "work", input: { n: 3 } },
        { id: "two", type: "work", input: { n: 1 }, dependsOn: ["one"] },
      ],
    });
    const runs: { id: string; by: Scheduler }[] = [];
    for (const s of [a, b]) {
      for (let i = 0; i < 12; i++)
        runs.push({ id: await startRunOf(workflowClient(s.address), "replicas-two", { n: i }), by: s });
    }
    for (const { id, by } of runs) {
      const held = new Set(by.partitions.held().map((h) => h.partition));
      assert.ok(held.has(partitionOf(id, 16)), "each run is in a partition of the replica that started it");
      const run = await waitForRun(workflowClient(by.address), id);
      assert.equal(run.status, RunStatus.SUCCEEDED, `run ${id} (started on ${by === a ? "A" : "B"})`);
    }
    assert.ok(credit() <= 8, `credit and leases outstanding ${credit()} exceed the 8 slots`);
  });

  it("a step B leased goes on when B stops: A takes the partition and adopts the lease; the step runs once", async () => {
    const [a, b] = replicas;
    assert.ok(a !== undefined && b !== undefined && executor !== undefined);
    await registerSpec(workflowClient(a.address), {
      name: "replicas-hold",
      version: 1,
      steps: [
        { id: "hold", type: "hold" },
        { id: "after", type: "work", input: { n: 2 }, dependsOn: ["hold"] },
      ],
    });
    const runId = await startRunOf(workflowClient(b.address), "replicas-hold");
    await waitFor("B leased the step", () => holds.get(runId));

    await b.stop();
    replicas.splice(replicas.indexOf(b), 1);
    await waitFor("A takes every partition", () => a.partitions.held().length === 16 || undefined);
    await waitFor(
      "A adopted the lease on the executor's session",
      () =>
        a.engine.sessions().some((s) => s.executorId === "replicas" && [...s.leases].length > 0) || undefined,
    );
    const hold = holds.get(runId);
    assert.ok(hold !== undefined);
    assert.equal(hold.signal.aborted, false, "the task was not cancelled by the move");
    hold.release();

    const run = await waitForRun(workflowClient(a.address), runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    const { rows } = await sql.query<{ number: number; status: string }>(
      `SELECT a.number, a.status FROM task_runs t JOIN task_attempts a ON a.task_run_id = t.id
       WHERE t.run_id = $1 AND t.step_id = 'hold' ORDER BY a.number`,
      [runId],
    );
    assert.deepEqual(
      rows.map((r) => [r.number, r.status]),
      [[1, "SUCCEEDED"]],
      "one attempt, which succeeded: the step ran once",
    );
    await waitFor("the session to B closed", () =>
      executor?.replicaSessions.size === 1 && executor.replicaSessions.has(a.partitions.replicaId)
        ? true
        : undefined,
    );
  });

  it("a step whose partition is handed over on rebalancing goes on: the Cancel says the partition moved, the new replica adopts it", async () => {
    const [a] = replicas;
    assert.ok(a !== undefined && executor !== undefined && replicas.length === 1);
    await waitFor("A holds every partition", () => a.partitions.held().length === 16 || undefined);
    // A hands its highest partitions (8 to 15) over when a second replica joins: a run there.
    let runId = "";
    for (let i = 0; i < 40 && partitionOf(runId || "00000000", 16) < 8; i++)
      runId = await startRunOf(workflowClient(a.address), "replicas-hold");
    assert.ok(partitionOf(runId, 16) >= 8, "a run in a partition A will hand over");
    await waitFor("A leased the step", () => holds.get(runId));

    const c = await replica();
    await waitFor("the new replica took its half", () => c.partitions.held().length === 8 || undefined);
    assert.ok(
      c.partitions.held().some((h) => h.partition === partitionOf(runId, 16)),
      "the run's partition moved to the new replica",
    );
    await waitFor(
      "the new replica adopted the lease on the executor's session",
      () => c.engine.sessions().some((s) => s.executorId === "replicas" && s.leases.size > 0) || undefined,
    );
    const hold = holds.get(runId);
    assert.ok(hold !== undefined);
    assert.equal(hold.signal.aborted, false, "the Cancel of the moved partition did not stop the task");
    hold.release();
    const run = await waitForRun(workflowClient(c.address), runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    const { rows } = await sql.query<{ number: number; status: string }>(
      `SELECT a.number, a.status FROM task_runs t JOIN task_attempts a ON a.task_run_id = t.id
       WHERE t.run_id = $1 AND t.step_id = 'hold' ORDER BY a.number`,
      [runId],
    );
    assert.deepEqual(
      rows.map((r) => [r.number, r.status]),
      [[1, "SUCCEEDED"]],
    );
  });
});
