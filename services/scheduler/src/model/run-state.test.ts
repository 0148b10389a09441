import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RunStatus, RunStatusSchema, TaskStatusSchema, type TaskStatus } from "@nexusflow/gen";
import {
  ACTIVE_LEASE,
  TERMINAL_RUN_STATUSES,
  TERMINAL_TASK_STATUSES,
  newRunState,
  runStatusName,
  runTraceContext,
  runTraceSampled,
  taskStatusName,
} from "./run-state.js";
import type { CompiledWorkflow } from "../dag/index.js";

describe("stored states", () => {
  it("are the names of the generated enums, without their prefix", () => {
    for (const v of RunStatusSchema.values) {
      if (v.number === 0) continue;
      assert.equal(`RUN_STATUS_${runStatusName(v.number as RunStatus.PENDING)}`, v.name);
      assert.equal(RunStatus[runStatusName(v.number as RunStatus.PENDING)], v.number);
    }
    for (const v of TaskStatusSchema.values) {
      if (v.number === 0) continue;
      assert.equal(`TASK_STATUS_${taskStatusName(v.number as TaskStatus.PENDING)}`, v.name);
    }
  });

  it("name the final and the leased states", () => {
    assert.deepEqual([...TERMINAL_RUN_STATUSES].sort(), [
      "CANCELLED",
      "COMPENSATED",
      "COMPENSATION_FAILED",
      "FAILED",
      "SUCCEEDED",
      "TIMED_OUT",
    ]);
    assert.deepEqual([...TERMINAL_TASK_STATUSES].sort(), ["CANCELLED", "FAILED", "SKIPPED", "SUCCEEDED"]);
    assert.deepEqual([...ACTIVE_LEASE].sort(), ["LEASED", "RUNNING"]);
  });
});

describe("a run's trace", () => {
  const sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  const sampledOut = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

  it("is recorded when its traceparent's sampled flag is set, and not without a traceparent", () => {
    assert.equal(runTraceSampled(sampled), true);
    assert.equal(runTraceSampled("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03"), true);
    assert.equal(runTraceSampled(sampledOut), false);
    assert.equal(runTraceSampled(null), false);
    assert.equal(runTraceSampled("00-short-01"), false);
  });

  it("has one frozen context object per run, made with the run, none with tracing off", () => {
    const workflow = { name: "w", version: 1, timeoutMs: null } as unknown as CompiledWorkflow;
    const init = {
      definitionId: 1,
      workflow,
      input: null,
      idempotencyKey: null,
      labels: {},
      now: new Date(),
    };
    const run = newRunState({ ...init, traceParent: sampledOut });
    assert.deepEqual(run.traceContext, { traceparent: sampledOut });
    assert.ok(Object.isFrozen(run.traceContext));
    assert.equal(run.traceSampled, false);
    assert.equal(newRunState({ ...init, traceParent: sampled }).traceSampled, true);
    const untraced = newRunState(init);
    assert.equal(untraced.traceContext, null);
    assert.equal(untraced.traceSampled, false);
    assert.deepEqual(runTraceContext(sampled), { traceparent: sampled });
  });
});
