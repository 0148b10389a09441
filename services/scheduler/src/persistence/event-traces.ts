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
 *
 * Reading is lenient: what cannot be read (another version, truncated bytes, a bad reference) gives
 * events without a context, never an error, since an event is published without its trace rather
 * than held back.
 */

const VERSION = 1;
const NONE = 0x00;
const TRACEPARENT = 0x01;
const JSON_CONTEXT = 0x02;
const SAME_AS = 0x03;
/** A version-00 `traceparent` in lower case (what the SDK's propagator writes). */
const TRACEPARENT_SHAPE = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

function varintSize(v: number): number {
  let size = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    size++;
  }
  return size;
}

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

/** The byte of the two hex digits at `at` of `s`, without making a string. */
function hexByte(s: string, at: number): number {
  return (hexDigit(s.charCodeAt(at)) << 4) | hexDigit(s.charCodeAt(at + 1));
}

/**
 * The `event_traces` bytes of events with these contexts (one per event, in order; the same object
 * twice is written once); null when none has one.
 */
export function encodeEventTraces(
  contexts: readonly (Readonly<Record<string, string>> | null)[],
): Uint8Array | null {
  if (contexts.every((c) => c === null)) return null;
  /** Each context's entry: its index among the new ones, or its bytes when first seen. */
  const seen = new Map<object, number>();
  const entries: (number | Uint8Array | string | null)[] = [];
  let size = 1;
  for (const c of contexts) {
    if (c === null) {
      entries.push(null);
      size += 1;
      continue;
    }
    const at = seen.get(c);
    if (at !== undefined) {
      entries.push(at);
      size += 1 + varintSize(at);
      continue;
    }
    seen.set(c, seen.size);
    const traceparent = onlyTraceparent(c);
    if (traceparent !== undefined) {
      entries.push(traceparent);
      size += 26;
    } else {
      const json = utf8.encode(JSON.stringify(c));
      entries.push(json);
      size += 1 + varintSize(json.length) + json.length;
    }
  }
  const out = new Uint8Array(size);
  let pos = 0;
  const varint = (v: number): void => {
    while (v >= 0x80) {
      out[pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    out[pos++] = v;
  };
  out[pos++] = VERSION;
  for (const e of entries) {
    if (e === null) out[pos++] = NONE;
    else if (typeof e === "number") {
      out[pos++] = SAME_AS;
      varint(e);
    } else if (typeof e === "string") {
      out[pos++] = TRACEPARENT;
      // "00-" trace id "-" span id "-" flags
      for (let i = 3; i < 35; i += 2) out[pos++] = hexByte(e, i);
      for (let i = 36; i < 52; i += 2) out[pos++] = hexByte(e, i);
      out[pos++] = hexByte(e, 53);
    } else {
      out[pos++] = JSON_CONTEXT;
      varint(e.length);
      out.set(e, pos);
      pos += e.length;
    }
  }
  return out;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

function hex(bytes: Uint8Array, from: number, to: number): string {
  let s = "";
  for (let i = from; i < to; i++) s += HEX[bytes[i]!]!;
  return s;
}

/** A context read from JSON: an object of strings, else null. */
function jsonContext(text: string): Readonly<Record<string, string>> | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) if (typeof v === "string") out[k] = v;
  return out;
}

/** The context of each of a row's `count` events from its `event_traces` bytes (see the module comment). */
export function decodeEventTraces(
  bytes: Uint8Array,
  count: number,
): (Readonly<Record<string, string>> | null)[] {
  const out: (Readonly<Record<string, string>> | null)[] = [];
  /** The row's new contexts so far, in order (null for one that could not be read). */
  const fresh: (Readonly<Record<string, string>> | null)[] = [];
  let pos = 1;
  const varint = (): number | undefined => {
    let v = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = bytes[pos++];
      if (b === undefined) return undefined;
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
    }
    return undefined;
  };
  const read = (): Readonly<Record<string, string>> | null | undefined => {
    switch (bytes[pos++]) {
      case NONE:
        return null;
      case TRACEPARENT: {
        if (pos + 25 > bytes.length) return undefined;
        const traceparent = `00-${hex(bytes, pos, pos + 16)}-${hex(bytes, pos + 16, pos + 24)}-${hex(bytes, pos + 24, pos + 25)}`;
        pos += 25;
        const c = { traceparent };
        fresh.push(c);
        return c;
      }
      case JSON_CONTEXT: {
        const length = varint();
        if (length === undefined || pos + length > bytes.length) return undefined;
        let c: Readonly<Record<string, string>> | null;
        try {
          c = jsonContext(utf8Decoder.decode(bytes.subarray(pos, pos + length)));
        } catch {
          c = null;
        }
        pos += length;
        fresh.push(c);
        return c;
      }
      case SAME_AS: {
        const i = varint();
        return i === undefined ? undefined : (fresh[i] ?? null);
      }
      default:
        return undefined;
    }
  };
  const readable = bytes[0] === VERSION;
  for (let i = 0; i < count; i++) {
    const c = readable ? read() : undefined;
    if (c === undefined) {
      // Unreadable from here on: the rest have none.
      while (out.length < count) out.push(null);
      break;
    }
    out.push(c);
  }
  return out;
}
