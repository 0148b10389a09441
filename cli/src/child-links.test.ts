/** `runs get` shows a child run's parent, and a child workflow step's child run. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { RunSchema, RunStatus, TaskStatus } from "@nexusflow/gen";
import { describeRun } from "./runs-command.js";

const CREATED = timestampFromMs(Date.UTC(2026, 0, 31, 12, 0, 0));

describe("child workflow links in runs get", () => {
  it("names a parent's child runs, and a child's parent run and step", () => {
    const parent = create(RunSchema, {
      id: "run-1",
      workflowName: "order",
      workflowVersion: 1,
      status: RunStatus.RUNNING,
      createTime: CREATED,
      tasks: [
        { id: "t-pay", stepId: "pay", status: TaskStatus.SUCCEEDED, childRunId: "run-2" },
        {
          id: "t-ship",
          stepId: "ship",
          status: TaskStatus.WAITING,
          childRunId: "run-3",
          pendingReason: "waiting for child run run-3 (ship) to end",
        },
      ],
    });
    const lines = describeRun(parent, false).split("\n");
    assert.match(lines.find((l) => l.startsWith("pay")) ?? "", /child run run-2/);
    const ship = lines.find((l) => l.startsWith("ship")) ?? "";
    assert.match(ship, /waiting: waiting for child run run-3/);
    assert.doesNotMatch(ship, /; child run run-3/, "said once");
    assert.ok(!lines.some((l) => l.startsWith("child of")), "a root run has no parent line");

    const child = create(RunSchema, {
      id: "run-2",
      workflowName: "charge-card",
      workflowVersion: 1,
      status: RunStatus.RUNNING,
      createTime: CREATED,
      parentRunId: "run-1",
      parentStepId: "pay",
    });
    assert.ok(describeRun(child, false).split("\n").includes("child of run run-1 (step pay)"));
  });
});
