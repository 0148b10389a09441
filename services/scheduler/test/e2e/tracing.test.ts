/**
 * One trace per run, in one process with tracing on (spans kept in memory): the run span, each
 * attempt's span (a child of the run's stored context), the handler span on the executor (a child
 * of the attempt span the Lease carries), a user handler's own span (ctx.startSpan), and the trace
 * context each lifecycle event is stored with (the outbox), over a real PostgreSQL.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jsonToValue } from "@nexusflow/common";
import { contextFromTraceparent } from "@nexusflow/common/telemetry";
import { type TestTracing, startTestTracing } from "@nexusflow/common/telemetry/testing";
import { Executor } from "@nexusflow/executor";
import { RunStatus } from "@nexusflow/gen";
import { trace } from "@opentelemetry/api";
import { ParentBasedSampler, type ReadableSpan, SamplingDecision } from "@opentelemetry/sdk-trace";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import {
  outboxEvents,
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";
import { TRACED_DIAMOND, registerSpec } from "./harness.js";

const attr = (s: ReadableSpan, name: string): unknown => s.attributes[name];
const parentOf = (s: ReadableSpan): string | undefined => s.parentSpanContext?.spanId;

describe("tracing: one trace per run", () => {
  let tracing: TestTracing;
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let executor: Executor;
  let pool: pg.Pool;

  before(async () => {
    // Every trace is recorded but those of `traced-unsampled` runs, as a ratio sampler leaves some out.
    tracing = await startTestTracing({
      sampler: new ParentBasedSampler({
        root: {
          shouldSample: (_context, _traceId, name) => ({
            decision:
              name === "run traced-unsampled"
                ? SamplingDecision.NOT_RECORD
                : SamplingDecision.RECORD_AND_SAMPLED,
          }),
          toString: () => "all but traced-unsampled",
        },
      }),
    });
    db = await startTestDatabase();
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    scheduler = await startTestScheduler(db.url);
    executor = new Executor({
      schedulerAddress: scheduler.address,
      logger: testLogger("executor"),
      executorId: "traced",
    });
    executor.register("traced.step", (input: { x: number }, ctx) => {
      const span = ctx.startSpan("user work", { "user.step": ctx.stepId });
      span.end();
      return { x: input.x + 1 };
    });
    await executor.start();
  });

  after(async () => {
    await executor.stop();
    await scheduler.stop();
    await pool.end();
    await db.close();
    await tracing.stop();
  });

  it("joins the run, its attempts, the handlers, their user spans and the events in one trace", async () => {
    const client = workflowClient(scheduler.address);
    await registerSpec(client, TRACED_DIAMOND);
    const { run: started } = await client.startRun({
      workflowName: "traced-diamond",
      input: jsonToValue({ x: 1 }),
    });
    assert.ok(started);
    const runId = started.id;
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);

    const ofRun = (): ReadableSpan[] =>
      tracing.spans().filter((s) => attr(s, "nexusflow.run_id") === runId || s.name === "user work");
    await waitFor("the spans of the run", () =>
      ofRun().filter((s) => s.name === "user work").length === 4 ? true : undefined,
    );
    const spans = ofRun();
    const runSpans = spans.filter((s) => s.name === "run traced-diamond");
    assert.equal(runSpans.length, 1);
    const runSpan = runSpans[0] as ReadableSpan;
    const traceId = runSpan.spanContext().traceId;
    const inTrace = spans.filter((s) => s.spanContext().traceId === traceId);

    const attempts = inTrace.filter((s) => s.name.startsWith("attempt "));
    assert.deepEqual(attempts.map((s) => attr(s, "nexusflow.step_id")).sort(), ["a", "b", "c", "d"]);
    for (const a of attempts) {
      assert.equal(parentOf(a), runSpan.spanContext().spanId, `${a.name}'s parent is the run span`);
      assert.equal(attr(a, "nexusflow.attempt_status"), "SUCCEEDED");
    }
    const handlers = inTrace.filter((s) => s.name === "handler traced.step");
    assert.equal(handlers.length, 4);
    for (const h of handlers) {
      const attempt = attempts.find((a) => a.spanContext().spanId === parentOf(h));
      assert.ok(attempt, "a handler span's parent is an attempt span");
      assert.equal(attr(h, "nexusflow.step_id"), attr(attempt, "nexusflow.step_id"));
    }
    const user = inTrace.filter((s) => s.name === "user work");
    assert.equal(user.length, 4);
    for (const u of user) {
      const handler = handlers.find((h) => h.spanContext().spanId === parentOf(u));
      assert.ok(handler, "a user span's parent is its handler's span");
      assert.equal(attr(u, "user.step"), attr(handler, "nexusflow.step_id"));
    }

    // Every event is stored with the context of the span that caused it: the run span for the
    // run's own events, the attempt span for a task's.
    const events = await outboxEvents(pool, [runId]);
    assert.ok(events.length > 0);
    const known = new Set([runSpan, ...attempts].map((s) => s.spanContext().spanId));
    for (const e of events) {
      const traceparent = e.traceContext?.["traceparent"];
      const ctx = trace.getSpanContext(
        contextFromTraceparent(typeof traceparent === "string" ? traceparent : undefined),
      );
      assert.equal(ctx?.traceId, traceId, `event ${e.sequence} is in the run's trace`);
      assert.ok(known.has(ctx.spanId), `event ${e.sequence} names the run or an attempt span`);
    }
  });

  it("makes no span for a run whose trace is sampled out: its leases and events carry the run's context", async () => {
    const client = workflowClient(scheduler.address);
    await registerSpec(client, {
      name: "traced-unsampled",
      version: 1,
      steps: [
        { id: "a", type: "traced.step", input: { x: "{{ input.x }}" } },
        { id: "b", type: "traced.step", dependsOn: ["a"], input: { x: "{{ steps.a.output.x }}" } },
      ],
    });
    const before = tracing.spans().length;
    const { run: started } = await client.startRun({
      workflowName: "traced-unsampled",
      input: jsonToValue({ x: 1 }),
    });
    assert.ok(started);
    const runId = started.id;
    assert.equal((await waitForRun(client, runId)).status, RunStatus.SUCCEEDED);
    const { rows: runs } = await pool.query<{ trace_parent: string | null }>(
      "SELECT trace_parent FROM workflow_runs WHERE id = $1",
      [runId],
    );
    const runParent = runs[0]?.trace_parent;
    assert.match(
      runParent ?? "",
      /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/,
      "the run's stored context is not sampled",
    );
    // No attempt span, no handler span, no user span was recorded for it.
    assert.deepEqual(
      tracing
        .spans()
        .slice(before)
        .filter((s) => attr(s, "nexusflow.run_id") === runId || s.name === "user work")
        .map((s) => s.name),
      [],
    );
    // Its events name the run's own (unsampled) context: no attempt span was made to name.
    const events = await outboxEvents(pool, [runId]);
    assert.ok(events.length > 0);
    for (const e of events) assert.equal(e.traceContext?.["traceparent"], runParent);
  });
});
