import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BATCH_ITEMS, jsonToValue } from "@nexusflow/common";
import { LeaseKeySchema, LeaseSchema, SessionResponseSchema, type Lease } from "@nexusflow/gen";
import type { RunState, TaskState } from "../model/run-state.js";
import { encodeLease, leaseFrames, leaseValue } from "./messages.js";

const leaseMessage = (i: number, input: unknown = { i }): Lease =>
  create(LeaseSchema, {
    key: { taskRunId: `t${i}`, attempt: 1, fencingToken: BigInt(i) },
    runId: `r${i}`,
    input: jsonToValue(input as never),
  });
const lease = (i: number, input: unknown = { i }): Uint8Array =>
  toBinary(LeaseSchema, leaseMessage(i, input));

/**
 * A task with every field a lease reads set (or left at its zero value, with `zero`); an element of
 * a map step with `elementIndex`.
 */
function leasedTask(input: unknown, zero = false, elementIndex?: number): { run: RunState; task: TaskState } {
  const task = {
    id: zero ? "" : "7f1c9a52-3c1e-4e53-9d0b-1c2d3e4f5a6b",
    attempt: zero ? 0 : 3,
    fencingToken: zero ? 0 : 2 ** 40 + 7,
    runId: zero ? "" : "0d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a",
    stepId: zero ? "" : "charge-é😀",
    type: zero ? "" : "http",
    kind: zero ? "STEP" : "COMPENSATION",
    input,
    leaseExpiresAt: zero ? null : new Date(1_796_563_213_943),
    ...(elementIndex === undefined ? {} : { elementIndex }),
  };
  const run = {
    workflow: {
      name: zero ? "" : "orders",
      stepsById: new Map([[task.stepId, { timeouts: { heartbeatMs: zero ? 0 : 30_000 } }]]),
    },
  };
  return { run: run as unknown as RunState, task: task as unknown as TaskState };
}

/** The frames decoded: each as its case and the task run ids it carries. */
const decoded = (frames: Uint8Array[]) =>
  frames.map((bytes) => {
    const m = fromBinary(SessionResponseSchema, bytes).message;
    if (m.case === "leases") return { case: m.case, ids: m.value.leases.map((l) => l.key?.taskRunId) };
    if (m.case === "lease") return { case: m.case, ids: [m.value.key?.taskRunId] };
    throw new Error(`unexpected ${m.case}`);
  });

describe("lease frames", () => {
  it("puts a pass's leases in LeaseBatch frames of at most BATCH_ITEMS, in order", () => {
    const leases = Array.from({ length: BATCH_ITEMS + 3 }, (_, i) => lease(i));
    const frames = decoded(leaseFrames(leases));
    assert.deepEqual(
      frames.map((f) => [f.case, f.ids.length]),
      [
        ["leases", BATCH_ITEMS],
        ["leases", 3],
      ],
    );
    assert.deepEqual(
      frames.flatMap((f) => f.ids),
      leases.map((l) => fromBinary(LeaseSchema, l).key?.taskRunId),
    );
  });

  it("keeps each frame within the byte bound; a lease larger than it goes alone, as a Lease", () => {
    const big = "x".repeat(700_000);
    const leases = [
      lease(1),
      lease(2, { big }),
      lease(3, { big }),
      lease(4),
      lease(5, { b: "x".repeat(1_200_000) }),
    ];
    const frames = leaseFrames(leases);
    assert.deepEqual(
      decoded(frames).map((f) => [f.case, f.ids]),
      [
        ["leases", ["t1", "t2"]],
        ["leases", ["t3", "t4"]],
        ["lease", ["t5"]],
      ],
    );
    for (const frame of frames.slice(0, 2))
      assert.ok(frame.byteLength <= 1024 * 1024, `${frame.byteLength} bytes`);
  });

  it("sends a lone lease as a Lease, and nothing for none", () => {
    assert.deepEqual(decoded(leaseFrames([lease(7)])), [{ case: "lease", ids: ["t7"] }]);
    assert.deepEqual(leaseFrames([]), []);
  });
});

