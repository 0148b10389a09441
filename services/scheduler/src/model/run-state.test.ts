import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RunStatus, RunStatusSchema, TaskStatusSchema, type TaskStatus } from "@nexusflow/gen";
import {
  ACTIVE_LEASE,
  TERMINAL_RUN_STATUSES,
  TERMINAL_TASK_STATUSES,
  runStatusName,
  taskStatusName,
} from "./run-state.js";

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
