/**
 * Ended spans encoded as OTLP/protobuf on the thread that ends them, so that the export thread
 * (./export-worker.ts) gets one finished `ExportTraceServiceRequest` body per batch, moved to it
 * without a copy, and only sends it. Before, each span went over as plain arrays that
 * `postMessage` copied (structured clone), were made spans again there and serialized by the SDK's
 * exporter: three passes over every span on the export thread and one on the span's, where this is
 * one pass on the span's (bench/notes/26-session-thirty.md).
 *
 * The bytes are the SDK's own (`ProtobufTraceSerializer` of `@opentelemetry/otlp-transformer`,
 * which the tests compare byte for byte): the same fields in the same order, the same defaults
 * written, spans grouped by resource and then by instrumentation scope, each group in the order
 * its first span ended.
 */
import type { Attributes, HrTime, Link, SpanContext, SpanStatus } from "@opentelemetry/api";
import type { ReadableSpan, TimedEvent } from "@opentelemetry/sdk-trace";
import { varintSize } from "../wire/varint.js";

/** OTLP `SpanFlags`: whether the parent's remoteness is known, and whether it is remote. */
const SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE = 0x100;
const SPAN_FLAGS_CONTEXT_IS_REMOTE = 0x200;
/** Protobuf wire types. */
const VARINT = 0;
const FIXED64 = 1;
const LENGTH_DELIMITED = 2;
const FIXED32 = 5;
const MIN_INT64 = -(2 ** 63);
const MAX_INT64 = 2 ** 63;
/** An arena left this large by a burst of spans is given back once it is empty. */
const ARENA_KEEP_BYTES = 4 * 1024 * 1024;

const utf8 = new TextEncoder();

/** The value of one hex digit, as the SDK's serializer reads it. */
function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  return c - 55;
}

/**
 * A protobuf writer into a growing buffer. A nested message's length is written in one byte
 * reserved before it ({@link begin}); the rare longer one moves its bytes to make room ({@link end}).
 */
export class ProtoWriter {
  buf: Uint8Array;
  pos = 0;
  private readonly scratch = new DataView(new ArrayBuffer(8));

  constructor(size = 16 * 1024) {
    this.buf = new Uint8Array(size);
  }

