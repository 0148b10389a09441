/**
 * boundedRun: the run an answer carries in RUN_VIEW_FULL is whole only while a client with gRPC's
 * and protobuf's usual limits reads it: at most MAX_RUN_ANSWER_BYTES encoded, and nested within the
 * 100 messages protobuf decoders read. Otherwise it is the BASIC view of the same run, exactly what
 * runBasic makes of its row. The nesting rule is checked against protobuf-es' own decoder for every
 * place of a run that holds a JSON value.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { jsonToValue } from "@nexusflow/common";
import {
  GetRunResponseSchema,
  ListRunsResponseSchema,
  RunSchema,
  StartRunResponseSchema,
  type Run,
} from "@nexusflow/gen";
import {
  MAX_RUN_ANSWER_BYTES,
  basicOf,
  boundedRun,
  encodedRunSize,
  runBasic,
  runDetail,
  runTooDeep,
} from "../../src/api/convert.js";
import type { RunDetail } from "../../src/persistence/run-store.js";

/** `levels` levels of arrays around 1. */
function nested(levels: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < levels; i++) v = [v];
  return v;
}

const RUN_ID = "0194b3c2-6a8e-7b3c-9d4e-5f6a7b8c9d0e";

/** A run's rows as the store reads them: one task with one failed attempt. */
function detail(input: unknown, taskInput: unknown): RunDetail {
  const now = new Date("2026-01-02T03:04:05Z");
  return {
    run: {
      id: RUN_ID,
      workflowName: "w",
      workflowVersion: 2,
      status: "FAILED",
      input,
      output: null,
      error: { type: "KABOOM", message: "step only failed", retryable: false },
      idempotencyKey: "key-1",
      labels: { team: "a" },
      createdAt: now,
      endedAt: now,
      deadline: null,
      signals: [{ name: "go", key: null, stepId: null, payload: { p: 1 }, at: now.toISOString() }],
      parentRunId: null,
      parentStepId: null,
      rerunOf: null,
      rerun: null,
    },
    tasks: [
      {
        id: "t1",
        runId: RUN_ID,
        stepId: "only",
        kind: "STEP",
        type: "t",
        status: "FAILED",
        input: taskInput,
        output: null,
        outputRef: null,
        error: { type: "KABOOM", message: "boom", retryable: false },
        nextAttemptAt: null,
        skipReason: null,
        createdAt: now,
        endedAt: now,
      },
    ],
    attempts: new Map(),
    reruns: [],
  } as unknown as RunDetail;
}

/** Whether protobuf-es (limit 100) decodes `run` in each answer that carries one. */
function decodes(run: Run): boolean {
  const answers = [
    [GetRunResponseSchema, create(GetRunResponseSchema, { run })],
    [StartRunResponseSchema, create(StartRunResponseSchema, { run, created: true })],
    [ListRunsResponseSchema, create(ListRunsResponseSchema, { runs: [run] })],
  ] as const;
  const results = answers.map(([schema, message]) => {
    try {
      fromBinary(schema, toBinary(schema, message as never));
      return true;
    } catch {
      return false;
    }
  });
  assert.ok(
    results.every((r) => r === results[0]),
    "every answer carries the run at the same depth",
  );
  return results[0] as boolean;
}

describe("boundedRun", () => {
  it("keeps a run that fits whole, and answers a larger one in the BASIC view its row would have", () => {
    const small = runDetail(detail({ n: 1 }, { n: 1 }));
    assert.equal(boundedRun(small), small);

    const blob = "x".repeat(2_000_000);
    const rows = detail({ blob }, { blob });
    const big = runDetail(rows);
    assert.ok(encodedRunSize(big) > MAX_RUN_ANSWER_BYTES, "input and task input: 4 MB");
    const bounded = boundedRun(big);
    assert.deepEqual(bounded, runBasic(rows.run), "the BASIC view of its row");
    assert.deepEqual(basicOf(big), runBasic(rows.run));
    assert.equal(bounded.tasks.length, 0, "no tasks: the mark of the BASIC view");
    assert.equal(bounded.input, undefined);
    assert.equal(bounded.id, RUN_ID);
    assert.equal(bounded.error?.type, "KABOOM", "the error stays");
    assert.ok(toBinary(RunSchema, bounded).length < 1024);
    assert.equal(big.input?.kind.case, "structValue", "the whole run is left as it was");

    // At the bound exactly it stays whole; a byte over, it does not.
    const at = (length: number): Run => runDetail(detail({ blob: "y".repeat(length) }, null));
    const base = encodedRunSize(at(0));
    let length = MAX_RUN_ANSWER_BYTES - base - 4;
    length += MAX_RUN_ANSWER_BYTES - encodedRunSize(at(length));
    assert.equal(encodedRunSize(at(length)), MAX_RUN_ANSWER_BYTES);
    assert.equal(boundedRun(at(length)).tasks.length, 1);
    assert.equal(boundedRun(at(length + 1)).tasks.length, 0);
  });

  it("answers a run nested deeper than clients decode in the BASIC view, wherever the value is", () => {
    type Init = MessageInitShape<typeof RunSchema>;
    const places: [string, (v: unknown) => Init][] = [
      ["input", (v) => ({ input: jsonToValue(v), tasks: [{}] })],
      ["output", (v) => ({ output: jsonToValue(v), tasks: [{}] })],
      ["error.details", (v) => ({ error: { details: jsonToValue(v) }, tasks: [{}] })],
      ["signals[].payload", (v) => ({ signals: [{ payload: jsonToValue(v) }], tasks: [{}] })],
      ["tasks[].input", (v) => ({ tasks: [{ input: jsonToValue(v) }] })],
      ["tasks[].output", (v) => ({ tasks: [{ output: jsonToValue(v) }] })],
      ["tasks[].error.details", (v) => ({ tasks: [{ error: { details: jsonToValue(v) } }] })],
      [
        "tasks[].attempts[].error.details",
        (v) => ({ tasks: [{ attempts: [{ error: { details: jsonToValue(v) } }] }] }),
      ],
    ];
    for (const [place, make] of places) {
      let deepest = -1;
      for (let levels = 40; levels <= 50; levels++) {
        for (const leaf of [1, [], {}]) {
          const value: unknown = JSON.parse(
            JSON.stringify(nested(levels)).replace("1", JSON.stringify(leaf)),
          );
          const run = create(RunSchema, { id: RUN_ID, ...make(value) });
          const readable = decodes(run);
          assert.equal(
            runTooDeep(run),
            !readable,
            `${place}, ${levels} levels around ${JSON.stringify(leaf)}`,
          );
          assert.equal(boundedRun(run).tasks.length, readable ? 1 : 0, place);
          if (readable && leaf === 1) deepest = levels;
        }
      }
      assert.ok(deepest >= 46 && deepest < 50, `${place}: the bound (${deepest} levels) was crossed`);
    }
  });
});
