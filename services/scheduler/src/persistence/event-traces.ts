/**
 * The trace contexts of an outbox row's events, in the row's `event_traces` column (bytea): the W3C
 * headers each event's Kafka message carries. Binary, because with tracing on a commit's row names
 * one context per run it touches (a run whose trace is sampled out gives all its events the run's
 * own), and as JSON (`trace_context`, jsonb, rows written before) those took PostgreSQL a parse, a
 * compression and eight TOAST chunks per 200-run commit (bench/notes/26-session-thirty.md); here a
 * `traceparent` is 26 bytes.
 *
 * Format: a version byte (1), then one entry per event, in order:
 * - `0x00`: no context;
 * - `0x01`, trace id (16 bytes), span id (8), flags (1): a new context holding only a version-00
 *   `traceparent`;
 * - `0x02`, a varint length, that many bytes of UTF-8 JSON (an object of strings): any other new
 *   context (a `tracestate`, a `traceparent` of another shape);
 * - `0x03`, a varint `i`: the same context as the row's `i`-th new context (0-based).
 * Varints and lengths are protobuf's, written and read by protobuf-es's BinaryWriter and
 * BinaryReader (as event-encoding.ts writes the payload).
 *
 * Reading is lenient: what cannot be read (another version, truncated bytes, a bad reference) gives
 * events without a context, never an error, since an event is published without its trace rather
 * than held back.
 */

import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";

const VERSION = 1;
const NONE = 0x00;
const TRACEPARENT = 0x01;
const JSON_CONTEXT = 0x02;
const SAME_AS = 0x03;
/** Bytes of a version-00 `traceparent`: trace id, span id, flags. */
const TRACEPARENT_BYTES = 25;
/** A version-00 `traceparent` in lower case (what the SDK's propagator writes). */
const TRACEPARENT_SHAPE = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/** The `traceparent` of a context that holds only a version-00 one, else undefined. */
function onlyTraceparent(context: Readonly<Record<string, string>>): string | undefined {
  let traceparent: string | undefined;
  for (const key in context) {
    if (key !== "traceparent") return undefined;
    traceparent = context[key];
  }
  return traceparent !== undefined && TRACEPARENT_SHAPE.test(traceparent) ? traceparent : undefined;
}

/** The value of a lower-case hex digit's character code (the shape was checked). */
function hexDigit(c: number): number {
  return c <= 57 ? c - 48 : c - 87;
}

/**
 * The trace id, span id and flags of a checked `traceparent` as bytes, read from its character
 * codes: a context per run of every commit, so no string is made for them.
 */
function traceparentBytes(traceparent: string): Uint8Array {
  const out = new Uint8Array(TRACEPARENT_BYTES);
  let at = 0;
  for (let i = 3; i < traceparent.length; i += 2) {
    if (i === 35 || i === 52) i++; // the dashes
    out[at++] = (hexDigit(traceparent.charCodeAt(i)) << 4) | hexDigit(traceparent.charCodeAt(i + 1));
  }
  return out;
}

/**
 * The `event_traces` bytes of events with these contexts (one per event, in order; the same object
 * twice is written once); null when none has one.
 */
export function encodeEventTraces(
  contexts: readonly (Readonly<Record<string, string>> | null)[],
): Uint8Array | null {
  if (contexts.every((c) => c === null)) return null;
  /** Each context written so far, by its index among them. */
  const seen = new Map<object, number>();
  const w = new BinaryWriter().uint32(VERSION);
  for (const c of contexts) {
    if (c === null) {
      w.uint32(NONE);
      continue;
    }
    const at = seen.get(c);
    if (at !== undefined) {
      w.uint32(SAME_AS).uint32(at);
      continue;
    }
    seen.set(c, seen.size);
    const traceparent = onlyTraceparent(c);
    if (traceparent !== undefined) w.uint32(TRACEPARENT).raw(traceparentBytes(traceparent));
    else w.uint32(JSON_CONTEXT).bytes(utf8.encode(JSON.stringify(c)));
  }
  return w.finish();
}

/** A context read from JSON: an object of strings, else null. */
function jsonContext(bytes: Uint8Array): Readonly<Record<string, string>> | null {
  let value: unknown;
  try {
    value = JSON.parse(utf8Decoder.decode(bytes));
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) if (typeof v === "string") out[k] = v;
  return out;
}

/** The `traceparent` of the trace id, span id and flags at `at`. */
function traceparentAt(bytes: Uint8Array, at: number): string {
  const hex = Buffer.from(bytes.buffer, bytes.byteOffset + at, TRACEPARENT_BYTES).toString("hex");
  return `00-${hex.slice(0, 32)}-${hex.slice(32, 48)}-${hex.slice(48)}`;
}

/** The context of each of a row's `count` events from its `event_traces` bytes (see the module comment). */
export function decodeEventTraces(
  bytes: Uint8Array,
  count: number,
): (Readonly<Record<string, string>> | null)[] {
  const out: (Readonly<Record<string, string>> | null)[] = [];
  /** The row's new contexts so far, in order (null for one that could not be read). */
  const fresh: (Readonly<Record<string, string>> | null)[] = [];
  const r = new BinaryReader(bytes);
  /** The next event's context; undefined when the bytes cannot be read from here. */
  const read = (): Readonly<Record<string, string>> | null | undefined => {
    switch (r.uint32()) {
      case NONE:
        return null;
      case TRACEPARENT: {
        if (r.pos + TRACEPARENT_BYTES > r.len) return undefined;
        const c = { traceparent: traceparentAt(bytes, r.pos) };
        r.pos += TRACEPARENT_BYTES;
        fresh.push(c);
        return c;
      }
      case JSON_CONTEXT: {
        const c = jsonContext(r.bytes());
        fresh.push(c);
        return c;
      }
      case SAME_AS:
        return fresh[r.uint32()] ?? null;
      default:
        return undefined;
    }
  };
  try {
    if (bytes.length > 0 && r.uint32() === VERSION)
      for (let i = 0; i < count; i++) {
        const c = read();
        if (c === undefined) break;
        out.push(c);
      }
  } catch {
    // Truncated: the events from here on have none.
  }
  while (out.length < count) out.push(null);
  return out;
}
