import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { BATCH_ITEMS, jsonToValue } from "@nexusflow/common";
import { LeaseSchema, SessionResponseSchema, type Lease } from "@nexusflow/gen";
import { leaseFrames } from "./messages.js";

const lease = (i: number, input: unknown = { i }): Lease =>
  create(LeaseSchema, {
    key: { taskRunId: `t${i}`, attempt: 1, fencingToken: BigInt(i) },
    runId: `r${i}`,
    input: jsonToValue(input as never),
  });

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
      leases.map((l) => l.key?.taskRunId),
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
