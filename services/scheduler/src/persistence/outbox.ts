/**
 * The transactional outbox's rows: a lifecycle event as it is queued with the batch writer, and
 * the payload of the outbox table, a LifecycleEventBatch per commit, which the writer encodes and
 * the relay splits back into events.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { LifecycleEvent, LifecycleEventSchema } from "@nexusflow/gen";
import type { RunState } from "../model/run-state.js";
import { EVENT_FIELDS, encodeEventBatch } from "./event-encoding.js";
import { decodeEventTraces, encodeEventTraces } from "./event-traces.js";

/**
 * An outbox event: the LifecycleEvent (encoded when its batch commits, with the other events of
 * that commit in one outbox row) and the trace context to publish it with.
 */
export interface OutboxRow {
  message: LifecycleEvent;
  traceContext: Record<string, string> | null;
  /**
   * The key of the outbox row the event was last written in (its first event's run and sequence),
   * kept by {@link encodeEventRows}; undefined until then.
   */
  writtenUnder?: string | undefined;
  /**
   * The run the event is about, when it was made from one (lifecycleEvent): what the metrics read
   * of it when the commit is observed, which may be after the run left the engine's memory
   * (BatchWriter's observers).
   */
  run?: RunState | undefined;
}

/** The `event` oneof of LifecycleEvent, as an init shape. */
export type EventInit = NonNullable<MessageInitShape<typeof LifecycleEventSchema>["event"]>;

/** The outbox row for one event of a run, with the sequence number given (not consumed from a RunState). */
export function lifecycleEventAt(
  run: { runId: string; sequence: bigint; workflowName: string; workflowVersion: number },
  event: EventInit,
  now = new Date(),
): OutboxRow {
  // The envelope as create(LifecycleEventSchema, ...) makes it, field by field (this runs five
  // times per no-op task: create's generic walk over the envelope and its Timestamp was 4% of the
  // scheduler's thread in a drain); only the event's own message goes through create().
  const body = EVENT_FIELDS.get(event.case);
  const message: LifecycleEvent = {
    $typeName: "nexusflow.v1.LifecycleEvent",
    // Not stored: derived from the run and the sequence where the event leaves the outbox
    // (lifecycleEventId in @nexusflow/common), so that the outbox row holds no random bytes.
    eventId: "",
    runId: run.runId,
    sequence: run.sequence,
    time: timestampOf(now),
    workflowName: run.workflowName,
    workflowVersion: run.workflowVersion,
    truncated: false,
    event: (body === undefined
      ? { case: undefined }
      : { case: event.case, value: create(body.schema, event.value) }) as LifecycleEvent["event"],
  };
  return { message, traceContext: null, writtenUnder: undefined, run: undefined };
}

/** `timestampFromDate`, without create()'s walk. */
function timestampOf(date: Date): Timestamp {
  const ms = date.getTime();
  const seconds = Math.floor(ms / 1000);
  return {
    $typeName: "google.protobuf.Timestamp",
    seconds: BigInt(seconds),
    nanos: (ms - seconds * 1000) * 1_000_000,
  };
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
 * message is encoded later, with the rest of its commit's events (encodeEventRows).
 */
export function lifecycleEvent(run: RunState, event: EventInit, now = new Date()): OutboxRow {
  const row = lifecycleEventAt(
    {
      runId: run.id,
      sequence: BigInt(++run.eventSeq),
      workflowName: run.workflow.name,
      workflowVersion: run.workflow.version,
    },
    event,
    now,
  );
  row.run = run;
  return row;
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

/**
 * One outbox row: the events of one commit (of any runs; each run's in sequence order), named by
 * its first event.
 */
export interface EventRow {
  /** Run of the row's first event. */
  runId: string;
  /** Sequence of the row's first event; (runId, firstSequence) is unique. */
  firstSequence: number;
  eventCount: number;
  /** A LifecycleEventBatch encoding of the events. */
  payload: Uint8Array;
  /**
   * The trace context of each event, as the row's `event_traces` bytes (./event-traces.ts: a
   * context object shared by several events, as a run whose trace is not recorded shares its own,
   * is written once per row); null when no event has one.
   */
  traces: Uint8Array | null;
}

/**
 * Encodes a commit's events as outbox rows: one row of all of them (a no-op task's five events,
 * over its three commits, share rows with every other task of those commits), encoded in one pass.
 * Events `again` says may already be stored (their statement may have committed before its
 * connection broke) are written as exactly the rows they were written in before, so that the
 * unique key of each row's first event finds a row that did commit.
 */
export function encodeEventRows(
  events: readonly OutboxRow[],
  again: (event: OutboxRow) => boolean = () => false,
): EventRow[] {
  const groups = new Map<string | undefined, OutboxRow[]>();
  for (const e of events) {
    const key = e.writtenUnder !== undefined && again(e) ? e.writtenUnder : undefined;
    const group = groups.get(key);
    if (group === undefined) groups.set(key, [e]);
    else group.push(e);
  }
  const out: EventRow[] = [];
  for (const group of groups.values()) {
    const first = group[0] as OutboxRow;
    const key = `${first.message.runId}/${first.message.sequence}`;
    for (const e of group) e.writtenUnder = key;
    out.push({
      runId: first.message.runId,
      firstSequence: Number(first.message.sequence),
      eventCount: group.length,
      payload: encodeEventBatch(group.map((e) => e.message)),
      traces: encodeEventTraces(group.map((e) => e.traceContext)),
    });
  }
  return out;
}

/**
 * The trace context of each of a row's `count` events from its `trace_context` column (rows written
 * before `event_traces`, ./event-traces.ts, held them): null (none),
 * one object for all (rows written before one row held a whole commit), or one entry per event,
 * an entry being a context, null, or the index of an earlier entry with the same context.
 */
export function eventTraceContexts(
  column: unknown,
  count: number,
): (Readonly<Record<string, unknown>> | null)[] {
  if (Array.isArray(column)) {
    const out: (Readonly<Record<string, unknown>> | null)[] = [];
    for (let i = 0; i < count; i++) {
      const c: unknown = column[i];
      if (typeof c === "number") out.push(Number.isInteger(c) && c >= 0 && c < i ? out[c]! : null);
      else out.push(typeof c === "object" && c !== null ? (c as Record<string, unknown>) : null);
    }
    return out;
  }
  const all = typeof column === "object" && column !== null ? (column as Record<string, unknown>) : null;
  return Array.from({ length: count }, () => all);
}

/** An `outbox_events` row's trace context columns, as `pg` reads them. */
export interface OutboxTraceColumns {
  /**
   * One context for every event of the row, or one entry per event: a context, null, or the index
   * of an earlier entry with the same context (rows written before `event_traces`).
   */
  trace_context: Record<string, unknown> | (Record<string, unknown> | number | null)[] | null;
  /** The events' trace contexts, binary (./event-traces.ts); null in rows written before them. */
  event_traces: Buffer | null;
}

/**
 * The trace context of each of an outbox row's `count` events: from its `event_traces` bytes, or,
 * in a row written before them, from its `trace_context` JSON ({@link eventTraceContexts}).
 */
export function rowTraceContexts(
  row: { trace_context?: unknown; event_traces?: Uint8Array | null },
  count: number,
): (Readonly<Record<string, unknown>> | null)[] {
  return row.event_traces === null || row.event_traces === undefined
    ? eventTraceContexts(row.trace_context ?? null, count)
    : decodeEventTraces(row.event_traces, count);
}