  /** Makes room for `n` more bytes. */
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.buf.subarray(0, this.pos));
    this.buf = bigger;
  }

  tag(field: number, wire: number): void {
    this.uint32((field << 3) | wire);
  }

  /** An unsigned 32-bit varint. */
  uint32(value: number): void {
    this.ensure(5);
    let v = value >>> 0;
    while (v > 0x7f) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[this.pos++] = v;
  }

  /** A varint of an integer in the int64 range (negative ones in two's complement, ten bytes). */
  int64(value: number): void {
    if (value >= 0 && value <= 0xffffffff) {
      this.uint32(value);
      return;
    }
    this.ensure(10);
    let low: number;
    let high: number;
    if (value >= 0) {
      low = value >>> 0;
      high = (value / 4294967296) >>> 0;
    } else {
      const abs = Math.abs(value);
      low = ~(abs >>> 0) >>> 0;
      high = ~((abs / 4294967296) >>> 0) >>> 0;
      low = (low + 1) >>> 0;
      if (low === 0) high = (high + 1) >>> 0;
    }
    while (high > 0 || low > 0x7f) {
      this.buf[this.pos++] = (low & 0x7f) | 0x80;
      low = ((low >>> 7) | (high << 25)) >>> 0;
      high >>>= 7;
    }
    this.buf[this.pos++] = low & 0x7f;
  }

  fixed32(value: number): void {
    this.ensure(4);
    const v = value >>> 0;
    this.buf[this.pos++] = v & 0xff;
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = (v >>> 16) & 0xff;
    this.buf[this.pos++] = v >>> 24;
  }

  fixed64(low: number, high: number): void {
    this.fixed32(low);
    this.fixed32(high);
  }

  double(value: number): void {
    this.ensure(8);
    this.scratch.setFloat64(0, value, true);
    for (let i = 0; i < 8; i++) this.buf[this.pos++] = this.scratch.getUint8(i);
  }

  /** An HrTime as nanoseconds since the epoch, fixed64 (exact for any time an HrTime holds). */
  hrTime(time: HrTime): void {
    const seconds = time[0];
    const nanos = time[1];
    const lowSeconds = seconds & 0xffff;
    const highSeconds = (seconds / 65536) >>> 0;
    const fromLow = lowSeconds * 1e9;
    const fromHigh = highSeconds * 1e9;
    const lowWithCarry = (fromLow >>> 0) + (((fromHigh & 0xffff) * 65536) >>> 0) + nanos;
    const carry = Math.floor(lowWithCarry / 4294967296);
    const high = (Math.floor(fromLow / 4294967296) + ((fromHigh / 65536) >>> 0) + carry) >>> 0;
    this.fixed64(lowWithCarry >>> 0, high);
  }

  /** A length-delimited UTF-8 string (lone surrogates as U+FFFD, as TextEncoder writes them). */
  string(s: string): void {
    const n = s.length;
    const start = this.pos;
    this.uint32(n);
    this.ensure(n);
    const buf = this.buf;
    let at = this.pos;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        this.pos = start;
        this.bytes(utf8.encode(s));
        return;
      }
      buf[at++] = c;
    }
    this.pos = at;
  }

  /** Length-delimited bytes. */
  bytes(b: Uint8Array): void {
    this.uint32(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** A trace or span id given in hex, as length-delimited bytes. */
  hexId(hex: string): void {
    const n = hex.length >>> 1;
    this.uint32(n);
    this.ensure(n);
    for (let i = 0; i < n; i++)
      this.buf[this.pos++] = (hexValue(hex.charCodeAt(2 * i)) << 4) | hexValue(hex.charCodeAt(2 * i + 1));
  }

  /** Starts a nested message (after its tag): returns where its length goes. */
  begin(): number {
    this.ensure(1);
    return this.pos++;
  }

  /** Ends the nested message begun at `at`, writing its length there. */
  end(at: number): void {
    const length = this.pos - at - 1;
    const size = varintSize(length);
    if (size > 1) {
      this.ensure(size - 1);
      this.buf.copyWithin(at + size, at + 1, this.pos);
      this.pos += size - 1;
    }
    let v = length;
    let i = at;
    while (v > 0x7f) {
      this.buf[i++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[i] = v;
  }
}

/** OTLP `AnyValue` fields of an attribute value (nothing for null or undefined). */
function writeAnyValue(w: ProtoWriter, value: unknown): void {
  switch (typeof value) {
    case "string":
      w.tag(1, LENGTH_DELIMITED);
      w.string(value);
      return;
    case "boolean":
      w.tag(2, VARINT);
      w.uint32(value ? 1 : 0);
      return;
    case "number":
      if (Number.isInteger(value) && value >= MIN_INT64 && value < MAX_INT64) {
        w.tag(3, VARINT);
        w.int64(value);
      } else {
        w.tag(4, FIXED64);
        w.double(value);
      }
      return;
    case "object": {
      if (value === null) return;
      if (value instanceof Uint8Array) {
        w.tag(7, LENGTH_DELIMITED);
        w.bytes(value);
        return;
      }
      if (Array.isArray(value)) {
        w.tag(5, LENGTH_DELIMITED);
        const array = w.begin();
        for (const item of value as unknown[]) {
          w.tag(1, LENGTH_DELIMITED);
          const at = w.begin();
          writeAnyValue(w, item);
          w.end(at);
        }
        w.end(array);
        return;
      }
      w.tag(6, LENGTH_DELIMITED);
      const list = w.begin();
      writeKeyValues(w, value as Record<string, unknown>, 1);
      w.end(list);
      return;
    }
    default:
      return;
  }
}

/** Each own property of `attributes` as an OTLP `KeyValue` in field `field`. */
function writeKeyValues(w: ProtoWriter, attributes: Record<string, unknown>, field: number): void {
  for (const key in attributes) {
    if (!Object.prototype.hasOwnProperty.call(attributes, key)) continue;
    w.tag(field, LENGTH_DELIMITED);
    const kv = w.begin();
    w.tag(1, LENGTH_DELIMITED);
    w.string(key);
    w.tag(2, LENGTH_DELIMITED);
    const value = w.begin();
    writeAnyValue(w, attributes[key]);
    w.end(value);
    w.end(kv);
  }
}

function spanFlags(traceFlags: number, isRemote: boolean | undefined): number {
  return (
    (traceFlags & 0xff) | SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE | (isRemote ? SPAN_FLAGS_CONTEXT_IS_REMOTE : 0)
  );
}

function writeEvent(w: ProtoWriter, event: TimedEvent): void {
  w.tag(1, FIXED64);
  w.hrTime(event.time);
  w.tag(2, LENGTH_DELIMITED);
  w.string(event.name);
  if (event.attributes !== undefined) writeKeyValues(w, event.attributes, 3);
  w.tag(4, VARINT);
  // `||`, as the SDK's serializer: NaN writes 0 too.
  w.uint32(event.droppedAttributesCount || 0);
}

/** Fields 1-3 of a span or link: its trace id, span id and trace state (when not empty). */
function writeContext(w: ProtoWriter, context: SpanContext): void {
  w.tag(1, LENGTH_DELIMITED);
  w.hexId(context.traceId);
  w.tag(2, LENGTH_DELIMITED);
  w.hexId(context.spanId);
  const traceState = context.traceState?.serialize();
  if (traceState) {
    w.tag(3, LENGTH_DELIMITED);
    w.string(traceState);
  }
}

function writeLink(w: ProtoWriter, link: Link): void {
  const context = link.context;
  writeContext(w, context);
  if (link.attributes !== undefined) writeKeyValues(w, link.attributes, 4);
  w.tag(5, VARINT);
  w.uint32(link.droppedAttributesCount || 0);
  w.tag(6, FIXED32);
  w.fixed32(spanFlags(context.traceFlags, context.isRemote));
}

function writeStatus(w: ProtoWriter, status: SpanStatus): void {
  if (status.message) {
    w.tag(2, LENGTH_DELIMITED);
    w.string(status.message);
  }
  w.tag(3, VARINT);
  w.uint32(status.code);
}

/** `value` as the nested message in field `field`, its fields written by `write`. */
function writeMessage<T>(
  w: ProtoWriter,
  field: number,
  value: T,
  write: (w: ProtoWriter, value: T) => void,
): void {
  w.tag(field, LENGTH_DELIMITED);
  const at = w.begin();
  write(w, value);
  w.end(at);
}

/** The fields of an OTLP `Span` (its body, without its own tag and length). */
export function writeSpan(w: ProtoWriter, span: ReadableSpan): void {
  const sc = span.spanContext();
  const parent = span.parentSpanContext;
  writeContext(w, sc);
  if (parent?.spanId) {
    w.tag(4, LENGTH_DELIMITED);
    w.hexId(parent.spanId);
  }
  w.tag(5, LENGTH_DELIMITED);
  w.string(span.name);
  // OTLP's SpanKind is the API's plus one (0 is "unspecified", not written).
  const kind = (span.kind as number | undefined) == null ? 0 : span.kind + 1;
  if (kind !== 0) {
    w.tag(6, VARINT);
    w.uint32(kind);
  }
  w.tag(7, FIXED64);
  w.hrTime(span.startTime);
  w.tag(8, FIXED64);
  w.hrTime(span.endTime);
  writeKeyValues(w, span.attributes, 9);
  w.tag(10, VARINT);
  w.uint32(span.droppedAttributesCount);
  for (const event of span.events) writeMessage(w, 11, event, writeEvent);
  w.tag(12, VARINT);
  w.uint32(span.droppedEventsCount);
  for (const link of span.links) writeMessage(w, 13, link, writeLink);
  w.tag(14, VARINT);
  w.uint32(span.droppedLinksCount);
  writeMessage(w, 15, span.status, writeStatus);
  w.tag(16, FIXED32);
  w.fixed32(spanFlags(sc.traceFlags, parent?.isRemote));
}

type Resource = ReadableSpan["resource"];
type Scope = ReadableSpan["instrumentationScope"] & {
  attributes?: Attributes;
  droppedAttributesCount?: number;
};

/**
 * A resource's encoded `Resource` body (once its detected attributes are all there: until then it
 * is encoded with each batch, as the SDK reads them when it serializes), and its scopes.
 */
interface ResourceEntry {
  body: Uint8Array | undefined;
  scopes: WeakMap<Scope, ScopeEntry>;
}

/** A scope's encoded `InstrumentationScope` body and schema URL, under its resource. */
interface ScopeEntry {
  resource: Resource;
  body: Uint8Array;
  schemaUrl: string | undefined;
}

function encodeResource(resource: Resource): Uint8Array {
  const w = new ProtoWriter(1024);
  writeKeyValues(w, resource.attributes, 1);
  w.tag(2, VARINT);
  w.uint32(0);
  return w.buf.slice(0, w.pos);
}

function encodeScope(scope: Scope): Uint8Array {
  const w = new ProtoWriter(256);
  w.tag(1, LENGTH_DELIMITED);
  w.string(scope.name);
  if (scope.version) {
    w.tag(2, LENGTH_DELIMITED);
    w.string(scope.version);
  }
  if (scope.attributes !== undefined) writeKeyValues(w, scope.attributes, 3);
  if (scope.droppedAttributesCount) {
    w.tag(4, VARINT);
    w.uint32(scope.droppedAttributesCount);
  }
  return w.buf.slice(0, w.pos);
}

/** A batch taken from an {@link OtlpSpanBuffer}: an `ExportTraceServiceRequest` and its span count. */
export interface EncodedSpans {
  /** The request's bytes, in a buffer of their own (transferable). */
  body: Uint8Array;
  count: number;
}

/**
 * Ended spans, each encoded once as it is added, waiting to be taken in batches as
 * `ExportTraceServiceRequest` bodies (the oldest first).
 */
export class OtlpSpanBuffer {
  private arena = new ProtoWriter();
  /** Per span waiting, oldest first: its scope and where its bytes end in the arena. */
  private scopesOf: ScopeEntry[] = [];
  private ends: number[] = [];
  private readonly resources = new WeakMap<Resource, ResourceEntry>();
  private assembly = new ProtoWriter(64 * 1024);

  /** Spans waiting. */
  get length(): number {
    return this.ends.length;
  }

  /** Encodes `span` and keeps it; throws (keeping nothing of it) when it cannot be encoded. */
  add(span: ReadableSpan): void {
    const scope = this.scopeOf(span);
    const start = this.arena.pos;
    try {
      writeSpan(this.arena, span);
    } catch (e) {
      this.arena.pos = start;
      throw e;
    }
    this.scopesOf.push(scope);
    this.ends.push(this.arena.pos);
  }

  /** The oldest `max` spans at most, as one request; they leave the buffer. */
  take(max: number): EncodedSpans {
    const count = Math.min(max, this.ends.length);
    // Grouped by resource, then scope, each in the order of its first span (as the SDK's serializer).
    const groups = new Map<Resource, Map<ScopeEntry, number[]>>();
    for (let i = 0; i < count; i++) {
      const scope = this.scopesOf[i]!;
      let scopes = groups.get(scope.resource);
      if (scopes === undefined) groups.set(scope.resource, (scopes = new Map<ScopeEntry, number[]>()));
      let spans = scopes.get(scope);
      if (spans === undefined) scopes.set(scope, (spans = []));
      spans.push(i);
    }
    const w = this.assembly;
    w.pos = 0;
    const arena = this.arena.buf;
    for (const [resource, scopes] of groups) {
      w.tag(1, LENGTH_DELIMITED);
      const resourceSpans = w.begin();
      w.tag(1, LENGTH_DELIMITED);
      w.bytes(this.resourceBody(resource));
      for (const [scope, spans] of scopes) {
        w.tag(2, LENGTH_DELIMITED);
        const scopeSpans = w.begin();
        w.tag(1, LENGTH_DELIMITED);
        w.bytes(scope.body);
        for (const i of spans) {
          w.tag(2, LENGTH_DELIMITED);
          w.bytes(arena.subarray(i === 0 ? 0 : this.ends[i - 1], this.ends[i]));
        }
        if (scope.schemaUrl) {
          w.tag(3, LENGTH_DELIMITED);
          w.string(scope.schemaUrl);
        }
        w.end(scopeSpans);
      }
      if (resource.schemaUrl) {
        w.tag(3, LENGTH_DELIMITED);
        w.string(resource.schemaUrl);
      }
      w.end(resourceSpans);
    }
    const body = w.buf.slice(0, w.pos);
    // A burst of large spans leaves its buffer behind only while it is small.
    if (w.buf.length > ARENA_KEEP_BYTES) this.assembly = new ProtoWriter(64 * 1024);
    this.drop(count);
    return { body, count };
  }

  /** Forgets every span waiting. */
  clear(): void {
    this.drop(this.ends.length);
  }

  private drop(count: number): void {
    if (count === 0) return;
    if (count === this.ends.length) {
      this.scopesOf = [];
      this.ends = [];
      if (this.arena.buf.length > ARENA_KEEP_BYTES) this.arena = new ProtoWriter();
      else this.arena.pos = 0;
      return;
    }
    const from = this.ends[count - 1]!;
    this.arena.buf.copyWithin(0, from, this.arena.pos);
    this.arena.pos -= from;
    this.scopesOf = this.scopesOf.slice(count);
    this.ends = this.ends.slice(count).map((end) => end - from);
  }

  private resourceEntry(resource: Resource): ResourceEntry {
    let entry = this.resources.get(resource);
    if (entry === undefined) {
      entry = { body: undefined, scopes: new WeakMap() };
      this.resources.set(resource, entry);
    }
    return entry;
  }

  /** The `Resource` body of a batch's resource (kept once its detected attributes are all there). */
  private resourceBody(resource: Resource): Uint8Array {
    const entry = this.resourceEntry(resource);
    if (entry.body !== undefined) return entry.body;
    const body = encodeResource(resource);
    // The services detect none (sdk.ts): theirs are kept at their first batch.
    if (resource.asyncAttributesPending !== true) entry.body = body;
    return body;
  }

  private scopeOf(span: ReadableSpan): ScopeEntry {
    const resource = this.resourceEntry(span.resource);
    const scope = span.instrumentationScope as Scope;
    let entry = resource.scopes.get(scope);
    if (entry === undefined) {
      entry = { resource: span.resource, body: encodeScope(scope), schemaUrl: scope.schemaUrl };
      resource.scopes.set(scope, entry);
    }
    return entry;
  }
}
