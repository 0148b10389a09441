/**
 * Reading published lifecycle events back: a Kafka message to the LifecycleEvent it carries, and
 * to a JSON-friendly object (proto3 JSON of the event plus the message's coordinates and headers).
 * Shared by `nexusflow events tail` and the tests.
 */
import { fromBinary, toJson, type JsonValue } from "@bufbuild/protobuf";
import { LifecycleEventSchema, type LifecycleEvent } from "@nexusflow/gen";
import { EVENT_CONTENT_TYPE, EventHeaders, protoEventType } from "./publisher.js";

/** The parts of a consumed Kafka message that decoding needs (kafkajs' KafkaMessage fits). */
export interface ConsumedMessage {
  key: Buffer | null;
  value: Uint8Array | null;
  headers?: Readonly<Record<string, Buffer | string | (Buffer | string)[] | undefined>>;
  offset: string;
  timestamp: string;
}

/** A decoded event, ready for JSON.stringify. */
export interface DecodedEvent {
  topic: string;
  partition: number;
  offset: string;
  /** The message key (the run id). */
  key: string | null;
  /** Kafka timestamp, ISO 8601. */
  timestamp: string;
  /** Headers as strings. */
  headers: Record<string, string>;
  /** The oneof case as in the .proto, e.g. "task_succeeded". */
  type: string;
  /** proto3 JSON of the LifecycleEvent. */
  event: JsonValue;
}

/** Raised for a message that is not a LifecycleEvent; `cause` is the parse error, if any. */
export class EventDecodeError extends Error {
  override name = "EventDecodeError";
}

/** Header values as strings (repeated headers joined with ","). */
export function headerStrings(headers: ConsumedMessage["headers"]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (value === undefined) continue;
    out[name] = Array.isArray(value) ? value.map((v) => v.toString()).join(",") : value.toString();
  }
  return out;
}

/** The LifecycleEvent in a message value. Throws {@link EventDecodeError}. */
export function decodeLifecycleEvent(message: Pick<ConsumedMessage, "value" | "headers">): LifecycleEvent {
  const contentType = headerStrings(message.headers)[EventHeaders.contentType];
  if (contentType !== undefined && contentType !== EVENT_CONTENT_TYPE)
    throw new EventDecodeError(`unexpected content type ${JSON.stringify(contentType)}`);
  if (message.value === null) throw new EventDecodeError("the message has no value");
  try {
    return fromBinary(LifecycleEventSchema, message.value);
  } catch (e) {
    throw new EventDecodeError("the message value is not a nexusflow.v1.LifecycleEvent", { cause: e });
  }
}

/** Decodes one consumed message of `topic`/`partition`. Throws {@link EventDecodeError}. */
export function decodeEventMessage(topic: string, partition: number, message: ConsumedMessage): DecodedEvent {
  const event = decodeLifecycleEvent(message);
  const headers = headerStrings(message.headers);
  const ms = Number(message.timestamp);
  return {
    topic,
    partition,
    offset: message.offset,
    key: message.key === null ? null : message.key.toString(),
    timestamp: Number.isFinite(ms) ? new Date(ms).toISOString() : message.timestamp,
    headers,
    type: headers[EventHeaders.type] ?? protoEventType(event.event.case ?? "unknown"),
    event: toJson(LifecycleEventSchema, event),
  };
}
