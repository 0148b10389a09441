import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { jsonToValue } from "@nexusflow/common";
import { LifecycleEventSchema, TaskKind } from "@nexusflow/gen";
import { encodeEvents, lifecycleEvent } from "./events.js";
import type { RunState } from "./model.js";

/** The fields of a run that events read. */
function run(): RunState {
  return {
    id: "7f1c9a52-3c1e-4e53-9d0b-1c2d3e4f5a6b",
    workflow: { name: "orders", version: 3 },
    eventSeq: 0,
  } as unknown as RunState;
}

describe("lifecycle events", () => {
  it("numbers a run's events in order", () => {
    const r = run();
    const a = lifecycleEvent(r, { case: "runCompleted", value: {} });
    const b = lifecycleEvent(r, { case: "runCompleted", value: {} });
    assert.deepEqual([a.message.sequence, b.message.sequence, r.eventSeq], [1n, 2n, 2]);
    assert.notEqual(a.message.eventId, b.message.eventId);
    assert.deepEqual(
      [a.message.runId, a.message.workflowName, a.message.workflowVersion],
      [r.id, "orders", 3],
    );
    assert.equal(a.message.event.case, "runCompleted");
  });

  it("encodes a commit's events in one pass, each exactly as it encodes alone", () => {
    const r = run();
    const rows = [
      // Over 16 KiB: a three-byte length prefix.
      lifecycleEvent(r, {
        case: "runStarted",
        value: { input: jsonToValue({ blob: "x".repeat(20_000) }), labels: { team: "payments" } },
      }),
      lifecycleEvent(r, {
        case: "taskLeased",
        value: {
          taskRunId: "0b7e2f9e-4f9c-4d3f-a3b5-6f1e2d3c4b5a",
          stepId: "charge",
          attempt: 1,
          executorId: "exec-1",
          fencingToken: 1n,
          kind: TaskKind.STEP,
        },
      }),
      // Between 128 and 16 KiB: two bytes.
      lifecycleEvent(r, {
        case: "taskFailed",
        value: { stepId: "charge", error: { type: "DECLINED", message: "y".repeat(300) } },
      }),
      lifecycleEvent(r, { case: "runCompleted", value: {} }),
    ];
    const encoded = encodeEvents(rows.map((e) => e.message));
    assert.equal(encoded.length, rows.length);
    for (const [i, row] of rows.entries()) {
      const alone = toBinary(LifecycleEventSchema, row.message);
      assert.deepEqual(Buffer.from(encoded[i] as Uint8Array), Buffer.from(alone), `event ${i}`);
      assert.equal(fromBinary(LifecycleEventSchema, encoded[i] as Uint8Array).sequence, BigInt(i + 1));
    }
    assert.deepEqual(encodeEvents([]), []);
  });
});
