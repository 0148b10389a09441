/**
 * What a WatchRun message carries of a run (WatchState, api/watch-run.ts): the whole run while a
 * client with the usual limits reads it; without its values, values_omitted set, when it encodes
 * over 3 MiB (changes of its tasks' states still sent); always whole on a stream forwarded by
 * another replica (whose client reads any size, and which decides for its own caller); and the
 * flag passed on when the snapshot came without its values already (an owner's message).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import {
  RunSchema,
  RunStatus,
  TaskErrorSchema,
  TaskRunSchema,
  TaskStatus,
  WatchRunResponseSchema,
  type Run,
  type WatchRunResponse,
} from "@nexusflow/gen";
import { MAX_RUN_ANSWER_BYTES, leanRun } from "../../src/api/convert.js";
import { WatchState } from "../../src/api/watch-run.js";

const BLOB = "x".repeat(3_500_000);

/** A run of `tasks` tasks (ids t0, t1, ...) whose input is `input`, the first task in `status`. */
function runOf(input: unknown, status: TaskStatus, tasks = 1, stepIdLength = 4): Run {
  return create(RunSchema, {
    id: "0194b3c2-6a8e-7b3c-9d4e-5f6a7b8c9d0e",
    workflowName: "w",
    workflowVersion: 1,
    status: RunStatus.RUNNING,
    input: jsonToValue(input),
    tasks: Array.from({ length: tasks }, (_, i) =>
      create(TaskRunSchema, {
        id: `t${i}`,
        stepId: `s${i}`.padEnd(stepIdLength, "-"),
        status: i === 0 ? status : TaskStatus.PENDING,
        input: jsonToValue({ i }),
        error: create(TaskErrorSchema, { type: "E", message: "m", details: jsonToValue({ why: "x" }) }),
      }),
    ),
  });
}

/** A WatchState and what it sent. */
function watchState(whole = false): { state: WatchState; sent: WatchRunResponse[] } {
  const sent: WatchRunResponse[] = [];
  return {
    state: new WatchState((m) => {
      sent.push(m);
      return Promise.resolve();
    }, whole),
    sent,
  };
}

describe("what a WatchRun message carries of a run", () => {
  it("a run over 3 MiB goes without its values, saying so, and its tasks' changes are still sent", async () => {
    const { state, sent } = watchState();
    await state.offer(runOf({ blob: BLOB }, TaskStatus.QUEUED));
    await state.offer(runOf({ blob: BLOB }, TaskStatus.QUEUED)); // unchanged: nothing sent
    await state.offer(runOf({ blob: BLOB }, TaskStatus.RUNNING));
    assert.equal(sent.length, 2);
    for (const m of sent) {
      assert.equal(m.valuesOmitted, true);
      assert.equal(m.run?.input, undefined);
      assert.equal(m.run?.tasks[0]?.input, undefined);
      assert.equal(m.run?.tasks[0]?.error?.details, undefined, "error details left out");
      assert.equal(m.run?.tasks[0]?.error?.message, "m", "the error itself kept");
      assert.ok(toBinary(WatchRunResponseSchema, m).length < MAX_RUN_ANSWER_BYTES);
    }
    assert.deepEqual(
      sent.map((m) => TaskStatus[m.run?.tasks[0]?.status ?? 0]),
      ["QUEUED", "RUNNING"],
    );
    assert.deepEqual(sent[1]?.changedTaskIds, ["t0"]);
  });

  it("a run that fits goes whole, the flag unset", async () => {
    const { state, sent } = watchState();
    await state.offer(runOf({ blob: "small" }, TaskStatus.QUEUED));
    assert.equal(sent[0]?.valuesOmitted, false);
    assert.deepEqual(valueToJson(sent[0]?.run?.input), { blob: "small" });
    assert.deepEqual(valueToJson(sent[0]?.run?.tasks[0]?.error?.details), { why: "x" });
  });

  it("a run too large even without its values comes in the BASIC view; its tasks' changes still send", async () => {
    // 40,000 tasks of 100-character step ids: over 3 MiB without any value.
    const big = (status: TaskStatus): Run => runOf({ blob: "small" }, status, 40_000, 100);
    assert.ok(toBinary(RunSchema, leanRun(big(TaskStatus.QUEUED))).length > MAX_RUN_ANSWER_BYTES);
    const { state, sent } = watchState();
    await state.offer(big(TaskStatus.QUEUED));
    await state.offer(big(TaskStatus.RUNNING));
    assert.equal(sent.length, 2, "the task's change is seen in the run as read, not as sent");
    assert.ok(sent.every((m) => m.valuesOmitted && m.run?.tasks.length === 0));
    assert.deepEqual(sent[1]?.changedTaskIds, ["t0"]);
  });

  it("a stream forwarded by another replica carries the whole run, whatever its size", async () => {
    const { state, sent } = watchState(true);
    await state.offer(runOf({ blob: BLOB }, TaskStatus.QUEUED));
    assert.equal(sent[0]?.valuesOmitted, false);
    assert.equal((valueToJson(sent[0]?.run?.input) as { blob: string }).blob.length, BLOB.length);
  });

  it("a snapshot that came without its values (an owner said so) is sent saying so", async () => {
    const { state, sent } = watchState();
    await state.offer(leanRun(runOf({ blob: "small" }, TaskStatus.QUEUED)), true);
    assert.equal(sent[0]?.valuesOmitted, true);
    assert.equal(sent[0]?.run?.input, undefined);
  });
});
