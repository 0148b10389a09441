/**
 * AttemptSpans: an attempt's span follows its writes; a run that leaves memory before it ends
 * (parked, or its partition moved to another replica) ends its open spans and is forgotten; a run
 * sampled out makes none.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startTestTracing, type TestTracing } from "@nexusflow/common/telemetry/testing";
import type { CompiledWorkflow } from "../dag/index.js";
import {
  type AttemptState,
  type RunState,
  leasedAttempt,
  newRunState,
  newTaskState,
} from "../model/run-state.js";
import { AttemptSpans } from "./tracing.js";

const SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const SAMPLED_OUT = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

function runWithTask(traceParent: string): { run: RunState; attempt: AttemptState } {
  const workflow = { name: "w", version: 1, timeoutMs: null } as unknown as CompiledWorkflow;
  const run = newRunState({
    definitionId: 1,
    workflow,
    input: null,
    idempotencyKey: null,
    labels: {},
    traceParent,
    now: new Date(),
  });
  const task = newTaskState(run.id, "charge", "STEP", "billing.charge", 0, new Date());
  task.attempt = 1;
  run.tasks.set(task.stepId, task);
  task.fencingToken = 1;
  return { run, attempt: leasedAttempt(task, "e1", new Date()) };
}

describe("AttemptSpans", () => {
  let tracing: TestTracing;
  before(async () => (tracing = await startTestTracing()));
  after(() => tracing.stop());

  it("ends the open span of a run that leaves memory unended, and forgets its tasks", () => {
    const spans = new AttemptSpans();
    const { run, attempt } = runWithTask(SAMPLED);
    const task = [...run.tasks.values()][0]!;
    spans.written(run, task, attempt);
    assert.match(spans.traceparent(task.id) ?? "", /^00-0af7651916cd43dd8448eb211c80319c-/);
    const before = tracing.spans().length;

    spans.runLeft(run);
    const ended = tracing.spans().slice(before);
    assert.deepEqual(
      ended.map((s) => [s.name, s.attributes["nexusflow.attempt_status"]]),
      [["attempt charge", "LEFT"]],
    );
    assert.equal(spans.traceparent(task.id), undefined);
    // Written again (the run loaded back, the attempt adopted): a new span, ended with the attempt.
    spans.written(run, task, attempt);
    spans.written(run, task, { ...attempt, status: "SUCCEEDED", endedAt: new Date() });
    assert.deepEqual(
      tracing
        .spans()
        .slice(before + 1)
        .map((s) => s.attributes["nexusflow.attempt_status"]),
      ["SUCCEEDED"],
    );
  });

  it("makes no span for a sampled-out run, leaving or not", () => {
    const spans = new AttemptSpans();
    const { run, attempt } = runWithTask(SAMPLED_OUT);
    const task = [...run.tasks.values()][0]!;
    const before = tracing.spans().length;
    spans.written(run, task, attempt);
    spans.runLeft(run);
    assert.equal(tracing.spans().length, before);
    assert.equal(spans.traceContext(task, run), run.traceContext);
  });
});
