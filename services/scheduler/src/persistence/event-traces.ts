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
 * Varints and lengths are protobuf's: written here straight into one array (a row's contexts are
 * written per commit, see `encodeEventTraces`), read by protobuf-es's BinaryReader.
 *
 * Reading is lenient: what cannot be read (another version, truncated bytes, a bad reference) gives
 * events without a context, never an error, since an event is published without its trace rather
 * than held back.
 */

import { BinaryReader } from "@bufbuild/protobuf/wire";
import { varintSize, writeVarint } from "@nexusflow/common";

const VERSION = 1;
const NONE = 0x00;
const TRACEPARENT = 0x01;
const JSON_CONTEXT = 0x02;
const SAME_AS = 0x03;
/** Bytes of a version-00 `traceparent`: trace id, span id, flags. */
const TRACEPARENT_BYTES = 25;

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/** The value of a lower-case hex digit's character code; -1 for any other character. */
function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/**
 * Whether `traceparent` is a lower-case version-00 one (`00-<32 hex>-<16 hex>-<2 hex>`, what the
 * SDK's propagator writes), which {@link writeTraceparent} writes as 25 bytes. Checked from its
 * character codes: a context per run of every commit, so no regex runs and no string is made.
 */
function isVersion00(traceparent: string): boolean {
  if (
    traceparent.length !== 55 ||
    traceparent.charCodeAt(0) !== 48 ||
    traceparent.charCodeAt(1) !== 48 ||
    traceparent.charCodeAt(2) !== 45 ||
    traceparent.charCodeAt(35) !== 45 ||
    traceparent.charCodeAt(52) !== 45
  )
    return false;
  for (let i = 3; i < 55; i++)
    if (i !== 35 && i !== 52 && hexValue(traceparent.charCodeAt(i)) < 0) return false;
  return true;
}

/** Writes the trace id, span id and flags of a checked `traceparent` ({@link isVersion00}) at `at`. */
function writeTraceparent(traceparent: string, out: Uint8Array, at: number): void {
  for (let i = 3; i < 55; i += 2) {
    if (i === 35 || i === 52) i++; // the dashes
    out[at++] = (hexValue(traceparent.charCodeAt(i)) << 4) | hexValue(traceparent.charCodeAt(i + 1));
  }
}

/** The `traceparent` of a context that holds it and nothing else, else undefined. */
function onlyTraceparent(context: Readonly<Record<string, string>>): string | undefined {
  let traceparent: string | undefined;
  for (const key in context) {
    if (key !== "traceparent") return undefined;
    traceparent = context[key];
  }
  return traceparent;
}

/**
 * The `event_traces` bytes of events with these contexts (one per event, in order; the same object
 * twice is written once); null when none has one. Written into one array of the size worked out
 * first (a JSON context, rare, is encoded in that first pass).
 */
export function encodeEventTraces(
  contexts: readonly (Readonly<Record<string, string>> | null)[],
): Uint8Array | null {
  if (contexts.every((c) => c === null)) return null;
  /** Each distinct context by its index among them. */
  const seen = new Map<object, number>();
  /** The JSON bytes of each distinct context that is not a lone version-00 `traceparent`. */
  const json = new Map<object, Uint8Array>();
  let size = 1;
  for (const c of contexts) {
    if (c === null) {
      size += 1;
      continue;
    }
    const at = seen.get(c);
    if (at !== undefined) {
      size += 1 + varintSize(at);
      continue;
    }
    seen.set(c, seen.size);
    const traceparent = onlyTraceparent(c);
    if (traceparent !== undefined && isVersion00(traceparent)) size += 1 + TRACEPARENT_BYTES;
    else {
      const bytes = utf8.encode(JSON.stringify(c));
      json.set(c, bytes);
      size += 1 + varintSize(bytes.length) + bytes.length;
    }
  }
  const out = new Uint8Array(size);
  let at = writeVarint(out, 0, VERSION);
  seen.clear();
  for (const c of contexts) {
    if (c === null) {
      out[at++] = NONE;
      continue;
    }
    const ref = seen.get(c);
    if (ref !== undefined) {
      out[at++] = SAME_AS;
      at = writeVarint(out, at, ref);
      continue;
    }
    seen.set(c, seen.size);
    const bytes = json.get(c);
    if (bytes === undefined) {
      out[at++] = TRACEPARENT;
      writeTraceparent(c.traceparent!, out, at);
      at += TRACEPARENT_BYTES;
    } else {
      out[at++] = JSON_CONTEXT;
      at = writeVarint(out, at, bytes.length);
      out.set(bytes, at);
      at += bytes.length;
    }
  }
  return out;
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
