import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { jsonToValue } from "@nexusflow/common";
import { LifecycleEventBatchSchema, LifecycleEventSchema, TaskKind } from "@nexusflow/gen";
import { eventHeader } from "../events/outbox-store.js";
import {
  encodeRunBatches,
  lifecycleEventAt,
  splitEventBatch,
  type EventInit,
  type OutboxRow,
} from "./outbox.js";

/** A run's event counter, as the engine keeps it (see lifecycleEvent in outbox.ts). */
interface Run {
  id: string;
  eventSeq: number;
}

function run(id = "7f1c9a52-3c1e-4e53-9d0b-1c2d3e4f5a6b"): Run {
  return { id, eventSeq: 0 };
}

/** The run's next event. */
function lifecycleEvent(r: Run, event: EventInit): OutboxRow {
  return lifecycleEventAt(
    { runId: r.id, sequence: BigInt(++r.eventSeq), workflowName: "orders", workflowVersion: 3 },
    event,
  );
}

describe("outbox rows", () => {
  it("encodes a commit's events in one pass, one batch per run, each event exactly as it encodes alone", () => {
    const r = run();
    const other = run("0d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a");
    other.eventSeq = 6;
    const rows = [
      // Over 16 KiB: a three-byte length prefix.
      lifecycleEvent(r, {
        case: "runStarted",
        value: { input: jsonToValue({ blob: "x".repeat(20_000) }), labels: { team: "payments" } },
      }),
      lifecycleEvent(other, { case: "runCancelRequested", value: { reason: "stop" } }),
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
      lifecycleEvent(other, { case: "runCompleted", value: {} }),
      lifecycleEvent(r, { case: "runCompleted", value: {} }),
    ];
    rows[1] = { ...(rows[1] as (typeof rows)[number]), traceContext: { traceparent: "00-abc-def-01" } };
    const batches = encodeRunBatches(rows);
    // Runs in the order of their first event; each run's events in order, in consecutive rows
    // where their trace contexts differ (each event is published with its own).
    assert.deepEqual(
      batches.map((b) => [b.runId, b.firstSequence, b.lastSequence, b.traceContext]),
      [
        [r.id, 1, 4, null],
        [other.id, 7, 7, { traceparent: "00-abc-def-01" }],
        [other.id, 8, 8, null],
      ],
    );
    const ofOther = rows.filter((e) => e.message.runId === other.id);
    const byRun = [rows.filter((e) => e.message.runId === r.id), ofOther.slice(0, 1), ofOther.slice(1)];
    for (const [k, batch] of batches.entries()) {
      const expected = byRun[k] as typeof rows;
      // Each payload is a LifecycleEventBatch of its run's events ...
      const decoded = fromBinary(LifecycleEventBatchSchema, batch.payload).events;
      assert.deepEqual(
        decoded.map((e) => e.eventId),
        expected.map((e) => e.message.eventId),
      );
      // ... and each event's bytes are exactly its standalone encoding.
      const views = splitEventBatch(batch.payload);
      assert.equal(views.length, expected.length);
      for (const [i, row] of expected.entries()) {
        const alone = toBinary(LifecycleEventSchema, row.message);
        assert.deepEqual(Buffer.from(views[i] as Uint8Array), Buffer.from(alone), `run ${k} event ${i}`);
        assert.deepEqual(eventHeader(views[i] as Uint8Array), {
          eventId: row.message.eventId,
          sequence: Number(row.message.sequence),
          type: row.message.event.case,
        });
      }
    }
    assert.deepEqual(encodeRunBatches([]), []);
    assert.deepEqual(splitEventBatch(new Uint8Array()), []);
  });

  it("refuses a batch whose bytes are not whole events", () => {
    const [batch] = encodeRunBatches([lifecycleEvent(run(), { case: "runCompleted", value: {} })]);
    const bytes = (batch as { payload: Uint8Array }).payload;
    assert.throws(() => splitEventBatch(bytes.subarray(0, bytes.length - 1)), /truncated/);
    assert.throws(() => splitEventBatch(bytes.subarray(1)), /unexpected tag/);
  });
});
