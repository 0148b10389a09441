/**
 * Fault tolerance with real processes: the scheduler and the executors run as separate OS
 * processes (their own `main.ts`), PostgreSQL is the test's embedded server, and faults are SIGKILLs.
 * What must hold: no accepted work is lost or done twice, and everything recovers on its own.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { RunStatus, TaskStatus } from "@nexusflow/gen";
import { startTestDatabase, waitFor, workflowClient } from "../support.js";
import {
  RunTables,
  assertOneAcceptedCompletion,
  assertOutboxContiguous,
  describeRun,
  registerSpec,
  task,
} from "./harness.js";
import { killAll, startExecutorProcess, startSchedulerProcess, type ServiceProcess } from "./processes.js";

const TERMINAL = new Set([RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT]);

/**
 * A user handler module as EXECUTOR_HANDLERS loads it: `slow` appends a line to a marker file when
 * it starts (so the test knows the handler really runs) and then works for `input.ms`.
 */
function handlerModule(markerFile: string): string {
  return `
import { appendFileSync } from "node:fs";
export default (registry) => {
  registry.register("slow", async (input, ctx) => {
    appendFileSync(${JSON.stringify(markerFile)}, JSON.stringify({ pid: process.pid, attempt: ctx.attempt, taskRunId: ctx.taskRunId }) + "\\n");
    await new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, input.ms);
      ctx.signal.addEventListener("abort", () => { clearTimeout(timer); reject(ctx.signal.reason); }, { once: true });
    });
    return { pid: process.pid, attempt: ctx.attempt };
  });
};
`;
}

