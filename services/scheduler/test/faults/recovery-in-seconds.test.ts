/**
 * Recovery in seconds (issue 28), with real processes: an executor SIGKILLed and started again
 * under its id gets the tasks it no longer holds run again at once, not after the session timeout;
 * and across a scheduler restart the leases of an executor that never comes back expire one
 * session timeout after the restart, with no allowance on top. Neither test measures time: the
 * first sets a session timeout no test waits out, the second compares the expiry with a witness.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { RunStatus, TaskStatus, type Run } from "@nexusflow/gen";
import { RawSession, waitFor, waitForRun, workflowClient } from "../support.js";
import { describeRun, registerSpec, type WorkflowClient } from "../e2e/harness.js";
import { startExecutorProcess, startSchedulerProcess, type ServiceProcess } from "../e2e/processes.js";
import { attemptSummary, executorEnv, faultFixture, markers, startRun, taskOf } from "./support.js";

const STEPS = ["a", "b", "c"];
const RETRY = { maxAttempts: 3, initialInterval: "20ms" };

/** A workflow of three independent `fault.slow` steps working `ms` each. */
function parallel(name: string, ms: number) {
  return {
    name,
    version: 1,
    steps: STEPS.map((id) => ({
      id,
      type: "fault.slow",
      input: { marker: "{{ input.marker }}", ms },
      retry: RETRY,
    })),
  };
}

/** Waits until attempt `attempt` of every step is RUNNING; returns the run then. */
function allRunning(client: WorkflowClient, runId: string, attempt: number): Promise<Run> {
  return waitFor(
    `attempt ${attempt} of steps ${STEPS.join(", ")} of run ${runId} to be RUNNING`,
    async () => {
      const { run } = await client.getRun({ runId });
      if (run === undefined) return undefined;
      const running = STEPS.every(
        (id) => run.tasks.find((t) => t.stepId === id)?.attempts[attempt - 1]?.status === TaskStatus.RUNNING,
      );
      return running ? run : undefined;
    },
    30_000,
  );
}

