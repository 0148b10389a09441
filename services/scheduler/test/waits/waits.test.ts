/**
 * Durable waits and signals on a real scheduler and PostgreSQL (no executor: wait and sleep steps
 * need none): a signal sent before, during and after the wait; a timeout; idempotent signals; a
 * run waiting, and a run sleeping, across a scheduler restart; hostile requests and definitions.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectError } from "@connectrpc/connect";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { RunStatus, TaskStatus, type Run } from "@nexusflow/gen";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import pg from "pg";
import { compileWorkflow } from "../../src/dag/index.js";
import type { Scheduler } from "../../src/scheduler.js";
import {
  failure,
  outboxEvents,
  startTestDatabase,
  startTestScheduler,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

type Client = ReturnType<typeof workflowClient>;

async function register(client: Client, spec: Record<string, unknown>): Promise<void> {
  await client.registerWorkflow({ definition: { case: "specJson", value: JSON.stringify(spec) } });
}

async function start(client: Client, workflowName: string, input: unknown = {}): Promise<string> {
  const { run } = await client.startRun({ workflowName, input: jsonToValue(input) });
  assert.ok(run);
  return run.id;
}

function task(run: Run, stepId: string) {
  const t = run.tasks.find((x) => x.stepId === stepId);
  assert.ok(t, `task ${stepId}`);
  return t;
}

/** Waits until the run's step is WAITING (its wait or sleep has begun). */
async function waiting(client: Client, runId: string, stepId: string): Promise<void> {
  await waitFor(`${stepId} of ${runId} waiting`, async () => {
    const { run } = await client.getRun({ runId });
    return run?.tasks.find((t) => t.stepId === stepId)?.status === TaskStatus.WAITING ? true : undefined;
  });
}

function fields(e: ConnectError): string[] {
  return e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
}

