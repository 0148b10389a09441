/**
 * The contract between the outbox relay and a message broker, and the Kafka wire shape of one
 * event (key, value, headers). Pure: no I/O here, so the mapping is tested without a broker.
 */

/** One unpublished event of an outbox row, as the relay reads it and hands it to a publisher. */
export interface OutboxRecord {
  /** Outbox row id: commit order (a row holds a run's events of one commit). */
  id: number;
  /** LifecycleEvent.event_id; a republished event keeps it. */
  eventId: string;
  /** Run the event belongs to (the Kafka key). */
  runId: string;
  /** Sequence number within the run, from 1. */
  sequence: number;
  /** The LifecycleEvent oneof case, camelCase as the engine writes it ("taskSucceeded"). */
  type: string;
  /** Binary `nexusflow.v1.LifecycleEvent`. */
  payload: Uint8Array;
  /** W3C trace context of the state change ("traceparent", "tracestate"), if any. */
  traceContext: Readonly<Record<string, unknown>> | null;
  /** When the row was committed. */
  createdAt: Date;
}

/**
 * Where the relay publishes. `publish` resolves only once the broker durably accepted every
 * record, in order per run; it rejects otherwise (the relay then retries the same records).
 */
export interface EventPublisher {
  /**
   * Gets ready to publish (connects; creates the topic when missing). Cheap once ready; the relay
   * calls it before every poll, so a missing topic is created at start even with nothing to send.
   */
  connect(signal: AbortSignal): Promise<void>;
  /** Publishes `records` in order; rejects with the signal's reason when aborted. */
  publish(records: readonly OutboxRecord[], signal: AbortSignal): Promise<void>;
  /** Releases connections; the publisher may not be used afterwards. */
  close(): Promise<void>;
}

/** Header names of a published event. */
export const EventHeaders = {
  /** The oneof case name as in the .proto, e.g. "task_succeeded". */
  type: "nf-event-type",
  /** Always {@link EVENT_CONTENT_TYPE}. */
  contentType: "content-type",
  /** LifecycleEvent.event_id (consumers deduplicate on it). */
  eventId: "nf-event-id",
  /** LifecycleEvent.sequence, decimal. */
  sequence: "nf-sequence",
  /** W3C trace context. */
  traceparent: "traceparent",
  /** W3C trace state. */
  tracestate: "tracestate",
  /** "true" when the event was published truncated (LifecycleEvent.truncated). */
  truncated: "nf-truncated",
} as const;

/** Content type of the message value. */
export const EVENT_CONTENT_TYPE = "application/x-protobuf";

/** The .proto names of the event cases seen, by case (a few dozen at most: the oneof's cases). */
const PROTO_EVENT_TYPES = new Map<string, string>();
/** Past this many names, a name is made again each time (a bound: names come from stored rows). */
const MAX_PROTO_EVENT_TYPES = 256;

/** The .proto name of an event case: "taskSucceeded" -> "task_succeeded" (every event published names it). */
export function protoEventType(camelCase: string): string {
  let name = PROTO_EVENT_TYPES.get(camelCase);
  if (name === undefined) {
    name = camelCase.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
    if (PROTO_EVENT_TYPES.size < MAX_PROTO_EVENT_TYPES) PROTO_EVENT_TYPES.set(camelCase, name);
  }
  return name;
}

/** A broker-neutral message: what the relay sends for one event. */
export interface EventMessage {
  key: string;
  value: Buffer;
  headers: Record<string, string>;
  /** Milliseconds since the epoch, decimal (Kafka's message timestamp). */
  timestamp: string;
}

/** The message of one event: key = run id, value = the payload bytes, identifying headers. */
export function eventMessage(record: OutboxRecord): EventMessage {
  const headers: Record<string, string> = {
    [EventHeaders.type]: protoEventType(record.type),
    [EventHeaders.contentType]: EVENT_CONTENT_TYPE,
    [EventHeaders.eventId]: record.eventId,
    [EventHeaders.sequence]: String(record.sequence),
  };
  const trace = record.traceContext;
  for (const name of [EventHeaders.traceparent, EventHeaders.tracestate]) {
    const v = trace?.[name];
    if (typeof v === "string" && v !== "") headers[name] = v;
  }
  return {
    key: record.runId,
    // A view on the same bytes, not a copy.
    value: Buffer.from(record.payload.buffer, record.payload.byteOffset, record.payload.byteLength),
    headers,
    timestamp: String(record.createdAt.getTime()),
  };
}

/**
 * Publishing turned off (no brokers configured): acknowledges without sending, so the outbox
 * is still marked and pruned instead of growing without bound.
 */
export class DiscardPublisher implements EventPublisher {
  connect(): Promise<void> {
    return Promise.resolve();
  }

  publish(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
