/** A step's attempts on one time axis (ui/src/timeline.ts). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { TaskKind, TaskRunSchema, TaskStatus } from "@nexusflow/gen";
import { formatDuration, timelineRows } from "../src/timeline";

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

describe("timeline", () => {
  it("puts a step's attempts and its compensation's on one axis, a running one up to now", () => {
    const step = create(TaskRunSchema, {
      id: "t1",
      stepId: "charge",
      kind: TaskKind.STEP,
      attempts: [
        {
          number: 1,
          executorId: "ex-1",
          leaseTime: timestampFromMs(T0),
          startTime: timestampFromMs(T0 + 100),
          endTime: timestampFromMs(T0 + 600),
          status: TaskStatus.FAILED,
          error: { type: "CARD_DECLINED", message: "declined" },
        },
        {
          number: 2,
          executorId: "ex-2",
          leaseTime: timestampFromMs(T0 + 1000),
          startTime: timestampFromMs(T0 + 1050),
          status: TaskStatus.RUNNING,
        },
      ],
    });
    const compensation = create(TaskRunSchema, {
      id: "t2",
      stepId: "charge.compensation",
      kind: TaskKind.COMPENSATION,
      attempts: [{ number: 1, leaseTime: timestampFromMs(T0 + 200), status: TaskStatus.LEASED }],
    });
    const timeline = timelineRows(
      [
        { title: "Task", task: step },
        { title: "Compensation", task: compensation },
      ],
      T0 + 3000,
    );
    assert.ok(timeline !== undefined);
    assert.equal(timeline.from, T0);
    assert.equal(timeline.to, T0 + 3000, "open attempts reach now");
    assert.deepEqual(
      timeline.rows.map((r) => [r.label, r.status, r.executorId, r.leased, r.started, r.ended, r.error]),
      [
        ["Task #1", "failed", "ex-1", T0, T0 + 100, T0 + 600, "CARD_DECLINED: declined"],
        ["Task #2", "running", "ex-2", T0 + 1000, T0 + 1050, undefined, ""],
        ["Compensation #1", "leased", "", T0 + 200, undefined, undefined, ""],
      ],
    );
  });

  it("has nothing to draw without attempts, and spans at least a millisecond", () => {
    assert.equal(timelineRows([{ title: "Task", task: create(TaskRunSchema, {}) }], T0), undefined);
    const instant = create(TaskRunSchema, {
      attempts: [{ number: 1, startTime: timestampFromMs(T0), endTime: timestampFromMs(T0) }],
    });
    const timeline = timelineRows([{ title: "Task", task: instant }], T0);
    assert.equal(timeline?.to, T0 + 1);
  });

  it("says durations in the unit that reads best", () => {
    assert.equal(formatDuration(-5), "0 ms");
    assert.equal(formatDuration(850), "850 ms");
    assert.equal(formatDuration(1234), "1.2 s");
    assert.equal(formatDuration(42_000), "42 s");
    assert.equal(formatDuration(184_000), "3 min 4 s");
  });
});
