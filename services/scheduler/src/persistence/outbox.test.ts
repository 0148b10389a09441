import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { jsonToValue } from "@nexusflow/common";
import { LifecycleEventBatchSchema, LifecycleEventSchema, TaskKind } from "@nexusflow/gen";
import { eventHeader } from "../events/outbox-store.js";
import { decodeEventTraces } from "./event-traces.js";
import {
  encodeEventRows,
  eventTraceContexts,
  lifecycleEventAt,
  splitEventBatch,
  type EventInit,
  type EventRow,
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
  /** A commit's events of two runs: lengths of one, two and three bytes, one with a trace context. */
  function commit(): { r: Run; other: Run; rows: OutboxRow[] } {
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
    rows[1] = { ...(rows[1] as OutboxRow), traceContext: { traceparent: "00-abc-def-01" } };
    return { r, other, rows };
  }

  it("encodes a commit's events as one row, in order, each event exactly as it encodes alone", () => {
    const { r, rows } = commit();
    const encoded = encodeEventRows(rows);
    assert.equal(encoded.length, 1);
    const [row] = encoded as [EventRow];
    // Named by its first event; one trace context per event, null where an event has none.
    assert.deepEqual([row.runId, row.firstSequence, row.eventCount], [r.id, 1, 6]);
    assert.deepEqual(decodeEventTraces(row.traces!, row.eventCount), [
      null,
      { traceparent: "00-abc-def-01" },
      null,
      null,
      null,
      null,
    ]);
    const decoded = fromBinary(LifecycleEventBatchSchema, row.payload).events;
    assert.deepEqual(
      decoded.map((e) => e.eventId),
      rows.map((e) => e.message.eventId),
    );
    const views = splitEventBatch(row.payload);
    assert.equal(views.length, rows.length);
    for (const [i, event] of rows.entries()) {
      const alone = toBinary(LifecycleEventSchema, event.message);
      assert.deepEqual(Buffer.from(views[i] as Uint8Array), Buffer.from(alone), `event ${i}`);
      assert.deepEqual(eventHeader(views[i] as Uint8Array), {
        eventId: event.message.eventId,
        runId: event.message.runId,
        sequence: Number(event.message.sequence),
        type: event.message.event.case,
      });
    }
    assert.deepEqual(encodeEventRows([]), []);
    assert.deepEqual(splitEventBatch(new Uint8Array()), []);
    // Without any trace context the column is null.
    assert.equal(encodeEventRows([rows[0] as OutboxRow])[0]?.traces, null);
  });

  it("writes events that may be stored again as exactly the rows they were written in", () => {
    const { rows } = commit();
    // Two statements: the first wrote rows 0-2, the second 3-5; both failed and may have committed.
    const [first] = encodeEventRows(rows.slice(0, 3));
    const [second] = encodeEventRows(rows.slice(3));
    const again = encodeEventRows(rows, () => true);
    assert.deepEqual(
      again.map((x) => [x.runId, x.firstSequence, x.eventCount, Buffer.from(x.payload).toString("hex")]),
      [first, second].map((x) => [
        x?.runId,
        x?.firstSequence,
        x?.eventCount,
        Buffer.from(x?.payload ?? []).toString("hex"),
      ]),
    );
    // Events not written before go to one new row of their own.
    assert.deepEqual(
      encodeEventRows(rows, (e) => e !== rows[5]).map((x) => x.eventCount),
      [3, 2, 1],
    );
  });

  it("writes a context that events share once per row, and reads it back for each", () => {
    const { r, other, rows } = commit();
    // A run whose trace is not recorded gives all its events one context object.
    const unsampled = Object.freeze({ traceparent: `00-${"a".repeat(32)}-${"b".repeat(16)}-00` });
    const otherCtx = { traceparent: `00-${"c".repeat(32)}-${"d".repeat(16)}-00` };
    const traced = rows.map((e) => ({
      ...e,
      traceContext: e.message.runId === r.id ? unsampled : e.message.runId === other.id ? otherCtx : null,
    }));
    const [row] = encodeEventRows(traced) as [EventRow];
    // Events: r, other, r, r, other, r: two contexts of 26 bytes, four references of 2, the version.
    assert.equal(row.traces?.byteLength, 1 + 2 * 26 + 4 * 2);
    const read = decodeEventTraces(row.traces ?? new Uint8Array(), row.eventCount);
    assert.deepEqual(
      read,
      traced.map((e) => e.traceContext),
    );
    // Events that shared a context share it again.
    assert.equal(read[0], read[2]);
  });

  it("reads a row's trace contexts: none, one for all, or one per event", () => {
    const ctx = { traceparent: "00-abc-def-01" };
    assert.deepEqual(eventTraceContexts(null, 2), [null, null]);
    assert.deepEqual(eventTraceContexts(ctx, 2), [ctx, ctx]);
    assert.deepEqual(eventTraceContexts([null, ctx], 2), [null, ctx]);
    assert.deepEqual(eventTraceContexts([ctx, null, 0], 3), [ctx, null, ctx]);
    // Hostile shapes read as none: not an object, an index not before the entry, not an integer.
    assert.deepEqual(eventTraceContexts([1, "x"], 3), [null, null, null]);
    assert.deepEqual(eventTraceContexts([ctx, 1, 5, -1, 0.5, 1], 6), [ctx, null, null, null, null, null]);
  });

  it("refuses a batch whose bytes are not whole events", () => {
    const [batch] = encodeEventRows([lifecycleEvent(run(), { case: "runCompleted", value: {} })]);
    const bytes = (batch as { payload: Uint8Array }).payload;
    assert.throws(() => splitEventBatch(bytes.subarray(0, bytes.length - 1)), /truncated/);
    assert.throws(() => splitEventBatch(bytes.subarray(1)), /unexpected tag/);
  });
});
