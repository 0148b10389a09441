/**
 * The transactional outbox's rows: a lifecycle event as it is queued with the batch writer, and
 * the payload of the outbox table, a LifecycleEventBatch per run and commit, which the writer
 * encodes and the relay splits back into events.
 */
import { randomUUID } from "node:crypto";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { LifecycleEventBatchSchema, LifecycleEventSchema, type LifecycleEvent } from "@nexusflow/gen";
import type { RunState } from "../model/run-state.js";

/**
 * An outbox event: the LifecycleEvent (encoded when its batch commits, with the run's other events
 * of that commit in one outbox row) and the trace context to publish it with.
 */
export interface OutboxRow {
  message: LifecycleEvent;
  traceContext: Record<string, string> | null;
}

/** The `event` oneof of LifecycleEvent, as an init shape. */
export type EventInit = NonNullable<MessageInitShape<typeof LifecycleEventSchema>["event"]>;

/** The outbox row for one event of a run, with the sequence number given (not consumed from a RunState). */
export function lifecycleEventAt(
  run: { runId: string; sequence: bigint; workflowName: string; workflowVersion: number },
  event: EventInit,
  now = new Date(),
): OutboxRow {
  const message = create(LifecycleEventSchema, {
    eventId: randomUUID(),
    runId: run.runId,
    sequence: run.sequence,
    time: timestampFromDate(now),
    workflowName: run.workflowName,
    workflowVersion: run.workflowVersion,
    event,
  });
  return { message, traceContext: null };
}

/** Tag of field 1 with wire type 2: (1 << 3) | 2. */
const FIELD_1_LENGTH_DELIMITED = 0x0a;

/**
 * Reads the entry at `pos` of a LifecycleEventBatch encoding (a length-delimited field 1) and
 * returns where its event's bytes start and end.
 */
function entryAt(bytes: Uint8Array, pos: number): { start: number; end: number } {
  if (bytes[pos++] !== FIELD_1_LENGTH_DELIMITED) throw new Error(`unexpected tag at byte ${pos - 1}`);
  let length = 0;
  for (let shift = 0; ; shift += 7) {
    const b = bytes[pos++];
    if (b === undefined || shift > 28) throw new Error("truncated or oversized length");
    length += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) break;
  }
  if (pos + length > bytes.length) throw new Error("truncated event");
  return { start: pos, end: pos + length };
}

/**
 * Creates the outbox row for one event of `run`, consuming the run's next sequence number. The
 * message is encoded later, with the rest of its commit's events (encodeRunBatches).
 */
export function lifecycleEvent(run: RunState, event: EventInit, now = new Date()): OutboxRow {
  return lifecycleEventAt(
    {
      runId: run.id,
      sequence: BigInt(++run.eventSeq),
      workflowName: run.workflow.name,
      workflowVersion: run.workflow.version,
    },
    event,
    now,
  );
}

/**
 * The events of a LifecycleEventBatch encoding, each as a view of exactly its standalone
 * LifecycleEvent encoding (what Kafka carries), without decoding or copying them.
 */
export function splitEventBatch(bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    const { start, end } = entryAt(bytes, pos);
    out.push(bytes.subarray(start, end));
    pos = end;
  }
  return out;
}

/** One outbox row: the events of one run in one commit, in sequence order. */
export interface RunEventBatch {
  runId: string;
  firstSequence: number;
  lastSequence: number;
  /** A LifecycleEventBatch encoding of the events. */
  payload: Uint8Array;
  /** The trace context of the first of the events that has one. */
  traceContext: Record<string, string> | null;
}

/**
 * Groups a commit's events by run (one outbox row per run and commit instead of one per event:
 * a no-op task's four events become two rows) and encodes them in one pass: a single
 * LifecycleEventBatch of every event, run after run, of which each run's rows are a contiguous
 * slice, itself a LifecycleEventBatch encoding. Encoding each event alone allocated and copied
 * three buffers per event (the writer starts at 128 bytes, grows, then copies out), a tenth of the
 * scheduler thread's busy time in the drain. Runs keep the order of their first event.
 */
export function encodeRunBatches(events: readonly OutboxRow[]): RunEventBatch[] {
  const byRun = new Map<string, OutboxRow[]>();
  for (const e of events) {
    const rows = byRun.get(e.message.runId);
    if (rows === undefined) byRun.set(e.message.runId, [e]);
    else rows.push(e);
  }
  const ordered: LifecycleEvent[] = [];
  for (const rows of byRun.values()) for (const r of rows) ordered.push(r.message);
  const bytes = toBinary(LifecycleEventBatchSchema, create(LifecycleEventBatchSchema, { events: ordered }));
  const out: RunEventBatch[] = [];
  let pos = 0;
  for (const [runId, rows] of byRun) {
    // A run's events caused by different spans (tracing on) go to consecutive rows, one per
    // trace context, so that each event is published with its own; with tracing off, one row.
    for (let from = 0; from < rows.length;) {
      const traceContext = (rows[from] as OutboxRow).traceContext;
      let to = from + 1;
      while (to < rows.length && sameTrace((rows[to] as OutboxRow).traceContext, traceContext)) to++;
      const start = pos;
      for (let i = from; i < to; i++) pos = entryAt(bytes, pos).end;
      out.push({
        runId,
        firstSequence: Number((rows[from] as OutboxRow).message.sequence),
        lastSequence: Number((rows[to - 1] as OutboxRow).message.sequence),
        payload: bytes.subarray(start, pos),
        traceContext,
      });
      from = to;
    }
  }
  if (pos !== bytes.length) throw new Error(`encoded ${bytes.length} bytes, grouped ${pos}`);
  return out;
}

function sameTrace(a: Record<string, string> | null, b: Record<string, string> | null): boolean {
  return a === b || (a !== null && b !== null && a["traceparent"] === b["traceparent"]);
}
