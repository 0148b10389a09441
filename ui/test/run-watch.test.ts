/**
 * The run page's view of a WatchRun message (ui/src/run-watch.ts): a run sent without its values
 * (values_omitted) keeps the values shown before, states taken from the message; a whole message
 * is shown as it is. Before, the page took every message's run as it came, and a large run's
 * input and output panes went blank at its first message.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema, timestampFromMs, type Value } from "@bufbuild/protobuf/wkt";
import {
  AttemptSchema,
  RunSchema,
  RunSignalSchema,
  RunStatus,
  TaskErrorSchema,
  TaskRunSchema,
  TaskStatus,
  type Run,
  type TaskError,
} from "@nexusflow/gen";
import { mergeWatchedRun, watchedRun } from "../src/run-watch";

const value = (json: unknown) => fromJson(ValueSchema, json as never);
const json = (v: Value | undefined) => (v === undefined ? undefined : toJson(ValueSchema, v));

/** The run with its values: "a" failed its first attempt (waiting to retry), "b" done, a signal. */
function whole(): Run {
  const error = () => create(TaskErrorSchema, { type: "T", message: "boom", details: value({ why: 1 }) });
  return create(RunSchema, {
    id: "r1",
    status: RunStatus.RUNNING,
    input: value({ blob: "in" }),
    tasks: [
      create(TaskRunSchema, {
        id: "ta",
        stepId: "a",
        status: TaskStatus.RETRY_WAIT,
        input: value({ a: 1 }),
        error: error(),
        attempts: [create(AttemptSchema, { number: 1, status: TaskStatus.FAILED, error: error() })],
      }),
      create(TaskRunSchema, {
        id: "tb",
        stepId: "b",
        status: TaskStatus.SUCCEEDED,
        input: value({ b: 1 }),
        output: value({ b: "out" }),
      }),
    ],
    signals: [
      create(RunSignalSchema, { name: "go", payload: value({ p: 1 }), receiveTime: timestampFromMs(1000) }),
    ],
  });
}

/** `run` without its values, as the scheduler sends it. */
function lean(run: Run): Run {
  const bare = (e: TaskError | undefined): TaskError | undefined => {
    if (e === undefined) return undefined;
    const error = { ...e };
    delete error.details;
    return error;
  };
  return {
    ...run,
    input: undefined,
    output: undefined,
    error: bare(run.error),
    tasks: run.tasks.map((t) => ({
      ...t,
      input: undefined,
      output: undefined,
      error: bare(t.error),
      attempts: t.attempts.map((a) => ({ ...a, error: bare(a.error) })),
    })),
    signals: run.signals.map((s) => ({ ...s, payload: undefined })),
  };
}

describe("the run page's view of a WatchRun message", () => {
  it("keeps the values shown before for a message without them, its states taken", () => {
    const next = lean(whole());
    next.tasks[0]!.status = TaskStatus.RUNNING;
    next.tasks[0]!.attempts.push(create(AttemptSchema, { number: 2, status: TaskStatus.RUNNING }));
    const shown = watchedRun(whole(), { run: next, valuesOmitted: true });
    assert.equal(shown?.tasks[0]?.status, TaskStatus.RUNNING);
    assert.deepEqual(json(shown?.input), { blob: "in" });
    assert.deepEqual(json(shown?.tasks[0]?.input), { a: 1 });
    assert.deepEqual(json(shown?.tasks[0]?.error?.details), { why: 1 });
    assert.deepEqual(
      shown?.tasks[0]?.attempts.map((a) => [a.number, json(a.error?.details)]),
      [
        [1, { why: 1 }],
        [2, undefined],
      ],
    );
    assert.deepEqual(json(shown?.tasks[1]?.output), { b: "out" });
    assert.deepEqual(json(shown?.signals[0]?.payload), { p: 1 });
  });

  it("shows a whole message as it is, and drops details of an error that changed", () => {
    const fresh = whole();
    assert.equal(watchedRun(lean(whole()), { run: fresh, valuesOmitted: false }), fresh);
    assert.equal(watchedRun(whole(), { valuesOmitted: true }), undefined);
    const next = lean(whole());
    next.tasks[0]!.error = { ...next.tasks[0]!.error!, message: "another boom" };
    assert.equal(mergeWatchedRun(whole(), next).tasks[0]?.error?.details, undefined);
  });

  it("keeps the tasks shown before for a message in the BASIC view (no tasks)", () => {
    const basic = { ...lean(whole()), status: RunStatus.CANCELLED, tasks: [], signals: [] };
    const shown = mergeWatchedRun(whole(), basic);
    assert.equal(shown.status, RunStatus.CANCELLED);
    assert.deepEqual(
      shown.tasks.map((t) => t.id),
      ["ta", "tb"],
    );
  });
});
