/**
 * Fault injection with real processes (issue 4): executors SIGKILLed mid-task and mid-compensation,
 * executor streams cut at the TCP level through a proxy, and the scheduler SIGKILLed while retry
 * timers are pending. Each case ends with the invariants of `invariants.ts`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { RunStatus, TaskKind, TaskStatus, type Run } from "@nexusflow/gen";
import { outboxEvents, waitFor, waitForRun, workflowClient } from "../support.js";
import { describeRun, registerSpec, type WorkflowClient } from "../e2e/harness.js";
import { startExecutorProcess, startSchedulerProcess, type ServiceProcess } from "../e2e/processes.js";

import { TcpProxy } from "./proxy.js";
import {
  FAST_EXPIRY,
  attemptSummary,
  executorEnv,
  markers,
  startRun,
  taskOf,
  faultFixture,
} from "./support.js";

const RETRY = { maxAttempts: 3, initialInterval: "20ms" };

/** Waits until attempt `attempt` of a task is RUNNING and returns the run at that moment. */
async function waitRunning(
  client: WorkflowClient,
  runId: string,
  stepId: string,
  kind = TaskKind.STEP,
  attempt = 1,
): Promise<Run> {
  return waitFor(
    `${TaskKind[kind]} ${stepId} attempt ${attempt} of run ${runId} to be RUNNING`,
    async () => {
      const { run } = await client.getRun({ runId });
      const t = run?.tasks.find((x) => x.stepId === stepId && x.kind === kind);
      return t?.attempts[attempt - 1]?.status === TaskStatus.RUNNING ? run : undefined;
    },
    30_000,
  );
}