describe("durable waits and signals", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler | undefined;
  let client: Client;
  let sql: pg.Client;

  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    await register(client, {
      name: "approval",
      version: 1,
      steps: [{ id: "approve", wait: { signal: "approval", timeout: "1h" } }],
      output: { decision: "{{ steps.approve.output }}" },
    });
    await register(client, {
      name: "gated",
      version: 1,
      steps: [
        { id: "gate", wait: { signal: "go" } },
        { id: "approve", wait: { signal: "approval" }, dependsOn: ["gate"] },
      ],
    });
  });

  after(async () => {
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
  });

  it("completes a waiting step with the signal's payload (signal during the wait), with its events", async () => {
    const runId = await start(client, "approval");
    await waiting(client, runId, "approve");
    // ExplainPending says what it waits for, and until when.
    const why = await client.explainPending({ runId, stepId: "approve" });
    assert.equal(why.status, TaskStatus.WAITING);
    const gate = why.gates[0]?.gate;
    assert.equal(gate?.case, "durableWait");
    assert.equal(gate.value.signal, "approval");
    assert.ok(gate.value.until !== undefined, "the timeout's time");
    assert.match(why.pendingReason, /^waiting for signal "approval" until \d{4}-/);
    const answer = await client.signalRun({
      runId,
      name: "approval",
      payload: jsonToValue({ approved: true, by: "ana" }),
    });
    assert.equal(answer.stepId, "approve");
    assert.equal(answer.duplicate, false);
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    assert.deepEqual(valueToJson(task(run, "approve").output), { approved: true, by: "ana" });
    assert.deepEqual(valueToJson(run.output), { decision: { approved: true, by: "ana" } });
    const events = await waitFor("the run's events", async () => {
      const list = await outboxEvents(sql, [runId]);
      return list.some((e) => e.type === "runCompleted") ? list : undefined;
    });
    const types = events.map((e) => e.type);
    assert.ok(types.includes("taskWaiting"), types.join());
    assert.ok(types.indexOf("signalReceived") < types.indexOf("taskSucceeded"), types.join());
  });

  it("keeps a signal sent before the step waits and hands it over when it does", async () => {
    const runId = await start(client, "gated");
    await waiting(client, runId, "gate");
    const early = await client.signalRun({ runId, name: "approval", payload: jsonToValue("early") });
    assert.equal(early.stepId, "", "no step waits for it yet: kept on the run");
    const { rows } = await sql.query<{ signals: unknown[] }>(
      `SELECT signals FROM workflow_runs WHERE id = $1`,
      [runId],
    );
    assert.equal(rows[0]?.signals.length, 1, "stored before the answer");
    // GetRun lists it, with its payload while it is kept, and says what the gate waits for.
    const { run: before } = await client.getRun({ runId });
    assert.deepEqual(
      before?.signals.map((x) => [x.name, x.stepId, valueToJson(x.payload)]),
      [["approval", "", "early"]],
    );
    assert.ok(before?.signals[0]?.receiveTime !== undefined);
    assert.match(task(before, "gate").pendingReason, /^waiting for signal "go"$/);
    const go = await client.signalRun({ runId, name: "go" });
    assert.equal(go.stepId, "gate");
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    assert.equal(valueToJson(task(run, "approve").output), "early");
    assert.equal(valueToJson(task(run, "gate").output), null);
    assert.deepEqual(
      run.signals.map((x) => [x.name, x.stepId, x.payload === undefined]),
      [
        ["approval", "approve", true],
        ["go", "gate", true],
      ],
      "taken: the payload is the step's output now",
    );
  });

  it("stores a signal with the same idempotency key once, and refuses signals once the run ended", async () => {
    const runId = await start(client, "gated");
    await waiting(client, runId, "gate");
    const first = await client.signalRun({
      runId,
      name: "approval",
      payload: jsonToValue(1),
      idempotencyKey: "k1",
    });
    const again = await client.signalRun({
      runId,
      name: "approval",
      payload: jsonToValue(2),
      idempotencyKey: "k1",
    });
    assert.equal(first.duplicate, false);
    assert.equal(again.duplicate, true);
    await client.signalRun({ runId, name: "go", idempotencyKey: "g" });
    const run = await waitForRun(client, runId);
    assert.equal(valueToJson(task(run, "approve").output), 1, "the first payload, once");
    const { rows } = await sql.query<{ signals: { key: string | null; stepId: string | null }[] }>(
      `SELECT signals FROM workflow_runs WHERE id = $1`,
      [runId],
    );
    assert.deepEqual(
      rows[0]?.signals.map((s) => [s.key, s.stepId]),
      [
        ["k1", "approve"],
        ["g", "gate"],
      ],
    );
    // After the run ended: a repeat of a signal it took is still a duplicate, a new one is refused.
    const repeat = await client.signalRun({ runId, name: "go", idempotencyKey: "g" });
    assert.deepEqual([repeat.stepId, repeat.duplicate], ["gate", true]);
    const late = await failure(client.signalRun({ runId, name: "approval", idempotencyKey: "k2" }));
    assert.equal(late.code, Code.FailedPrecondition);
    assert.match(late.message, /has ended \(SUCCEEDED\)/);
  });

  it("fails the step with WAIT_TIMEOUT, not retried, at its timeout", async () => {
    await register(client, {
      name: "short-wait",
      version: 1,
      steps: [{ id: "approve", wait: { signal: "approval", timeout: "300ms" } }],
    });
    const runId = await start(client, "short-wait");
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.FAILED);
    const t = task(run, "approve");
    assert.equal(t.status, TaskStatus.FAILED);
    assert.equal(t.error?.type, "WAIT_TIMEOUT");
    assert.equal(t.attempts.length, 0, "no attempt: nothing ran, nothing retried");
  });

  it("sleeps for a duration and until a templated time", async () => {
    await register(client, {
      name: "naps",
      version: 1,
      input: { type: "object", properties: { at: { type: "string" } } },
      steps: [
        { id: "nap", sleep: { for: "300ms" } },
        { id: "alarm", sleep: { until: "{{ input.at }}" }, dependsOn: ["nap"] },
      ],
    });
    const at = new Date(Date.now() + 600).toISOString();
    const runId = await start(client, "naps", { at });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    assert.deepEqual(valueToJson(task(run, "alarm").output), { until: at });
    const ended = task(run, "alarm").endTime;
    assert.ok(ended !== undefined && Number(ended.seconds) * 1000 + ended.nanos / 1e6 >= Date.parse(at));
    // A rendered `until` that is no time fails the step, naming the field.
    const bad = await waitForRun(client, await start(client, "naps", { at: "tomorrow" }));
    assert.equal(bad.status, RunStatus.FAILED);
    assert.equal(task(bad, "alarm").error?.type, "INVALID_SLEEP_UNTIL");
    assert.match(task(bad, "alarm").error?.message ?? "", /sleep\.until/);
  });

  it("refuses hostile signals, naming the field", async () => {
    const runId = await start(client, "approval");
    const empty = await failure(client.signalRun({ runId, name: "" }));
    assert.equal(empty.code, Code.InvalidArgument);
    assert.deepEqual(fields(empty), ["name"]);
    const badName = await failure(client.signalRun({ runId, name: "no spaces {{ }}" }));
    assert.deepEqual(fields(badName), ["name"]);
    const huge = await failure(
      client.signalRun({ runId, name: "approval", payload: jsonToValue({ blob: "x".repeat(70_000) }) }),
    );
    assert.equal(huge.code, Code.InvalidArgument);
    assert.deepEqual(fields(huge), ["payload"]);
    const nan = await failure(
      client.signalRun({
        runId,
        name: "approval",
        payload: create(ValueSchema, { kind: { case: "numberValue", value: Number.NaN } }),
      }),
    );
    assert.equal(nan.code, Code.InvalidArgument);
    assert.ok(
      fields(nan).every((f) => f.startsWith("payload")),
      fields(nan).join(),
    );
    const longKey = await failure(
      client.signalRun({ runId, name: "approval", idempotencyKey: "k".repeat(201) }),
    );
    assert.deepEqual(fields(longKey), ["idempotency_key"]);
    const notId = await failure(client.signalRun({ runId: "nope", name: "approval" }));
    assert.deepEqual(fields(notId), ["run_id"]);
    const unknown = await failure(
      client.signalRun({ runId: "00000000-0000-4000-8000-000000000000", name: "approval" }),
    );
    assert.equal(unknown.code, Code.NotFound);
    // The run still waits, untouched.
    const { run } = await client.getRun({ runId });
    assert.equal(run?.status, RunStatus.RUNNING);
  });

  it("refuses bad wait and sleep steps in definitions, naming the field", () => {
    const errorsOf = (step: Record<string, unknown>): string[] => {
      const r = compileWorkflow({ name: "bad", version: 1, steps: [{ id: "s", ...step }] });
      assert.equal(r.ok, false, JSON.stringify(step));
      return r.ok ? [] : r.errors.map((e) => e.path);
    };
    assert.deepEqual(errorsOf({ wait: { signal: "a", timeout: "NaN" } }), ["$.steps[0].wait.timeout"]);
    assert.deepEqual(errorsOf({ wait: { signal: "a", timeout: "-1s" } }), ["$.steps[0].wait.timeout"]);
    assert.deepEqual(errorsOf({ wait: { signal: "" } }), ["$.steps[0].wait.signal"]);
    assert.deepEqual(errorsOf({ wait: {} }), ["$.steps[0].wait.signal"]);
    assert.deepEqual(errorsOf({ wait: { signal: "a", extra: 1 } }), ["$.steps[0].wait.extra"]);
    assert.deepEqual(errorsOf({ sleep: { for: "NaNs" } }), ["$.steps[0].sleep.for"]);
    assert.deepEqual(errorsOf({ sleep: { for: "1s", until: "2030-01-01T00:00:00Z" } }), ["$.steps[0].sleep"]);
    assert.deepEqual(errorsOf({ sleep: {} }), ["$.steps[0].sleep"]);
    assert.deepEqual(errorsOf({ sleep: { until: "next tuesday" } }), ["$.steps[0].sleep.until"]);
    assert.deepEqual(errorsOf({ sleep: { until: "{{ steps.x.output }}" } }), ["$.steps[0].sleep.until"]);
    assert.deepEqual(errorsOf({ type: "http", wait: { signal: "a" } }), ["$.steps[0].type"]);
    assert.deepEqual(errorsOf({ wait: { signal: "a" }, retry: { maxAttempts: 2 } }), ["$.steps[0].retry"]);
    assert.deepEqual(errorsOf({ wait: { signal: "a" }, sleep: { for: "1s" } }), ["$.steps[0].sleep"]);
    assert.deepEqual(errorsOf({ wait: "approval" }), ["$.steps[0].wait"]);
    const ok = compileWorkflow({
      name: "ok",
      version: 1,
      steps: [{ id: "s", sleep: { until: "2030-01-01T00:00:00+01:00" } }],
    });
    assert.equal(ok.ok, true);
  });

  it("takes wait and sleep steps in a WorkflowSpec message as in JSON", async () => {
    await client.registerWorkflow({
      definition: {
        case: "spec",
        value: {
          name: "as-message",
          version: 1,
          steps: [
            { id: "nap", sleep: { for: "10ms" } },
            { id: "ok", wait: { signal: "ok", timeout: "1h" }, dependsOn: ["nap"] },
          ],
        },
      },
    });
    const runId = await start(client, "as-message");
    await waiting(client, runId, "ok");
    await client.signalRun({ runId, name: "ok", payload: jsonToValue(true) });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    const bad = await failure(
      client.registerWorkflow({
        definition: {
          case: "spec",
          value: { name: "bad-message", version: 1, steps: [{ id: "w", wait: {} }] },
        },
      }),
    );
    assert.equal(bad.code, Code.InvalidArgument);
    assert.match(bad.message, /steps\[0\]\.wait\.signal/);
  });

  it("completes a run waiting across a scheduler restart when the signal arrives after it", async () => {
    const waitingRun = await start(client, "approval");
    await waiting(client, waitingRun, "approve");
    await register(client, {
      name: "restart-nap",
      version: 1,
      steps: [{ id: "nap", sleep: { for: "2s" } }],
    });
    const napping = await start(client, "restart-nap");
    await waiting(client, napping, "nap");
    const sleeping = await client.explainPending({ runId: napping, stepId: "nap" });
    assert.equal(sleeping.gates[0]?.gate.case, "durableWait");
    assert.match(sleeping.pendingReason, /^sleeping until /);
    const { rows } = await sql.query<{ next_attempt_at: Date }>(
      `SELECT next_attempt_at FROM task_runs WHERE run_id = $1 AND step_id = 'nap'`,
      [napping],
    );
    const wakeAt = rows[0]?.next_attempt_at;
    assert.ok(wakeAt);

    await scheduler?.stop();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);

    const answer = await client.signalRun({
      runId: waitingRun,
      name: "approval",
      payload: jsonToValue("after"),
    });
    assert.equal(answer.stepId, "approve");
    const run = await waitForRun(client, waitingRun);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    assert.equal(valueToJson(task(run, "approve").output), "after");

    const nap = await waitForRun(client, napping);
    assert.equal(nap.status, RunStatus.SUCCEEDED);
    assert.deepEqual(valueToJson(task(nap, "nap").output), { until: wakeAt.toISOString() });
    const end = task(nap, "nap").endTime;
    assert.ok(end !== undefined && Number(end.seconds) * 1000 + end.nanos / 1e6 >= wakeAt.getTime());
  });
});
