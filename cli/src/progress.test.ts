import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { RunSchema, RunStatus, TaskStatus } from "@nexusflow/gen";
import { RunProgress, formatDuration, formatTaskChange, isTerminal } from "./progress.js";
import { createStyle } from "./style.js";

const plain = createStyle(false);

function run(
  tasks: {
    id: string;
    status: TaskStatus;
    executor?: string;
    startMs?: number;
    endMs?: number;
    skipReason?: string;
  }[],
) {
  return create(RunSchema, {
    id: "r",
    status: RunStatus.RUNNING,
    tasks: tasks.map((t) => ({
      id: t.id,
      stepId: t.id,
      status: t.status,
      skipReason: t.skipReason ?? "",
      attempts:
        t.executor === undefined
          ? []
          : [
              {
                number: 1,
                executorId: t.executor,
                ...(t.startMs === undefined ? {} : { startTime: timestampFromMs(t.startMs) }),
                ...(t.endMs === undefined ? {} : { endTime: timestampFromMs(t.endMs) }),
              },
            ],
    })),
  });
}

describe("RunProgress", () => {
  it("reports each task state change once, not initial PENDING states", () => {
    const progress = new RunProgress();
    assert.deepEqual(
      progress.update(
        run([
          { id: "a", status: TaskStatus.PENDING },
          { id: "b", status: TaskStatus.PENDING },
        ]),
      ),
      [],
    );
    const running = progress.update(
      run([
        { id: "a", status: TaskStatus.RUNNING, executor: "executor-1", startMs: 1000 },
        { id: "b", status: TaskStatus.PENDING },
      ]),
    );
    assert.deepEqual(
      running.map((c) => [c.stepId, c.status, c.executorId]),
      [["a", TaskStatus.RUNNING, "executor-1"]],
    );
    const done = progress.update(
      run([
        { id: "a", status: TaskStatus.SUCCEEDED, executor: "executor-1", startMs: 1000, endMs: 1250 },
        { id: "b", status: TaskStatus.SKIPPED, skipReason: "condition" },
      ]),
    );
    assert.deepEqual(
      done.map((c) => formatTaskChange(c, plain, 4)),
      ["  a    SUCCEEDED   executor-1  #1 250ms", "  b    SKIPPED                    (condition)"],
    );
    assert.deepEqual(
      progress.update(
        run([
          { id: "a", status: TaskStatus.SUCCEEDED },
          { id: "b", status: TaskStatus.SKIPPED },
        ]),
      ),
      [],
    );
  });

  it("knows terminal run states and formats durations", () => {
    assert.equal(isTerminal(create(RunSchema, { status: RunStatus.SUCCEEDED })), true);
    assert.equal(isTerminal(create(RunSchema, { status: RunStatus.COMPENSATING })), false);
    assert.deepEqual(
      [formatDuration(12), formatDuration(1500), formatDuration(125_000)],
      ["12ms", "1.5s", "2m05s"],
    );
  });
});
