/**
 * Fitting one event into the message size a topic takes. A broker refuses a record batch over
 * the topic's `max.message.bytes` for good, and the relay publishes in order, so one event larger
 * than that would hold every event after it. Such an event is published lighter instead, marked
 * `truncated`: first without its data (run input, task and run output, error details), then, only
 * if still too large, with its other texts cut and its lists and maps emptied. Pure: no I/O.
 */
import { fromBinary, ScalarType, toBinary } from "@bufbuild/protobuf";
import { reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { boundedText } from "@nexusflow/common";
import { type LifecycleEvent, LifecycleEventSchema } from "@nexusflow/gen";

/** Characters a text of a truncated event keeps in the second pass. */
export const TRUNCATED_TEXT_CHARS = 1024;

/** Message types that hold a payload's data: left out first. */
const DATA_TYPES = new Set(["google.protobuf.Value", "google.protobuf.Struct", "google.protobuf.ListValue"]);

/** What {@link fitEvent} did. */
export interface FittedEvent {
  /** The payload to publish: the original bytes when they fit. */
  payload: Uint8Array;
  /** The event was published truncated. */
  truncated: boolean;
}

/**
 * `payload` (a binary LifecycleEvent) as published within `maxBytes`, given the bytes the rest
 * of its message takes (`overheadBytes`: key and headers). Returns the original bytes when they
 * fit; otherwise the lighter event (which may still not fit when its envelope alone is larger).
 */
export function fitEvent(payload: Uint8Array, overheadBytes: number, maxBytes: number): FittedEvent {
  if (payload.byteLength + overheadBytes <= maxBytes) return { payload, truncated: false };
  const event = fromBinary(LifecycleEventSchema, payload);
  event.truncated = true;
  const caseMessage = eventCase(event);
  if (caseMessage !== undefined) dropData(caseMessage);
  let lighter = toBinary(LifecycleEventSchema, event);
  if (lighter.byteLength + overheadBytes > maxBytes && caseMessage !== undefined) {
    shrink(caseMessage);
    lighter = toBinary(LifecycleEventSchema, event);
  }
  return { payload: lighter, truncated: true };
}

/** The reflected message of the event's oneof case, if one is set. */
function eventCase(event: LifecycleEvent): ReflectMessage | undefined {
  const value = event.event.value;
  if (value === undefined) return undefined;
  const field = LifecycleEventSchema.oneofs
    .find((o) => o.name === "event")
    ?.fields.find((f) => f.localName === event.event.case);
  if (field?.fieldKind !== "message") return undefined;
  return reflect(field.message, value);
}

/** Clears every field holding a payload's data, in `message` and the messages it holds. */
function dropData(message: ReflectMessage): void {
  for (const field of message.fields) {
    if (field.fieldKind !== "message" || !message.isSet(field)) continue;
    if (DATA_TYPES.has(field.message.typeName)) message.clear(field);
    else dropData(message.get(field));
  }
}

/** Cuts long texts, clears bytes, lists and maps, in `message` and the messages it holds. */
function shrink(message: ReflectMessage): void {
  for (const field of message.fields) {
    if (!message.isSet(field)) continue;
    switch (field.fieldKind) {
      case "list":
      case "map":
        message.clear(field);
        break;
      case "message":
        if (field.message.typeName !== "google.protobuf.Timestamp") shrink(message.get(field));
        break;
      case "scalar":
        if (field.scalar === ScalarType.BYTES) message.clear(field);
        else {
          const text = message.get(field);
          if (typeof text === "string" && text.length > TRUNCATED_TEXT_CHARS)
            message.set(field, boundedText(text, TRUNCATED_TEXT_CHARS));
        }
        break;
      default:
        break;
    }
  }
}