describe("fault injection with real processes", () => {
  const fx = faultFixture("nf-faults-");

  it("executor SIGKILLed mid-task: the step re-runs once elsewhere, every other step runs once", async () => {
    const marker = join(fx.dir, "kill-mid-task.jsonl");
    const { process: scheduler, address } = await startSchedulerProcess(
      "sched-kill",
      fx.db.url,
      0,
      FAST_EXPIRY,
    );
    const client = workflowClient(address);
    const executors = await Promise.all(
      ["kill-a", "kill-b"].map((id) => startExecutorProcess(id, address, executorEnv(2))),
    );
    try {
      const step = (id: string, ms: number, dependsOn?: string) => ({
        id,
        type: "fault.slow",
        input: { marker: "{{ input.marker }}", ms },
        retry: RETRY,
        ...(dependsOn === undefined ? {} : { dependsOn: [dependsOn] }),
      });
      await registerSpec(client, {
        name: "kill-mid-task",
        version: 1,
        steps: [step("a", 50), step("b", 3000, "a"), step("c", 50, "b")],
      });
      const runId = await startRun(client, "kill-mid-task", { marker });
      const mid = await waitRunning(client, runId, "b");
      const holderId = taskOf(mid, "b").attempts[0]?.executorId;
      const holder = executors.find((e) => e.name === holderId);
      const survivor = executors.find((e) => e.name !== holderId);
      assert.ok(holder && survivor, `b runs on ${holderId}`);

      await holder.kill();

      const run = await waitForRun(client, runId, 30_000);
      assert.equal(run.status, RunStatus.SUCCEEDED, `${describeRun(run)}\n${scheduler.tail()}`);
      assert.deepEqual(attemptSummary(taskOf(run, "a")), [["SUCCEEDED", ""]]);
      assert.deepEqual(attemptSummary(taskOf(run, "b")), [
        ["FAILED", "LEASE_EXPIRED"],
        ["SUCCEEDED", ""],
      ]);
      assert.equal(taskOf(run, "b").attempts[1]?.executorId, survivor.name);
      assert.deepEqual(attemptSummary(taskOf(run, "c")), [["SUCCEEDED", ""]]);
      // The handler itself ran once per attempt: on the killed process, then on the survivor.
      const b = (await markers(marker)).filter((m) => m.stepId === "b").map((m) => [m.attempt, m.pid]);
      assert.deepEqual(b, [
        [1, holder.pid],
        [2, survivor.pid],
      ]);
      await fx.tables.assertInvariants([runId]);
    } finally {
      await Promise.all([...executors, scheduler].map((p) => p.kill()));
    }
  });

  it("executor SIGKILLed mid-compensation: the rollback finishes, compensating exactly the succeeded steps", async () => {
    const marker = join(fx.dir, "kill-mid-compensation.jsonl");
    const { process: scheduler, address } = await startSchedulerProcess(
      "sched-saga",
      fx.db.url,
      0,
      FAST_EXPIRY,
    );
    const client = workflowClient(address);
    const executors = await Promise.all(
      ["saga-a", "saga-b"].map((id) => startExecutorProcess(id, address, executorEnv(2))),
    );
    try {
      const input = (ms: number) => ({ marker: "{{ input.marker }}", ms });
      await registerSpec(client, {
        name: "kill-mid-compensation",
        version: 1,
        defaults: { retry: RETRY },
        steps: [
          {
            id: "a",
            type: "fault.slow",
            input: input(20),
            compensate: { type: "fault.undo", input: input(3000) },
          },
          {
            id: "b",
            type: "fault.slow",
            dependsOn: ["a"],
            input: input(20),
            compensate: { type: "fault.undo", input: input(20) },
          },
          // Succeeds but declares no compensation: nothing to undo.
          { id: "n", type: "fault.slow", dependsOn: ["a"], input: input(20) },
          { id: "c", type: "fault.boom", dependsOn: ["b", "n"], input: input(0) },
          // Never runs: its dependency fails.
          {
            id: "d",
            type: "fault.slow",
            dependsOn: ["c"],
            input: input(20),
            compensate: { type: "fault.undo", input: input(20) },
          },
        ],
      });
      const runId = await startRun(client, "kill-mid-compensation", { marker });
      const mid = await waitRunning(client, runId, "a", TaskKind.COMPENSATION);
      const holderId = taskOf(mid, "a", TaskKind.COMPENSATION).attempts[0]?.executorId;
      const holder = executors.find((e) => e.name === holderId);
      assert.ok(holder, `the compensation of a runs on ${holderId}`);

      await holder.kill();

      const run = await waitForRun(client, runId, 30_000);
      assert.equal(run.status, RunStatus.COMPENSATED, `${describeRun(run)}\n${scheduler.tail()}`);
      assert.deepEqual(attemptSummary(taskOf(run, "a", TaskKind.COMPENSATION)), [
        ["FAILED", "LEASE_EXPIRED"],
        ["SUCCEEDED", ""],
      ]);
      assert.deepEqual(attemptSummary(taskOf(run, "b", TaskKind.COMPENSATION)), [["SUCCEEDED", ""]]);
      const facts = await fx.tables.assertInvariants([runId]);
      assert.deepEqual([...(facts.get(runId)?.compensations.keys() ?? [])].sort(), ["a", "b"]);
    } finally {
      await Promise.all([...executors, scheduler].map((p) => p.kill()));
    }
  });

  for (const mode of ["reset", "silent-upstream"] as const) {
    const how =
      mode === "reset"
        ? "reset on both sides"
        : "dropped on the executor's side while the scheduler's side stays open and silent";
    it(`executor stream cut without a gRPC close (${how}): the executor reclaims its lease through the proxy`, async () => {
      const marker = join(fx.dir, `cut-${mode}.jsonl`);
      // A longer session timeout: the grace in which a reconnecting executor reclaims its leases.
      const { process: scheduler, address } = await startSchedulerProcess(`sched-cut-${mode}`, fx.db.url, 0, {
        HEARTBEAT_INTERVAL: "200ms",
        SESSION_TIMEOUT: "3s",
      });
      const client = workflowClient(address);
      const proxy = await TcpProxy.start(address);
      let executor: ServiceProcess | undefined;
      try {
        executor = await startExecutorProcess(`cut-${mode}`, proxy.address, executorEnv(2));
        const name = `cut-${mode}`;
        await registerSpec(client, {
          name,
          version: 1,
          steps: [
            { id: "a", type: "fault.slow", input: { marker: "{{ input.marker }}", ms: 2000 }, retry: RETRY },
            {
              id: "b",
              type: "fault.slow",
              dependsOn: ["a"],
              input: { marker: "{{ input.marker }}", ms: 20 },
              retry: RETRY,
            },
          ],
        });
        await registerSpec(client, {
          name: `${name}-short`,
          version: 1,
          steps: [
            { id: "s", type: "fault.slow", input: { marker: "{{ input.marker }}", ms: 20 }, retry: RETRY },
          ],
        });
        const runId = await startRun(client, name, { marker });
        await waitRunning(client, runId, "a");

        assert.equal(proxy.cut(mode), 1, "one connection was cut");
        const reattached = await executor.waitForLog(
          '"re-attached to the scheduler"',
          (l) => l.msg === "re-attached to the scheduler",
          20_000,
        );
        assert.equal(proxy.accepted, 2, "the executor reconnected through the proxy");
        assert.equal(reattached["heldLeases"], 1, executor.tail());
        assert.equal(reattached["revoked"], 0, `the lease of a is still the executor's\n${executor.tail()}`);

        // Work handed out right after the reconnect must reach the live session.
        const more = await Promise.all([1, 2, 3, 4].map(() => startRun(client, `${name}-short`, { marker })));

        const runs = await Promise.all([runId, ...more].map((id) => waitForRun(client, id, 30_000)));
        for (const run of runs) {
          assert.equal(run.status, RunStatus.SUCCEEDED, `${describeRun(run)}\n${scheduler.tail()}`);
          for (const t of run.tasks)
            assert.deepEqual(
              attemptSummary(t),
              [["SUCCEEDED", ""]],
              // A LEASE_EXPIRED first attempt here means the lease was sent to the executor's old,
              // superseded session, which the scheduler kept serving until its session timeout.
              `every step ran exactly once, on its first lease (the executor re-attached at once)\n${describeRun(run)}\n${scheduler.tail(12)}`,
            );
        }
        await fx.tables.assertInvariants([runId, ...more]);
      } finally {
        await Promise.all([executor?.kill(), scheduler.kill()]);
        await proxy.close();
      }
    });
  }

  it("scheduler SIGKILLed with retry timers pending: each retry fires once, on time, after the restart", async () => {
    const marker = join(fx.dir, "retry-timers.jsonl");
    const { process: first, address } = await startSchedulerProcess(
      "sched-timers-1",
      fx.db.url,
      0,
      FAST_EXPIRY,
    );
    const port = Number(address.slice(address.lastIndexOf(":") + 1));
    let client = workflowClient(address);
    const executor = await startExecutorProcess("timers", address, executorEnv(4));
    let second: ServiceProcess | undefined;
    try {
      const flaky = (name: string, failures: number, interval: string) => ({
        name,
        version: 1,
        steps: [
          {
            id: "s",
            type: "fault.flaky",
            input: { marker: "{{ input.marker }}", failures },
            retry: {
              maxAttempts: failures + 1,
              initialInterval: interval,
              backoffCoefficient: 1,
              jitter: "none",
            },
          },
        ],
      });
      // Due while the scheduler is down (overdue at recovery), and due well after the restart.
      await registerSpec(client, flaky("timer-overdue", 1, "2s"));
      await registerSpec(client, flaky("timer-pending", 2, "3s"));
      const overdue = await startRun(client, "timer-overdue", { marker });
      const pending = await startRun(client, "timer-pending", { marker });

      // Both timers durable: RETRY_WAIT with its due time, and the events saying so, committed.
      // (That a run row can be committed ahead of its events is group-commit.test.ts's subject.)
      const waiting = async (): Promise<Map<string, Date> | undefined> => {
        const { rows } = await fx.tables.pool.query<{ run_id: string; due: Date }>(
          `SELECT t.run_id, t.next_attempt_at AS due
             FROM task_runs t JOIN workflow_runs r ON r.id = t.run_id
            WHERE t.run_id = ANY($1::uuid[]) AND t.status = 'RETRY_WAIT' AND t.next_attempt_at IS NOT NULL`,
          [[overdue, pending]],
        );
        const retrying = new Set(
          (await outboxEvents(fx.tables.pool, [overdue, pending]))
            .filter((e) => e.type === "taskRetryScheduled")
            .map((e) => e.runId),
        );
        const due = new Map(rows.filter((r) => retrying.has(r.run_id)).map((r) => [r.run_id, r.due]));
        return due.size === 2 ? due : undefined;
      };
      const due = await waitFor("both first attempts to fail and wait for their retry", waiting, 20_000);
      await first.kill();
      assert.deepEqual(await waiting(), due, "the retry timers were committed before the kill");

      // Keep the scheduler down until the first timer is overdue (PostgreSQL's clock, the same host).
      const overdueAt = due.get(overdue) as Date;
      await waitFor("the first retry to be overdue", async () => {
        const { rows } = await fx.tables.pool.query<{ past: boolean }>(
          "SELECT now() > $1::timestamptz AS past",
          [overdueAt],
        );
        return rows[0]?.past === true ? true : undefined;
      });
      ({ process: second } = await startSchedulerProcess("sched-timers-2", fx.db.url, port, FAST_EXPIRY));
      client = workflowClient(address);

      const done = await Promise.all([overdue, pending].map((id) => waitForRun(client, id, 30_000)));
      for (const run of done)
        assert.equal(run.status, RunStatus.SUCCEEDED, `${describeRun(run)}\n${second.tail()}`);
      const [o, p] = done as [Run, Run];
      assert.deepEqual(attemptSummary(taskOf(o, "s")), [
        ["FAILED", "TRANSIENT"],
        ["SUCCEEDED", ""],
      ]);
      assert.deepEqual(attemptSummary(taskOf(p, "s")), [
        ["FAILED", "TRANSIENT"],
        ["FAILED", "TRANSIENT"],
        ["SUCCEEDED", ""],
      ]);
      // Not early: the second attempt of the pending run was leased no sooner than its committed due time.
      const { rows } = await fx.tables.pool.query<{ leased_at: Date }>(
        "SELECT leased_at FROM task_attempts WHERE run_id = $1 AND number = 2",
        [pending],
      );
      const leasedAt = rows[0]?.leased_at;
      const pendingDue = due.get(pending) as Date;
      assert.ok(
        leasedAt !== undefined && leasedAt.getTime() >= pendingDue.getTime() - 5,
        `attempt 2 leased at ${leasedAt?.toISOString()}, due ${pendingDue.toISOString()}`,
      );
      // Not duplicated: each attempt's handler ran exactly once.
      const ran = (await markers(marker)).map(
        (m) => `${m.runId === overdue ? "overdue" : "pending"}#${m.attempt}`,
      );
      assert.deepEqual(ran.sort(), ["overdue#1", "overdue#2", "pending#1", "pending#2", "pending#3"]);
      await fx.tables.assertInvariants([overdue, pending]);
    } finally {
      await Promise.all([executor.kill(), first.kill(), second?.kill()]);
    }
  });
});