async function markers(file: string): Promise<{ pid: number; attempt: number; taskRunId: string }[]> {
  const text = await readFile(file, "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as { pid: number; attempt: number; taskRunId: string });
}

describe("faults with real processes", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let tables: RunTables;
  let dir: string;

  before(async () => {
    db = await startTestDatabase();
    tables = new RunTables(db.url);
    dir = await mkdtemp(join(tmpdir(), "nf-e2e-faults-"));
  });

  after(async () => {
    await killAll();
    await tables?.close();
    await db?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("finishes a task on another executor when the one holding its lease is SIGKILLed", async () => {
    const marker = join(dir, "slow-starts.jsonl");
    const handlers = join(dir, "handlers.mjs");
    await writeFile(handlers, handlerModule(marker));
    const { process: scheduler, address } = await startSchedulerProcess("scheduler-lease", db.url, 0);
    const client = workflowClient(address);
    const env = { EXECUTOR_HANDLERS: handlers, EXECUTOR_SLOTS: "1", EXECUTOR_TASK_TYPES: "slow" };
    const executors = await Promise.all([
      startExecutorProcess("exec-a", address, env),
      startExecutorProcess("exec-b", address, env),
    ]);
    const byId = new Map<string, ServiceProcess>(executors.map((e) => [e.name, e]));
    try {
      await registerSpec(client, {
        name: "fault-lease",
        version: 1,
        steps: [
          {
            id: "work",
            type: "slow",
            input: { ms: "{{ input.ms }}" },
            retry: { maxAttempts: 3, initialInterval: "10ms" },
          },
        ],
        output: { pid: "{{ steps.work.output.pid }}" },
      });
      const { run: started } = await client.startRun({
        workflowName: "fault-lease",
        input: jsonToValue({ ms: 3000 }),
      });
      assert.ok(started);
      const runId = started.id;

      // The handler is running on one of the two executors: find which from the run itself.
      const first = await waitFor(
        "the first attempt's handler to start",
        async () => (await markers(marker)).find((m) => m.attempt === 1),
        30_000,
      );
      // The Started report precedes the handler, but its commit may trail the marker file.
      const mid = await waitFor("the first attempt to be RUNNING", async () => {
        const { run } = await client.getRun({ runId });
        return run !== undefined && task(run, "work").attempts[0]?.status === TaskStatus.RUNNING
          ? run
          : undefined;
      });
      const attempt1 = task(mid, "work").attempts[0];
      assert.ok(attempt1, describeRun(mid));
      const holder = byId.get(attempt1.executorId);
      assert.ok(holder, `unknown executor ${attempt1.executorId}`);
      assert.equal(first.pid, holder.pid, "the executor GetRun names is the one running the handler");
      const survivor = executors.find((e) => e !== holder) as ServiceProcess;

      await holder.kill();

      const run = await waitFor(
        "the run to finish after the executor was killed",
        async () => {
          const { run: r } = await client.getRun({ runId });
          return r !== undefined && TERMINAL.has(r.status) ? r : undefined;
        },
        60_000,
      );
      assert.equal(run.status, RunStatus.SUCCEEDED, `${describeRun(run)}\n${scheduler.tail()}`);
      assert.deepEqual(valueToJson(run.output), { pid: survivor.pid });
      const attempts = task(run, "work").attempts;
      assert.equal(attempts.length, 2, describeRun(run));
      assert.equal(attempts[0]?.status, TaskStatus.FAILED);
      assert.equal(attempts[0]?.error?.type, "LEASE_EXPIRED");
      assert.equal(attempts[0]?.executorId, holder.name);
      assert.equal(attempts[1]?.status, TaskStatus.SUCCEEDED);
      assert.equal(attempts[1]?.executorId, survivor.name);
      assert.ok(
        (attempts[1]?.fencingToken ?? 0n) > (attempts[0]?.fencingToken ?? 0n),
        "the new lease has a higher fencing token",
      );
      assert.deepEqual(
        (await markers(marker)).map((m) => [m.attempt, m.pid]),
        [
          [1, holder.pid],
          [2, survivor.pid],
        ],
      );
      await assertOneAcceptedCompletion(tables, runId, 2);
      assert.ok(survivor.alive, "the surviving executor keeps running");
    } finally {
      await Promise.all([...executors, scheduler].map((p) => p.kill()));
    }
  });

  it("does not run a finished task again when the scheduler dies after its result arrived but before committing it", async () => {
    // The grace period for the leases of executors not reconnected yet outlasts their backoff.
    const { process: first, address } = await startSchedulerProcess("scheduler-ack-1", db.url, 0, {
      SESSION_TIMEOUT: "8s",
    });
    // PostgreSQL refuses (as an outage would) to store the step's success until the test says so.
    await tables.exec(`CREATE TABLE ack_fault (failing boolean NOT NULL);
      INSERT INTO ack_fault VALUES (true);
      CREATE FUNCTION ack_fault() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.step_id = 'ack-held' AND NEW.status = 'SUCCEEDED' AND (SELECT failing FROM ack_fault) THEN
          RAISE EXCEPTION 'injected: commits of the step''s success fail';
        END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER ack_fault BEFORE INSERT OR UPDATE ON task_runs FOR EACH ROW EXECUTE FUNCTION ack_fault();`);
    let executor: ServiceProcess | undefined;
    let second: ServiceProcess | undefined;
    try {
      const port = Number(address.slice(address.lastIndexOf(":") + 1));
      executor = await startExecutorProcess("exec-ack", address, { EXECUTOR_TASK_TYPES: "sleep" });
      let client = workflowClient(address);
      await registerSpec(client, {
        name: "ack-held",
        version: 1,
        steps: [{ id: "ack-held", type: "sleep", input: { duration: "50ms" } }],
      });
      const { run: started } = await client.startRun({ workflowName: "ack-held" });
      assert.ok(started);
      // The scheduler has the result (its commit is what fails), and dies with it uncommitted.
      await first.waitForLog(
        "a failed commit of the step's success",
        (l) => l.msg === "database commit failed; retrying until it is back",
      );
      await first.kill();
      await tables.exec("UPDATE ack_fault SET failing = false");

      ({ process: second } = await startSchedulerProcess("scheduler-ack-2", db.url, port, {
        SESSION_TIMEOUT: "8s",
      }));
      client = workflowClient(address);
      const run = await waitFor(
        "the run to finish after the restart",
        async () => {
          const { run: r } = await client.getRun({ runId: started.id });
          return r !== undefined && TERMINAL.has(r.status) ? r : undefined;
        },
        30_000,
      );
      assert.equal(run.status, RunStatus.SUCCEEDED, `${describeRun(run)}\n${second.tail()}`);
      const counts = await tables.attemptCounts(started.id);
      assert.deepEqual(
        counts.get("ack-held"),
        { attempts: 1, succeeded: 1, status: "SUCCEEDED" },
        `the step ran once: its executor kept the unacknowledged result and sent it again\n${executor.tail()}`,
      );
      const reattached = executor.lines.find((l) => l.msg === "re-attached to the scheduler");
      assert.ok(reattached, executor.tail());
      assert.equal(reattached["revoked"], 0);
      assert.equal(reattached["deliveredReports"], 1, "the result, sent again");
    } finally {
      // One scheduler per database: the next test starts its own.
      await Promise.all([first.kill(), executor?.kill(), second?.kill()]);
      await tables.exec(`DROP TRIGGER IF EXISTS ack_fault ON task_runs;
        DROP FUNCTION IF EXISTS ack_fault(); DROP TABLE IF EXISTS ack_fault;`);
    }
  });

  it("resumes a run after the scheduler is SIGKILLed and restarted on the same database and port", async () => {
    const { process: first, address } = await startSchedulerProcess("scheduler-1", db.url, 0);
    const port = Number(address.slice(address.lastIndexOf(":") + 1));
    assert.ok(port > 0, address);
    const executor = await startExecutorProcess("exec-chain", address, {
      EXECUTOR_SLOTS: "2",
      EXECUTOR_TASK_TYPES: "sleep",
    });
    const steps = 6;
    let client = workflowClient(address);
    await registerSpec(client, {
      name: "fault-chain",
      version: 1,
      steps: Array.from({ length: steps }, (_, i) => ({
        id: `s${i + 1}`,
        type: "sleep",
        input: { duration: "300ms" },
        retry: { maxAttempts: 3, initialInterval: "10ms" },
        ...(i === 0 ? {} : { dependsOn: [`s${i}`] }),
      })),
    });
    const { run: started } = await client.startRun({ workflowName: "fault-chain" });
    assert.ok(started);
    const runId = started.id;

    await waitFor(
      "two steps to succeed",
      async () => {
        const { run } = await client.getRun({ runId });
        return (run?.tasks.filter((t) => t.status === TaskStatus.SUCCEEDED).length ?? 0) >= 2
          ? true
          : undefined;
      },
      30_000,
    );
    await first.kill();

    // What had been committed when the scheduler died.
    const before = await tables.attemptCounts(runId);
    const doneBefore = [...before].filter(([, c]) => c.status === "SUCCEEDED").map(([step]) => step);
    assert.ok(doneBefore.length >= 2 && doneBefore.length < steps, JSON.stringify([...before]));
    for (const step of doneBefore) assert.equal(before.get(step)?.attempts, 1, `${step} before the kill`);
    // The step that was leased when the scheduler died (a chain has at most one).
    const inFlight = [...before]
      .filter(([, c]) => c.status === "LEASED" || c.status === "RUNNING")
      .map(([step]) => step);
    assert.ok(inFlight.length <= 1, JSON.stringify([...before]));

    // The grace period for leases of executors that have not reconnected yet must outlast the
    // executor's reconnect backoff (up to 5 s), or the in-flight lease is revoked by design.
    const { process: second, address: again } = await startSchedulerProcess("scheduler-2", db.url, port, {
      SESSION_TIMEOUT: "8s",
    });
    assert.equal(again, address);
    client = workflowClient(address);

    // The executor was never told anything: it must find the new scheduler by itself.
    const outcome = await waitFor(
      "the run to finish after the restart",
      async () => {
        // A scheduler that cannot commit any more will never finish the run: stop waiting at once.
        const failedCommit = second.lines.find(
          (l) => l.msg === "database commit failed; retrying until it is back",
        );
        if (failedCommit !== undefined) return { failedCommit };
        const { run: r } = await client.getRun({ runId });
        return r !== undefined && TERMINAL.has(r.status) ? { run: r } : undefined;
      },
      60_000,
    );
    if ("failedCommit" in outcome) {
      const err = outcome.failedCommit["err"] as { message?: string; detail?: string } | undefined;
      assert.fail(
        `the restarted scheduler cannot commit, so the run can never finish: ${err?.message ?? JSON.stringify(outcome.failedCommit)} ${err?.detail ?? ""}\n` +
          `outbox of the run as committed: ${(await tables.outbox(runId)).map((e) => `${e.sequence}:${e.type}`).join(" ")}\n` +
          `workflow_runs.event_seq of the run: ${await tables.eventSeq(runId)}`,
      );
    }
    const { run } = outcome;
    assert.equal(run.status, RunStatus.SUCCEEDED, `${describeRun(run)}\n${second.tail()}`);
    assert.ok(executor.alive, "the executor survived the scheduler's death");
    const reattached = executor.lines.find((l) => l.msg === "re-attached to the scheduler");
    assert.ok(reattached, `the executor re-attached by itself\n${executor.tail()}`);
    assert.equal(
      reattached["revoked"],
      0,
      `the restarted scheduler honours the leases it granted before the crash\n${executor.tail()}`,
    );

    const afterCounts = await tables.attemptCounts(runId);
    for (const step of doneBefore) {
      assert.equal(
        afterCounts.get(step)?.attempts,
        1,
        `${step} had succeeded before the kill and must not run again`,
      );
    }
    for (const [step, c] of afterCounts) {
      assert.equal(c.status, "SUCCEEDED", step);
      assert.equal(c.succeeded, 1, `${step}: exactly one accepted completion`);
    }
    assert.equal(afterCounts.size, steps);
    // The in-flight step was claimed back by its executor (held lease, or its report not yet
    // acknowledged) and its result accepted, not run again. Only a lease the scheduler committed
    // but died before sending is held by nobody; that step is leased again (it never ran).
    const claimed = Number(reattached["heldLeases"]) + Number(reattached["deliveredReports"]);
    const rerun = inFlight[0];
    if (rerun !== undefined && claimed > 0) {
      assert.equal(
        afterCounts.get(rerun)?.attempts,
        1,
        `${rerun} was in flight and claimed back, so it must not run again\n${describeRun(run)}`,
      );
    }
    await assertOutboxContiguous(tables, runId);
    for (const t of run.tasks) assert.deepEqual(valueToJson(t.output), { sleptMs: 300 });

    await Promise.all([executor.kill(), second.kill()]);
  });
});
