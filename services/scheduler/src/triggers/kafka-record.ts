/**
 * What a Kafka record of the event source becomes (pure; kafka-source.ts does the I/O): an event to
 * publish, or the reason it is rejected. The event key is the record key, or the value of a header
 * the source names (so the record key stays free for partitioning); the payload is the record's
 * value, which must be JSON. The idempotency key names the record, `kafka:<topic>/<partition>/
 * <offset>@<timestamp>`: a record delivered again (after a crash before its offset was committed)
 * is the same event, while a record of a topic deleted and created again under the same name (its
 * offsets start over) is a new one, told apart by its timestamp.
 */
import { createHash } from "node:crypto";
import { nulCharacterPath } from "@nexusflow/common";
import { EVENT_PAYLOAD_DEPTH, MAX_ANSWER_NESTING, jsonTooDeep } from "../model/answer-depth.js";
import { eventKeyProblem } from "../dag/index.js";
import { MAX_EVENT_PAYLOAD_BYTES, type EventDraft } from "./publish.js";

/** Why a record is not an event (a label of the rejected-records metric). */
export type RejectReason =
  /** No record key (or no key header), or an empty one. */
  | "no_key"
  /** The key is not an event key (segments of letters, digits, `_`, `-`, at most 255 characters). */
  | "invalid_key"
  /** No value, or a value that is not UTF-8 JSON. */
  | "not_json"
  /** A value larger than an event's payload may be. */
  | "too_large"
  /**
   * JSON that an event cannot hold: a NUL character, nesting deeper than a run keeps, a number out
   * of range, or refused by the database.
   */
  | "not_storable";

/** Every reason, for metrics that start each at zero. */
export const REJECT_REASONS: readonly RejectReason[] = [
  "no_key",
  "invalid_key",
  "not_json",
  "too_large",
  "not_storable",
];

/** The parts of a consumed record the source reads (kafkajs' KafkaMessage and its batch). */
export interface SourceRecord {
  topic: string;
  partition: number;
  /** The offset, as kafkajs gives it (a decimal string). */
  offset: string;
  /** Milliseconds since the epoch, as a decimal string. */
  timestamp: string;
  key: Buffer | null;
  value: Buffer | null;
  headers?: Readonly<Record<string, Buffer | string | (Buffer | string)[] | undefined>> | undefined;
}

/** A record decoded: the event to publish, or why it is rejected (with a detail for the log). */
export type DecodedRecord =
  | { ok: true; event: EventDraft & { idempotencyKey: string } }
  | { ok: false; reason: RejectReason; detail: string };

/** Longest idempotency key of an event (the column's length). */
const MAX_IDEMPOTENCY_KEY_LENGTH = 200;

/** The idempotency key of a record; see the module comment. */
export function recordIdempotencyKey(
  r: Pick<SourceRecord, "topic" | "partition" | "offset" | "timestamp">,
): string {
  const key = `kafka:${r.topic}/${r.partition}/${r.offset}@${r.timestamp}`;
  if (key.length <= MAX_IDEMPOTENCY_KEY_LENGTH) return key;
  // Topic names may be 249 characters long: a long one is named by its hash.
  const topic = `sha256:${createHash("sha256").update(r.topic).digest("hex")}`;
  return `kafka:${topic}/${r.partition}/${r.offset}@${r.timestamp}`;
}

/** The first value of a header as text, if any. */
function headerText(value: Buffer | string | (Buffer | string)[] | undefined): string | undefined {
  const first = Array.isArray(value) ? value[0] : value;
  return first === undefined ? undefined : first.toString();
}

/** The path of the first number that JSON.parse could not hold (1e400 becomes Infinity). */
function nonFinitePath(value: unknown, path: string): string | undefined {
  if (typeof value === "number") return Number.isFinite(value) ? undefined : path;
  if (value === null || typeof value !== "object") return undefined;
  for (const [k, v] of Array.isArray(value) ? value.entries() : Object.entries(value)) {
    const found = nonFinitePath(v, Array.isArray(value) ? `${path}[${k}]` : `${path}.${k}`);
    if (found !== undefined) return found;
  }
  return undefined;
}

