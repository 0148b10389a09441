/**
 * Durable waits across a scheduler SIGKILLed (a real process, no shutdown code runs): a run
 * waiting for a signal completes when the signal arrives after the restart, a signal kept on a run
 * before the crash is handed to its step after it, a sleeping step wakes at its stored time, and a
 * step waiting for an event ends with the first one published after the restart. The waiting runs
 * are parked (out of memory) when it is killed, and the restart leaves them parked.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { EventService, EventWaitMatchStatus, RunStatus, TaskStatus, type Run } from "@nexusflow/gen";
import pg from "pg";
import { killAll, startSchedulerProcess } from "../e2e/processes.js";
import { startTestDatabase, waitFor, waitForRun, workflowClient } from "../support.js";

type Client = ReturnType<typeof workflowClient>;

function task(run: Run, stepId: string) {
  const t = run.tasks.find((x) => x.stepId === stepId);
  assert.ok(t, `task ${stepId}`);
  return t;
}

async function waiting(client: Client, runId: string, stepId: string): Promise<void> {
  await waitFor(`${stepId} of ${runId} waiting`, async () => {
    const { run } = await client.getRun({ runId });
    return run?.tasks.find((t) => t.stepId === stepId)?.status === TaskStatus.WAITING ? true : undefined;
  });
}

describe("durable waits across a scheduler SIGKILL", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let sql: pg.Client;

  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
  });

  after(async () => {
    await killAll();
    await sql?.end();
    await db?.close();
  });

  it("waiting, kept and sleeping runs all finish after the restart", { timeout: 180_000 }, async () => {
    const first = await startSchedulerProcess("sched-waits-1", db.url, 0);
    let client = workflowClient(first.address);
    const register = (spec: unknown) =>
      client.registerWorkflow({ definition: { case: "specJson", value: JSON.stringify(spec) } });
    await register({
      name: "kill-approval",
      version: 1,
      steps: [{ id: "approve", wait: { signal: "approval", timeout: "1h" } }],
    });
    await register({
      name: "kill-gated",
      version: 1,
      steps: [
        { id: "gate", wait: { signal: "go" } },
        { id: "approve", wait: { signal: "approval" }, dependsOn: ["gate"] },
      ],
    });
    await register({ name: "kill-nap", version: 1, steps: [{ id: "nap", sleep: { for: "4s" } }] });
    await register({
      name: "kill-paid",
      version: 1,
      steps: [{ id: "paid", wait: { event: "kill.paid", filter: "event.payload.run == run.id" } }],
    });
    const start = async (name: string) => {
      const { run } = await client.startRun({ workflowName: name, input: jsonToValue({}) });
      assert.ok(run);
      return run.id;
    };
    const waitingRun = await start("kill-approval");
    const gatedRun = await start("kill-gated");
    const napRun = await start("kill-nap");
    const paidRun = await start("kill-paid");
    await waiting(client, waitingRun, "approve");
    await waiting(client, paidRun, "paid");
    await waiting(client, gatedRun, "gate");
    await waiting(client, napRun, "nap");
    const kept = await client.signalRun({
      runId: gatedRun,
      name: "approval",
      payload: jsonToValue({ kept: true }),
      idempotencyKey: "before-crash",
    });
    assert.equal(kept.stepId, "", "no step waits for it yet: kept");
    const { rows } = await sql.query<{ next_attempt_at: Date }>(
      `SELECT next_attempt_at FROM task_runs WHERE run_id = $1 AND step_id = 'nap'`,
      [napRun],
    );
    const wakeAt = rows[0]?.next_attempt_at;
    assert.ok(wakeAt);
    // Killed with the waiting runs parked (out of the scheduler's memory: engine/parking.ts).
    const parked = [waitingRun, gatedRun, paidRun];
    const parkedRows = async () =>
      (await sql.query(`SELECT run_id FROM parked_runs WHERE run_id = ANY($1::uuid[])`, [parked])).rowCount;
    await waitFor("the waiting runs parked", async () => (await parkedRows()) === parked.length);

    await first.process.kill();
    const { rows: left } = await sql.query<{ step_id: string; status: string }>(
      `SELECT step_id, status FROM task_runs WHERE run_id = ANY($1::uuid[]) ORDER BY step_id`,
      [[waitingRun, napRun]],
    );
    assert.deepEqual(
      left.map((r) => [r.step_id, r.status]),
      [
        ["approve", "WAITING"],
        ["nap", "WAITING"],
      ],
      "killed while both wait",
    );
    const second = await startSchedulerProcess("sched-waits-2", db.url, 0);
    client = workflowClient(second.address);
    assert.equal(await parkedRows(), parked.length, "not loaded by the restart");

    // The new scheduler answers once it holds the runs (UNAVAILABLE until then).
    const answer = await waitFor(
      "the signal accepted after the restart",
      () => client.signalRun({ runId: waitingRun, name: "approval", payload: jsonToValue("after") }),
      60_000,
    );
    assert.equal(answer.stepId, "approve");
    const approved = await waitForRun(client, waitingRun, 60_000);
    assert.equal(approved.status, RunStatus.SUCCEEDED);
    assert.equal(valueToJson(task(approved, "approve").output), "after");

    // The key of the signal kept before the crash is still known, and the signal is still there.
    const repeat = await client.signalRun({
      runId: gatedRun,
      name: "approval",
      idempotencyKey: "before-crash",
    });
    assert.equal(repeat.duplicate, true);
    await client.signalRun({ runId: gatedRun, name: "go" });
    const gated = await waitForRun(client, gatedRun, 60_000);
    assert.equal(gated.status, RunStatus.SUCCEEDED);
    assert.deepEqual(valueToJson(task(gated, "approve").output), { kept: true });

    // The step waiting for an event still waits: the first matching event published now ends it.
    const events = createClient(EventService, createGrpcTransport({ baseUrl: `http://${second.address}` }));
    const { event } = await events.publishEvent({ key: "kill.paid", payload: jsonToValue({ run: paidRun }) });
    assert.deepEqual(
      event?.waits.map((w) => [w.runId, w.status]),
      [[paidRun, EventWaitMatchStatus.SATISFIED]],
    );
    const paid = await waitForRun(client, paidRun, 60_000);
    assert.equal(paid.status, RunStatus.SUCCEEDED);
    assert.equal((valueToJson(task(paid, "paid").output) as { eventId: string }).eventId, event?.eventId);

    const nap = await waitForRun(client, napRun, 60_000);
    assert.equal(nap.status, RunStatus.SUCCEEDED);
    assert.deepEqual(valueToJson(task(nap, "nap").output), { until: wakeAt.toISOString() });
    const end = task(nap, "nap").endTime;
    assert.ok(end !== undefined && Number(end.seconds) * 1000 + end.nanos / 1e6 >= wakeAt.getTime());
  });
});
