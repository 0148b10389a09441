/**
 * The scheduler refuses a lease whose rendered input no executor could take, before it is made or
 * sent: larger than 15 MiB as protobuf (INPUT_TOO_LARGE) or nested deeper than the 48 levels an
 * executor decodes (INPUT_TOO_DEEP). The size is the exact protobuf size (toBinary is the oracle at
 * the bound, for inputs of every JSON kind); the refusal, through the pure core, fails the task for
 * good with no attempt, lets the run go on, and leaves no lease standing.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { jsonToValue } from "@nexusflow/common";
import { LeaseSchema, SessionResponseSchema } from "@nexusflow/gen";
import {
  INPUT_TOO_DEEP,
  INPUT_TOO_LARGE,
  MAX_LEASE_INPUT_BYTES,
  MAX_LEASE_INPUT_DEPTH,
  leaseInputProblem,
  leaseStands,
} from "../../src/core/leasing.js";
import { beginRun, Simulation, workflowOf } from "../../src/core/simulation.js";

/** `levels` levels of arrays (or objects) around 1. */
function nested(levels: number, kind: "array" | "object"): unknown {
  let v: unknown = 1;
  for (let i = 0; i < levels; i++) v = kind === "array" ? [v] : { k: v };
  return v;
}

/** Bytes of `json` as a google.protobuf.Value, as the lease carries it. */
const encoded = (json: unknown): number => toBinary(ValueSchema, jsonToValue(json)).length;

/** Whether an executor decodes a lease with `input` (a SessionResponse, as it receives one). */
function executorDecodes(input: unknown): boolean {
  const lease = create(LeaseSchema, { runId: "r", input: jsonToValue(input) });
  const bytes = toBinary(
    SessionResponseSchema,
    create(SessionResponseSchema, { message: { case: "leases", value: { leases: [lease] } } }),
  );
  try {
    fromBinary(SessionResponseSchema, bytes);
    return true;
  } catch {
    return false;
  }
}

describe("leaseInputProblem", () => {
  it("measures the exact protobuf size: at the bound an input goes, one byte over it is INPUT_TOO_LARGE", () => {
    // Inputs of every kind (multi-byte keys and text, numbers, booleans, nulls, nested lists and
    // objects), padded by a string to land exactly on the bound.
    const shapes: ((pad: string) => unknown)[] = [
      (pad) => pad,
      (pad) => ({ pad }),
      (pad) => [pad, 1.5, true, null, { "clé-é": "naïve ☃ 😀", n: [1, [2, [3, {}]]] }],
      (pad) => ({
        items: Array.from({ length: 300 }, (_, i) => ({ i, ok: i % 2 === 0, s: "é".repeat(i) })),
        pad,
      }),
    ];
    for (const [n, shape] of shapes.entries()) {
      const base = encoded(shape(""));
      let length = MAX_LEASE_INPUT_BYTES - base - 8;
      length += MAX_LEASE_INPUT_BYTES - encoded(shape("x".repeat(length)));
      const at = shape("x".repeat(length));
      assert.equal(encoded(at), MAX_LEASE_INPUT_BYTES, `shape ${n} lands on the bound`);
      assert.equal(leaseInputProblem(at), null, `shape ${n} at the bound`);
      const over = shape("x".repeat(length + 1));
      assert.equal(encoded(over), MAX_LEASE_INPUT_BYTES + 1);
      const problem = leaseInputProblem(over);
      assert.equal(problem?.type, INPUT_TOO_LARGE, `shape ${n} one byte over`);
      assert.equal(problem.retryable, false);
      assert.match(problem.message, /larger than the 15728640 bytes \(15 MiB\) as protobuf/);
    }
  });

  it("counts protobuf, not JSON, and stops at the bound: what lies past it is not walked", () => {
    // 3 MB of JSON `[0,0,...]` is 16.5 MB as protobuf (9 bytes a number, 2 more for its list entry).
    const zeros = new Array<number>(1_500_000).fill(0);
    assert.equal(encoded(zeros), 16_500_005);
    assert.equal(leaseInputProblem(zeros)?.type, INPUT_TOO_LARGE);
    assert.equal(leaseInputProblem(zeros.slice(0, 1_000_000)), null, "11 MB goes");
    // The numbers alone pass 15 MiB: refused before the too deep value after them is reached.
    const more = new Array<number>(2_000_000).fill(0);
    const problem = leaseInputProblem({ more, after: nested(100, "array") });
    assert.equal(problem?.type, INPUT_TOO_LARGE);
    assert.match(problem.message, /input is larger than the 15728640 bytes/);
  });

  it("refuses what an executor cannot decode, and only that: deeper than 48 levels is INPUT_TOO_DEEP", () => {
    assert.equal(MAX_LEASE_INPUT_DEPTH, 48);
    for (const kind of ["array", "object"] as const) {
      const deepest = nested(MAX_LEASE_INPUT_DEPTH, kind);
      assert.ok(executorDecodes(deepest), `${kind}: 48 levels decode`);
      assert.equal(leaseInputProblem(deepest), null, `${kind}: 48 levels go`);
      const deeper = nested(MAX_LEASE_INPUT_DEPTH + 1, kind);
      assert.ok(!executorDecodes(deeper), `${kind}: 49 levels do not decode`);
      const problem = leaseInputProblem(deeper);
      assert.equal(problem?.type, INPUT_TOO_DEEP, `${kind}: 49 levels`);
      assert.equal(problem.retryable, false);
    }
    // Far deeper than any stack: refused without walking it whole.
    assert.equal(leaseInputProblem(nested(100_000, "array"))?.type, INPUT_TOO_DEEP);
    for (const small of [null, 0, "", "text", true, [], {}, { a: [1, "b", null, false] }])
      assert.equal(leaseInputProblem(small), null, JSON.stringify(small));
  });
});

describe("grantLease with an input no executor could take", () => {
  const workflow = workflowOf({
    name: "refused",
    version: 1,
    steps: [
      { id: "a", type: "t", input: { v: "{{ input.v }}" } },
      { id: "b", type: "t", dependsOn: ["a"] },
    ],
  });

  it("fails the task for good before any lease (no attempt, no event, no lease standing) and ends the run", () => {
    const sim = new Simulation();
    const run = beginRun(sim, workflow, { v: nested(MAX_LEASE_INPUT_DEPTH, "object") });
    const session = sim.session("s1");
    const task = sim.lease(session);
    assert.ok(task);
    assert.equal(task.status, "FAILED");
    assert.equal(task.error?.type, INPUT_TOO_DEEP);
    assert.equal(task.attempt, 0, "no attempt was made");
    assert.equal(task.current, null);
    assert.equal(session.leases.size, 0);
    assert.ok(!leaseStands(task, session.id, task.fencingToken), "nothing to send");
    assert.deepEqual(sim.eventsOf(run.id), ["runStarted", "taskFailed", "taskSkipped", "runCompleted"]);
    assert.equal(run.status, "FAILED");
    assert.equal(run.error?.type, INPUT_TOO_DEEP);
    assert.equal(run.tasks.get("b")?.status, "SKIPPED");
    assert.ok(sim.commits > 0, "committed");
  });

  it("leases an input at the bound as before", () => {
    const sim = new Simulation();
    beginRun(sim, workflow, { v: nested(MAX_LEASE_INPUT_DEPTH - 1, "array") });
    const session = sim.session("s1");
    const task = sim.lease(session);
    assert.ok(task);
    assert.equal(task.status, "LEASED");
    assert.equal(task.attempt, 1);
    assert.ok(leaseStands(task, session.id, task.fencingToken));
  });
});