describe("recovery in seconds", () => {
  const fx = faultFixture("nf-recovery-");

  it("an executor SIGKILLed and back under its id runs its tasks again at once, not after the session timeout", async () => {
    const marker = join(fx.dir, "reattach.jsonl");
    // No test waits 10 minutes: a re-run before the test's own timeout cannot be the grace expiring.
    const { process: scheduler, address } = await startSchedulerProcess("sched-reattach", fx.db.url, 0, {
      HEARTBEAT_INTERVAL: "200ms",
      SESSION_TIMEOUT: "10m",
    });
    const client = workflowClient(address);
    let executor = await startExecutorProcess("reattach-x", address, executorEnv(4));
    try {
      await registerSpec(client, parallel("reattach", 4000));
      const runId = await startRun(client, "reattach", { marker });
      await allRunning(client, runId, 1);
      const first = executor;

      await first.kill();
      executor = await startExecutorProcess("reattach-x", address, executorEnv(4));

      const rerun = await allRunning(client, runId, 2);
      for (const id of STEPS) {
        const attempt = taskOf(rerun, id).attempts[0];
        assert.equal(attempt?.status, TaskStatus.FAILED, `${id}: ${describeRun(rerun)}`);
        assert.equal(attempt?.error?.type, "LEASE_EXPIRED");
        assert.match(attempt?.error?.message ?? "", /re-attached without this lease/);
      }
      const run = await waitForRun(client, runId, 30_000);
      assert.equal(run.status, RunStatus.SUCCEEDED, `${describeRun(run)}\n${scheduler.tail()}`);
      for (const id of STEPS)
        assert.deepEqual(attemptSummary(taskOf(run, id)), [
          ["FAILED", "LEASE_EXPIRED"],
          ["SUCCEEDED", ""],
        ]);
      // Each attempt's handler ran once: the first on the killed process, the second on its successor.
      const ran = (await markers(marker)).map((m) => `${m.stepId}#${m.attempt}@${m.pid}`).sort();
      assert.deepEqual(
        ran,
        STEPS.flatMap((id) => [`${id}#1@${first.pid}`, `${id}#2@${executor.pid}`]).sort(),
      );
      const attached = scheduler.lines.filter((l) => l.msg === "executor attached");
      assert.equal(attached.at(-1)?.["expired"], STEPS.length, scheduler.tail());
      await fx.tables.assertInvariants([runId]);
    } finally {
      await Promise.all([executor.kill(), scheduler.kill()]);
    }
  });

  it("across a scheduler restart a dead executor's leases expire within one session timeout of the restart", async () => {
    const marker = join(fx.dir, "restart.jsonl");
    const settings = { HEARTBEAT_INTERVAL: "100ms", SESSION_TIMEOUT: "2s" };
    const { process: first, address } = await startSchedulerProcess(
      "sched-restart-1",
      fx.db.url,
      0,
      settings,
    );
    const port = Number(address.slice(address.lastIndexOf(":") + 1));
    let client = workflowClient(address);
    const dead = await startExecutorProcess("restart-dead", address, executorEnv(4));
    let second: ServiceProcess | undefined;
    let survivor: ServiceProcess | undefined;
    const witness: RawSession[] = [];
    try {
      await registerSpec(client, parallel("restart", 3000));
      const runId = await startRun(client, "restart", { marker });
      await allRunning(client, runId, 1);

      // Both die; only the scheduler comes back.
      await Promise.all([first.kill(), dead.kill()]);
      ({ process: second } = await startSchedulerProcess("sched-restart-2", fx.db.url, port, settings));
      client = workflowClient(address);

      // A session opened once the scheduler listens, after it recovered, and silent from then on: it
      // is declared dead one session timeout (plus a liveness tick) after it attached. The leases
      // recovered before it must have expired by then; with the old grace (timeout + 6 s) they had not.
      const silent = new RawSession(address);
      witness.push(silent);
      silent.autoPong = false;
      silent.send({
        case: "attach",
        value: { executorId: "restart-witness", taskTypes: ["witness.none"], slots: 1, heldLeases: [] },
      });
      await silent.next("attachAck");
      const status = await waitFor("the silent session to be closed", () => silent.status, 30_000);
      const witnessEnded = Date.now();
      assert.match(status.details, /no heartbeat within the session timeout/);

      const expired = await waitFor(
        "the dead executor's leases to expire",
        async () => {
          const { run } = await client.getRun({ runId });
          const ends = STEPS.map((id) => run?.tasks.find((t) => t.stepId === id)?.attempts[0]);
          return ends.every((a) => a?.error?.type === "LEASE_EXPIRED") ? ends : undefined;
        },
        30_000,
      );
      for (const a of expired) {
        assert.ok(a?.endTime, "an expired attempt has its end time");
        const endedAt = timestampDate(a.endTime).getTime();
        assert.ok(
          endedAt <= witnessEnded,
          `attempt ended ${new Date(endedAt).toISOString()}, after the silent session was closed ${new Date(witnessEnded).toISOString()}`,
        );
      }

      survivor = await startExecutorProcess("restart-survivor", address, executorEnv(4));
      const run = await waitForRun(client, runId, 30_000);
      assert.equal(run.status, RunStatus.SUCCEEDED, `${describeRun(run)}\n${second.tail()}`);
      for (const id of STEPS) {
        assert.deepEqual(attemptSummary(taskOf(run, id)), [
          ["FAILED", "LEASE_EXPIRED"],
          ["SUCCEEDED", ""],
        ]);
        assert.equal(taskOf(run, id).attempts[1]?.executorId, "restart-survivor");
      }
      await fx.tables.assertInvariants([runId]);
    } finally {
      for (const w of witness) w.close();
      await Promise.all([first.kill(), dead.kill(), second?.kill(), survivor?.kill()]);
    }
  });
});