describe("a lease encoded by hand", () => {
  // Every kind of Value is in common's value-wire.test.ts; here, one of each shape a lease carries.
  const inputs: unknown[] = [null, undefined, -0, "é😀", { a: [1, "b", null, true, {}], "": [] }];

  it("is toBinary's encoding of the Lease message, for every kind of input and field", () => {
    for (const zero of [false, true])
      for (const traceContext of [undefined, {}, { traceparent: "00-ab-cd-01", tracestate: "k=v" }])
        for (const elementIndex of [undefined, 0, 9999])
          for (const input of inputs) {
            const { run, task } = leasedTask(input, zero, elementIndex);
            assert.deepEqual(
              encodeLease(run, task, traceContext),
              toBinary(LeaseSchema, leaseValue(run, task, traceContext)),
              `${JSON.stringify(input)} ${String(zero)} ${JSON.stringify(traceContext)} ${elementIndex}`,
            );
          }
    // Without its run (a lease sent while the run is being moved): no workflow name or heartbeat.
    const { task } = leasedTask({ a: 1 });
    assert.deepEqual(encodeLease(undefined, task), toBinary(LeaseSchema, leaseValue(undefined, task)));
  });

  it("fails for an input with no JSON form exactly as jsonToValue does", () => {
    let deep: unknown = 1;
    for (let i = 0; i < 150; i++) deep = i % 2 === 0 ? { d: deep } : [deep];
    for (const input of [Number.NaN, { a: Infinity }, [1n], { d: new Date(0) }, { a: undefined }, deep]) {
      const { run, task } = leasedTask(input);
      let expected: unknown;
      try {
        expected = toBinary(LeaseSchema, leaseValue(run, task));
      } catch (e) {
        expected = e;
      }
      let actual: unknown;
      try {
        actual = encodeLease(run, task);
      } catch (e) {
        actual = e;
      }
      assert.deepEqual(
        actual,
        expected,
        JSON.stringify(input, (_, v: unknown) => (typeof v === "bigint" ? `${v}n` : v)),
      );
    }
  });

  it("encodes each lease alone: after a larger one, and after one whose input failed half-way", () => {
    const exact = (input: unknown, traceContext?: Record<string, string>): Uint8Array => {
      const { run, task } = leasedTask(input);
      const bytes = encodeLease(run, task, traceContext);
      assert.deepEqual(bytes, toBinary(LeaseSchema, leaseValue(run, task, traceContext)));
      return bytes;
    };
    const first = exact({ a: 1 }, { traceparent: "00-ab-cd-01" });
    const kept = first.slice();
    exact({ big: "x".repeat(300_000), list: [1, 2, { c: "é😀" }] });
    const small = exact(null);
    assert.ok(small.byteLength < 200, `${small.byteLength} bytes: only its own`);
    // What an earlier call returned is its own, not a view the next lease writes over.
    assert.deepEqual(first, kept);
    let deep: unknown = 1;
    for (let i = 0; i < 150; i++) deep = i % 2 === 0 ? { d: deep } : [deep];
    for (const failing of [[1n], { a: [1, "x", { b: [2n] }] }, deep]) {
      const { run, task } = leasedTask(failing);
      assert.throws(() => encodeLease(run, task));
      exact({ after: [1, "two", { three: 3 }] }, { traceparent: "00-ab-cd-01" });
      exact(undefined);
    }
  });

  it("carries a map element's index, 0 included, and none for another task", () => {
    const decode = (task: TaskState): Lease => fromBinary(LeaseSchema, encodeLease(undefined, task));
    assert.equal(decode(leasedTask({}, false, 0).task).elementIndex, 0);
    assert.equal(decode(leasedTask({}, false, 7).task).elementIndex, 7);
    assert.equal(decode(leasedTask({}).task).elementIndex, undefined);
    assert.equal(leaseValue(undefined, leasedTask({}, false, 3).task).elementIndex, 3);
  });

  it("knows every field of Lease and LeaseKey (teach encodeLease a new one)", () => {
    assert.deepEqual(
      LeaseSchema.fields.map((f) => f.number),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    );
    assert.deepEqual(
      LeaseKeySchema.fields.map((f) => f.number),
      [1, 2, 3, 4],
    );
  });
});
