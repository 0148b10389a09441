/** `runs get` and `runs watch` show why a queued task waits (TaskRun.pending_reason). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { RunSchema, RunStatus, TaskErrorSchema, TaskStatus } from "@nexusflow/gen";
import { describeRun } from "./runs-command.js";
import { RunProgress, formatTaskChange } from "./progress.js";
import { createStyle } from "./style.js";

const REASON = 'no executor advertises type "charge-card"';

/** A running order run: validate done, charge queued with `reason`. */
function orderRun(reason: string, chargeStatus = TaskStatus.QUEUED) {
  return create(RunSchema, {
    id: "run-1",
    workflowName: "order",
    workflowVersion: 1,
    status: RunStatus.RUNNING,
    createTime: timestampFromMs(Date.UTC(2025, 0, 31, 12, 0, 0)),
    tasks: [
      {
        id: "t-validate",
        stepId: "validate",
        status: TaskStatus.SUCCEEDED,
        attempts: [
          {
            number: 1,
            executorId: "exec-1",
            startTime: timestampFromMs(Date.UTC(2025, 0, 31, 12, 0, 0)),
            endTime: timestampFromMs(Date.UTC(2025, 0, 31, 12, 0, 0, 12)),
          },
        ],
      },
      { id: "t-charge", stepId: "charge", status: chargeStatus, pendingReason: reason },
    ],
  });
}

describe("pending reasons in the CLI", () => {
  it("runs get shows the reason beside the waiting task", () => {
    const lines = describeRun(orderRun(REASON), false).split("\n");
    assert.deepEqual(lines.slice(2), [
      "",
      "STEP      STATUS     ATTEMPT  EXECUTOR  DURATION  ERROR",
      "validate  SUCCEEDED  1        exec-1    12ms",
      `charge    QUEUED     0        -         -         waiting: ${REASON}`,
    ]);
  });

  it("runs get keeps the latest error of a task that waits again", () => {
    const run = orderRun('all 2 executors for type "charge-card" are busy (no credit)');
    const charge = run.tasks[1];
    assert.ok(charge);
    charge.error = create(TaskErrorSchema, {
      type: "SCHEDULE_TO_START_TIMEOUT",
      message: "no executor started the task",
      retryable: true,
    });
    assert.match(
      describeRun(run, false),
      /charge {4}QUEUED .*waiting: all 2 executors for type "charge-card" are busy \(no credit\); SCHEDULE_TO_START_TIMEOUT: no executor started the task$/m,
    );
  });

  it("runs watch prints the reason when a task starts waiting and when it changes, not when it clears", () => {
    const progress = new RunProgress();
    const plain = createStyle(false);
    const print = (run: ReturnType<typeof orderRun>) =>
      progress.update(run).map((c) => formatTaskChange(c, plain, 8));

    assert.deepEqual(print(orderRun(REASON)), [
      "  validate SUCCEEDED   exec-1      #1 12ms",
      `  charge   QUEUED                     waiting: ${REASON}`,
    ]);
    assert.deepEqual(print(orderRun(REASON)), [], "the same reason again is no change");
    const busy = 'the one executor for type "charge-card" is busy (no credit)';
    assert.deepEqual(print(orderRun(busy)), [`  charge   QUEUED                     waiting: ${busy}`]);
    // About to be leased: the reason clears, and the next state (LEASED) is the line that says so.
    assert.deepEqual(print(orderRun("")), []);
    assert.deepEqual(print(orderRun("", TaskStatus.LEASED)), ["  charge   LEASED"]);
  });

  it("runs watch does not print a pending step's reason as its dependencies finish", () => {
    const progress = new RunProgress();
    const plain = createStyle(false);
    const print = (reason: string, status = TaskStatus.PENDING) =>
      progress.update(orderRun(reason, status)).map((c) => formatTaskChange(c, plain, 8));
    assert.deepEqual(print("unfinished dependencies: validate, reserve"), [
      "  validate SUCCEEDED   exec-1      #1 12ms",
    ]);
    assert.deepEqual(print("unfinished dependencies: reserve"), []);
    assert.deepEqual(print(REASON, TaskStatus.QUEUED), [
      `  charge   QUEUED                     waiting: ${REASON}`,
    ]);
  });

  it("colours the reason as a warning", () => {
    const [change] = new RunProgress().update(orderRun(REASON)).slice(1);
    assert.ok(change);
    assert.ok(
      formatTaskChange(change, createStyle(true)).includes("\u001b[33mwaiting: no executor advertises"),
    );
  });
});