const DECODER = new TextDecoder("utf-8", { fatal: true });

/** Most levels of objects and arrays in an event's payload (as PublishEvent takes it). */
const MAX_EVENT_PAYLOAD_LEVELS = Math.floor((MAX_ANSWER_NESTING - EVENT_PAYLOAD_DEPTH) / 2);

/** Decodes a record; `keyHeader` names the header holding the event key (else the record key). */
export function decodeRecord(record: SourceRecord, keyHeader: string | undefined): DecodedRecord {
  const key =
    keyHeader === undefined ? record.key?.toString("utf8") : headerText(record.headers?.[keyHeader]);
  const keySource = keyHeader === undefined ? "the record key" : `header ${JSON.stringify(keyHeader)}`;
  if (key === undefined || key === "")
    return {
      ok: false,
      reason: "no_key",
      detail:
        keyHeader === undefined
          ? "the record has no key"
          : `the record has no header ${JSON.stringify(keyHeader)}`,
    };
  const keyProblem = eventKeyProblem(key);
  if (keyProblem !== undefined)
    return { ok: false, reason: "invalid_key", detail: `${keySource}: ${keyProblem}` };
  const value = record.value;
  if (value === null || value.length === 0)
    return { ok: false, reason: "not_json", detail: "the record has no value" };
  if (value.length > MAX_EVENT_PAYLOAD_BYTES)
    return {
      ok: false,
      reason: "too_large",
      detail: `the value is ${value.length} bytes; an event's payload is at most ${MAX_EVENT_PAYLOAD_BYTES}`,
    };
  let payload: unknown;
  try {
    payload = JSON.parse(DECODER.decode(value)) as unknown;
  } catch (e) {
    return {
      ok: false,
      reason: "not_json",
      detail:
        e instanceof TypeError ? "the value is not UTF-8" : `the value is not JSON: ${(e as Error).message}`,
    };
  }
  let bytes: number;
  try {
    // As PublishEvent refuses it: the runs it starts or wakes could be decoded by no client.
    if (jsonTooDeep(payload, EVENT_PAYLOAD_DEPTH))
      return {
        ok: false,
        reason: "not_storable",
        detail: `the value is nested too deeply: a run carries an event's payload in at most ${MAX_EVENT_PAYLOAD_LEVELS} levels of objects and arrays (protobuf decoders stop at 100 nested messages)`,
      };
    const nul = nulCharacterPath(payload, "payload");
    if (nul !== undefined)
      return { ok: false, reason: "not_storable", detail: `${nul} contains a NUL character (U+0000)` };
    const huge = nonFinitePath(payload, "payload");
    if (huge !== undefined)
      return { ok: false, reason: "not_storable", detail: `${huge} is a number out of range` };
    // Stored as JSON.stringify writes it, which can be longer than the value (1e5 is 100000).
    bytes = Buffer.byteLength(JSON.stringify(payload));
  } catch (e) {
    // Nested deeper than the stack allows (`[[[...]]]` 100,000 deep fits in 200 KB): a record like
    // any other that cannot be stored, not an error that stops the partition.
    if (!(e instanceof RangeError)) throw e;
    return { ok: false, reason: "not_storable", detail: `the value is nested too deeply: ${e.message}` };
  }
  if (bytes > MAX_EVENT_PAYLOAD_BYTES)
    return {
      ok: false,
      reason: "too_large",
      detail: `the payload is ${bytes} bytes as JSON; an event's payload is at most ${MAX_EVENT_PAYLOAD_BYTES}`,
    };
  return { ok: true, event: { key, payload, idempotencyKey: recordIdempotencyKey(record) } };
}
