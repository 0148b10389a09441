/**
 * Waits for an event on a real scheduler and PostgreSQL (no executor: wait steps need none): an
 * event published while the step waits ends it with the event as its output; another key, or an
 * event the filter refuses (or fails on), leaves it waiting; an event published before the step
 * waits does not end it; one event ends the waits of two runs; a timeout; a run waiting across a
 * scheduler restart; wait matches a crash left PENDING applied by the next scheduler; bad
 * definitions refused naming the field.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { Client } from "@connectrpc/connect";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { EventWaitMatchStatus, type EventService, RunStatus, TaskStatus, type Run } from "@nexusflow/gen";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import {
  eventClient,
  registerSpec,
  startRunOf,
  startTestDatabase,
  startTestScheduler,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

type Runs = ReturnType<typeof workflowClient>;

function task(run: Run, stepId: string) {
  const t = run.tasks.find((x) => x.stepId === stepId);
  assert.ok(t, `task ${stepId}`);
  return t;
}

describe("waits for an event", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler | undefined;
  let runs: Runs;
  let events: Client<typeof EventService>;
  let sql: pg.Client;

  const connect = (s: Scheduler): void => {
    runs = workflowClient(s.address);
    events = eventClient(s.address);
  };
  const register = (spec: Record<string, unknown>): Promise<void> => registerSpec(runs, spec);
  const start = (workflowName: string, input: unknown = {}): Promise<string> =>
    startRunOf(runs, workflowName, input);
  const waiting = async (runId: string, stepId: string): Promise<void> => {
    await waitFor(`${stepId} of ${runId} waiting`, async () => {
      const { run } = await runs.getRun({ runId });
      return run?.tasks.find((t) => t.stepId === stepId)?.status === TaskStatus.WAITING ? true : undefined;
    });
  };
  const publish = async (key: string, payload: unknown) => {
    const { event } = await events.publishEvent({ key, payload: jsonToValue(payload) });
    assert.ok(event);
    return event;
  };
  const statusOf = async (runId: string, stepId: string): Promise<TaskStatus | undefined> => {
    const { run } = await runs.getRun({ runId });
    return run?.tasks.find((t) => t.stepId === stepId)?.status;
  };

  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    scheduler = await startTestScheduler(db.url);
    connect(scheduler);
    await register({
      name: "await-payment",
      version: 1,
      input: { type: "object", required: ["orderId"], properties: { orderId: { type: "string" } } },
      steps: [
        {
          id: "paid",
          wait: { event: "payments.*", filter: "event.payload.orderId == input.orderId", timeout: "1h" },
        },
      ],
      output: { amount: "{{ steps.paid.output.payload.amount }}" },
    });
    await register({
      name: "gated-payment",
      version: 1,
      steps: [
        { id: "gate", wait: { signal: "go" } },
        { id: "paid", dependsOn: ["gate"], wait: { event: "payments.gated" } },
      ],
    });
  });

  after(async () => {
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
  });

  it("ends the wait with the first matching event published while it waits", async () => {
    const runId = await start("await-payment", { orderId: "o-1" });
    await waiting(runId, "paid");
    const why = await runs.explainPending({ runId, stepId: "paid" });
    const gate = why.gates[0]?.gate;
    assert.equal(gate?.case, "durableWait");
    assert.equal(gate.value.event, "payments.*");
    assert.equal(gate.value.filter, "event.payload.orderId == input.orderId");
    assert.equal(gate.value.signal, "");
    assert.ok(gate.value.until !== undefined, "the timeout's time");
    assert.match(
      why.pendingReason,
      /^waiting for an event matching "payments\.\*" with filter "event\.payload\.orderId == input\.orderId" until \d{4}-/,
    );
    const { run: shown } = await runs.getRun({ runId });
    assert.match(task(shown!, "paid").pendingReason, /^waiting for an event matching "payments\.\*"/);

    const other = await publish("payments.received", { orderId: "o-2", amount: 1 });
    assert.deepEqual(other.waits, [], "another order: the filter refuses it");
    const otherKey = await publish("refunds.received", { orderId: "o-1", amount: 2 });
    assert.deepEqual(otherKey.waits, [], "another key");
    const hostile = await publish("payments.received", "not an object");
    assert.deepEqual(hostile.waits, [], "the filter fails on it: no match, no crash");
    assert.equal(await statusOf(runId, "paid"), TaskStatus.WAITING);

    const hit = await publish("payments.received", { orderId: "o-1", amount: 42 });
    assert.deepEqual(
      hit.waits.map((w) => [w.runId, w.stepId, w.status]),
      [[runId, "paid", EventWaitMatchStatus.SATISFIED]],
      "the answer comes once the step has ended with it",
    );
    const run = await waitForRun(runs, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    const output = valueToJson(task(run, "paid").output) as Record<string, unknown>;
    assert.deepEqual(output, {
      eventId: hit.eventId,
      key: "payments.received",
      payload: { orderId: "o-1", amount: 42 },
      publishTime: new Date(
        Number(hit.publishTime?.seconds) * 1000 + (hit.publishTime?.nanos ?? 0) / 1e6,
      ).toISOString(),
    });
    assert.deepEqual(valueToJson(run.output), { amount: 42 });
    // Satisfied once: the same payload again ends nothing.
    const again = await publish("payments.received", { orderId: "o-1", amount: 43 });
    assert.deepEqual(again.waits, []);
    const { event: got } = await events.getEvent({ eventId: hit.eventId });
    assert.equal(got?.waits[0]?.status, EventWaitMatchStatus.SATISFIED);
  });

  it("does not take an event published before the step waits", async () => {
    const runId = await start("gated-payment");
    await waiting(runId, "gate");
    const early = await publish("payments.gated", { early: true });
    assert.deepEqual(early.waits, []);
    await runs.signalRun({ runId, name: "go" });
    await waiting(runId, "paid");
    const { rows } = await sql.query<{ status: string }>(
      `SELECT status FROM task_runs WHERE run_id = $1 AND step_id = 'paid'`,
      [runId],
    );
    assert.equal(rows[0]?.status, "WAITING", "stored as waiting: the early event was not kept");
    const late = await publish("payments.gated", { late: true });
    assert.equal(late.waits[0]?.status, EventWaitMatchStatus.SATISFIED);
    const run = await waitForRun(runs, runId);
    assert.deepEqual((valueToJson(task(run, "paid").output) as { payload: unknown }).payload, { late: true });
  });

  it("ends the waits of two runs with one event", async () => {
    await register({
      name: "two-waiters",
      version: 1,
      steps: [{ id: "w", wait: { event: "inventory.restocked" } }],
    });
    const a = await start("two-waiters");
    const b = await start("two-waiters");
    await waiting(a, "w");
    await waiting(b, "w");
    const event = await publish("inventory.restocked", { sku: "x" });
    assert.deepEqual(event.waits.map((w) => w.runId).sort(), [a, b].sort());
    for (const runId of [a, b]) {
      const run = await waitForRun(runs, runId);
      assert.equal(run.status, RunStatus.SUCCEEDED);
      assert.equal((valueToJson(task(run, "w").output) as { eventId: string }).eventId, event.eventId);
    }
  });

  it("fails the step with WAIT_TIMEOUT, not retried, at its timeout", async () => {
    await register({
      name: "short-wait",
      version: 1,
      steps: [{ id: "w", wait: { event: "never.published", timeout: "300ms" } }],
    });
    const runId = await start("short-wait");
    const run = await waitForRun(runs, runId);
    assert.equal(run.status, RunStatus.FAILED);
    const t = task(run, "w");
    assert.equal(t.status, TaskStatus.FAILED);
    assert.equal(t.error?.type, "WAIT_TIMEOUT");
    assert.match(t.error?.message ?? "", /^no event matching "never\.published" was published by /);
    assert.deepEqual((await publish("never.published", {})).waits, [], "ended: no longer matched");
  });

  it("refuses bad waits in definitions, naming the field", async () => {
    const cases: [unknown, RegExp][] = [
      [{ signal: "a", event: "b" }, /\$\.steps\[0\]\.wait\.event: .*exactly one of signal and event/],
      [{}, /\$\.steps\[0\]\.wait\.signal: .*or wait\.event .* is required/],
      [{ event: "orders..x" }, /\$\.steps\[0\]\.wait\.event: wait\.event: .*invalid/],
      [{ event: "orders.**.x" }, /\$\.steps\[0\]\.wait\.event: .*"\*\*" may only be the last segment/],
      [{ event: "a", filter: "event.payload ==" }, /\$\.steps\[0\]\.wait\.filter: wait\.filter: /],
      [{ event: "a", filter: "steps.nope.output" }, /\$\.steps\[0\]\.wait\.filter: .*unknown step "nope"/],
      [{ signal: "a", filter: "true" }, /\$\.steps\[0\]\.wait\.filter: wait\.filter goes with wait\.event/],
      [{ event: "a", filter: "" }, /\$\.steps\[0\]\.wait\.filter: /],
      [{ event: "a", timeout: "forever" }, /\$\.steps\[0\]\.wait\.timeout: /],
    ];
    for (const [wait, message] of cases) {
      const error = await runs
        .registerWorkflow({
          definition: {
            case: "specJson",
            value: JSON.stringify({ name: "bad-wait", version: 1, steps: [{ id: "w", wait }] }),
          },
        })
        .then(
          () => undefined,
          (e: unknown) => e as Error,
        );
      assert.ok(error, `${JSON.stringify(wait)} was accepted`);
      assert.match(error.message, message, JSON.stringify(wait));
    }
    // A filter may refer to upstream steps only, and `event` nowhere else.
    const downstream = await runs
      .registerWorkflow({
        definition: {
          case: "specJson",
          value: JSON.stringify({
            name: "bad-wait",
            version: 1,
            steps: [
              { id: "w", wait: { event: "a", filter: "steps.later.output.x == 1" } },
              { id: "later", dependsOn: ["w"], wait: { signal: "x" } },
            ],
          }),
        },
      })
      .then(
        () => undefined,
        (e: unknown) => e as Error,
      );
    assert.match(downstream?.message ?? "", /steps\[0\]\.wait\.filter: .*not upstream/);
    // The same wait as a WorkflowSpec message.
    await runs.registerWorkflow({
      definition: {
        case: "spec",
        value: {
          name: "as-message-event",
          version: 1,
          steps: [{ id: "w", wait: { event: "msg.*", filter: "event.payload.ok", timeout: "1h" } }],
        },
      },
    });
    const runId = await start("as-message-event");
    await waiting(runId, "w");
    await publish("msg.sent", { ok: true });
    assert.equal((await waitForRun(runs, runId)).status, RunStatus.SUCCEEDED);
  });

  it("ends a wait across a scheduler restart, and applies wait matches a crash left pending", async () => {
    const acrossRestart = await start("await-payment", { orderId: "o-restart" });
    const crashed = await start("await-payment", { orderId: "o-crash" });
    const ended = await start("await-payment", { orderId: "o-ended" });
    for (const runId of [acrossRestart, crashed, ended]) await waiting(runId, "paid");
    await runs.cancelRun({ runId: ended, reason: "no longer needed" });
    await waitForRun(runs, ended);

    await scheduler?.stop();
    // What a scheduler that crashed right after storing an event leaves: the event, and the waits
    // it matched still PENDING (the steps were not ended with it).
    const eventId = randomUUID();
    await sql.query(
      `INSERT INTO events (event_id, key, payload, created_at) VALUES ($1, 'payments.received', $2, now())`,
      [eventId, JSON.stringify({ orderId: "o-crash", amount: 7 })],
    );
    await sql.query(
      `INSERT INTO event_wait_matches (event_id, task_run_id, run_id, step_id, status, created_at)
       SELECT $1, id, run_id, step_id, 'PENDING', now() FROM task_runs
       WHERE run_id = ANY($2::uuid[]) AND step_id = 'paid'`,
      [eventId, [crashed, ended]],
    );

    scheduler = await startTestScheduler(db.url);
    connect(scheduler);
    const recovered = await waitForRun(runs, crashed);
    assert.equal(recovered.status, RunStatus.SUCCEEDED);
    assert.equal((valueToJson(task(recovered, "paid").output) as { eventId: string }).eventId, eventId);
    const settled = await waitFor("the pending matches settled", async () => {
      const { event } = await events.getEvent({ eventId });
      return event?.waits.every((w) => w.status !== EventWaitMatchStatus.PENDING) ? event.waits : undefined;
    });
    assert.deepEqual(Object.fromEntries(settled.map((w) => [w.runId, w.status])), {
      [crashed]: EventWaitMatchStatus.SATISFIED,
      [ended]: EventWaitMatchStatus.WAIT_ENDED,
    });

    assert.equal(
      await statusOf(acrossRestart, "paid"),
      TaskStatus.WAITING,
      "still waiting after the restart",
    );
    const hit = await publish("payments.received", { orderId: "o-restart", amount: 3 });
    assert.equal(hit.waits[0]?.status, EventWaitMatchStatus.SATISFIED);
    const run = await waitForRun(runs, acrossRestart);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    assert.deepEqual(valueToJson(run.output), { amount: 3 });
  });
});
