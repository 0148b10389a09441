import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type Attributes,
  type HrTime,
  type Link,
  SpanKind,
  SpanStatusCode,
  createTraceState,
} from "@opentelemetry/api";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import type { ReadableSpan } from "@opentelemetry/sdk-trace";
import { OtlpSpanBuffer, ProtoWriter } from "./otlp-spans.js";

type Resource = ReadableSpan["resource"];
type Scope = ReadableSpan["instrumentationScope"];

/** What the serializers read of a resource. */
function resource(attributes: Attributes, schemaUrl?: string): Resource {
  return { attributes, schemaUrl, asyncAttributesPending: false } as unknown as Resource;
}

const SERVICE = resource({ "service.name": "nexusflow-scheduler", "host.name": "h1" });
const OTHER = resource(
  { "service.name": "nexusflow-executor", pid: 42 },
  "https://opentelemetry.io/schemas/1.30.0",
);
const ENGINE: Scope = { name: "nexusflow-scheduler", version: "1.2.3" };
const GRPC: Scope = {
  name: "@opentelemetry/instrumentation-grpc",
  version: "0.300.0",
  schemaUrl: "https://s/1",
};
const BARE: Scope = { name: "bare" };

let n = 0;
/** A span with sensible fields, `over` replacing some. */
function span(
  over: Partial<ReadableSpan> & { traceState?: string; remote?: boolean; noParent?: boolean } = {},
): ReadableSpan {
  n += 1;
  const spanId = (0x1000_0000 + n).toString(16).padStart(16, "0");
  const traceId = "0af7651916cd43dd8448eb211c80319c";
  const sc = {
    traceId,
    spanId,
    traceFlags: 1,
    ...(over.traceState === undefined ? {} : { traceState: createTraceState(over.traceState) }),
  };
  const start: HrTime = [1_796_678_382 + n, 452_000_001];
  const end: HrTime = [1_796_678_383 + n, 12];
  return {
    name: `attempt s${n}`,
    kind: SpanKind.PRODUCER,
    spanContext: () => sc,
    ...(over.noParent === true
      ? {}
      : {
          parentSpanContext: {
            traceId,
            spanId: "b7ad6b7169203331",
            traceFlags: 1,
            ...(over.remote === undefined ? {} : { isRemote: over.remote }),
          },
        }),
    startTime: start,
    endTime: end,
    status: { code: SpanStatusCode.UNSET },
    attributes: { "nexusflow.run_id": `r${n}`, "nexusflow.attempt": n },
    links: [],
    events: [],
    duration: [1, 0],
    ended: true,
    resource: SERVICE,
    instrumentationScope: ENGINE,
    droppedAttributesCount: 0,
    droppedEventsCount: 0,
    droppedLinksCount: 0,
    ...over,
  };
}

/** Adds the spans to a buffer and takes them all: the bytes must be the SDK serializer's. */
function assertSameBytes(spans: ReadableSpan[], buffer = new OtlpSpanBuffer()): void {
  for (const s of spans) buffer.add(s);
  const taken = buffer.take(Number.MAX_SAFE_INTEGER);
  assert.equal(taken.count, spans.length);
  assert.equal(buffer.length, 0);
  const expected = ProtobufTraceSerializer.serializeRequest(spans)!;
  assert.equal(Buffer.from(taken.body).toString("hex"), Buffer.from(expected).toString("hex"));
  // A buffer of its own, so that it can be moved to the export thread.
  assert.equal(taken.body.byteOffset, 0);
  assert.equal(taken.body.buffer.byteLength, taken.body.length);
}

describe("OTLP spans encoded on the span's thread", () => {
  it("writes what the SDK's serializer writes, for every kind of attribute value", () => {
    const long = "x".repeat(300);
    assertSameBytes([
      span({
        attributes: {
          negative: -1,
          big: 2 ** 40,
          bigNegative: -(2 ** 40),
          int64Edge: 2 ** 63,
          belowInt64: -(2 ** 63),
          unsafe: 2 ** 60 + 1,
          half: 0.5,
          nan: Number.NaN,
          inf: Number.POSITIVE_INFINITY,
          negativeZero: -0,
          zero: 0,
          yes: true,
          no: false,
          empty: "",
          accents: "café crème",
          emoji: "run 🚀 done",
          lone: "a\ud800b",
          long,
          veryLong: "é".repeat(20_000),
          strings: ["a", "", "ü"],
          numbers: [1, -2, 3.5],
          mixed: [true, null, undefined, "s"],
          none: undefined,
          bytes: new Uint8Array([0, 1, 255]),
          nested: { a: 1, b: ["x"], c: { d: false } },
        },
      }),
    ]);
  });

  it("writes every field of a span: kinds, parents, trace state, events, links, status, dropped counts", () => {
    const link: Link = {
      context: {
        traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
        spanId: "00f067aa0ba902b7",
        traceFlags: 0,
        isRemote: true,
        traceState: createTraceState("k=v"),
      },
      attributes: { why: "rerun" },
      droppedAttributesCount: 2,
    };
    assertSameBytes([
      span({ kind: SpanKind.SERVER, traceState: "vendor=a,other=b", remote: true }),
      span({ kind: SpanKind.INTERNAL, noParent: true }),
      span({ kind: SpanKind.CLIENT, remote: false }),
      span({
        kind: SpanKind.CONSUMER,
        events: [
          {
            name: "started",
            time: [1_796_678_390, 5],
            attributes: { attempt: 1 },
            droppedAttributesCount: 1,
          },
          { name: "bare", time: [0, 0] },
        ],
        // Ids in upper case too (the API's validation accepts them).
        links: [
          link,
          {
            context: {
              traceId: "4BF92F3577B34DA6A3CE929D0E0E4736",
              spanId: "00F067AA0BA902B8",
              traceFlags: 1,
            },
          },
        ],
        status: { code: SpanStatusCode.ERROR, message: "card declined: ça coûte" },
        droppedAttributesCount: 3,
        droppedEventsCount: 300,
        droppedLinksCount: 1,
      }),
      span({ status: { code: SpanStatusCode.OK }, startTime: [0, 999_999_999], endTime: [4_000_000_000, 1] }),
    ]);
  });

  it("groups spans by resource, then scope, in the order each first ended, schema URLs included", () => {
    assertSameBytes([
      span(),
      span({ instrumentationScope: GRPC }),
      span({ resource: OTHER, instrumentationScope: BARE }),
      span({ instrumentationScope: BARE }),
      span({ resource: OTHER }),
      span({ instrumentationScope: GRPC }),
      span(),
    ]);
  });

  it("takes the oldest spans in batches, as many as asked, and keeps the rest for the next", () => {
    const buffer = new OtlpSpanBuffer();
    const spans = Array.from({ length: 7 }, (_, i) =>
      span({ resource: i % 3 === 0 ? OTHER : SERVICE, instrumentationScope: i % 2 === 0 ? GRPC : ENGINE }),
    );
    for (const s of spans) buffer.add(s);
    const first = buffer.take(3);
    assert.equal(first.count, 3);
    assert.deepEqual(first.body, ProtobufTraceSerializer.serializeRequest(spans.slice(0, 3)));
    buffer.add(spans[0]!);
    const rest = buffer.take(100);
    assert.equal(rest.count, 5);
    assert.deepEqual(rest.body, ProtobufTraceSerializer.serializeRequest([...spans.slice(3), spans[0]!]));
    const none = buffer.take(100);
    assert.equal(none.count, 0);
    assert.equal(none.body.length, 0);
  });

  it("grows past its first buffers and encodes again after a clear", () => {
    const buffer = new OtlpSpanBuffer();
    const attributes: Attributes = {};
    for (let i = 0; i < 40; i++) attributes[`attribute.${i}`] = `value ${i} `.repeat(5);
    assertSameBytes(
      Array.from({ length: 500 }, () => span({ attributes })),
      buffer,
    );
    buffer.add(span());
    buffer.clear();
    assert.equal(buffer.length, 0);
    assertSameBytes([span(), span({ resource: OTHER })], buffer);
  });

  it("encodes a resource again while its detected attributes are pending", () => {
    const buffer = new OtlpSpanBuffer();
    const attributes: Attributes = { "service.name": "s" };
    const pending = { attributes, asyncAttributesPending: true } as unknown as Resource;
    // Two spans of it in one batch: one resource, as the SDK groups them.
    const first = [span({ resource: pending }), span({ resource: pending })];
    for (const s of first) buffer.add(s);
    assert.deepEqual(buffer.take(10).body, ProtobufTraceSerializer.serializeRequest(first));
    // The detection ends: the next span's resource has its attributes.
    attributes["host.name"] = "h1";
    const second = span({ resource: pending });
    buffer.add(second);
    const body = buffer.take(10).body;
    assert.deepEqual(body, ProtobufTraceSerializer.serializeRequest([second]));
    assert.ok(Buffer.from(body).includes("h1"));
  });

  it("keeps nothing of a span that cannot be encoded, and goes on", () => {
    const buffer = new OtlpSpanBuffer();
    const good = span();
    buffer.add(good);
    const bad = span();
    Object.defineProperty(bad, "attributes", {
      get: () => {
        throw new Error("hostile attributes");
      },
    });
    assert.throws(() => buffer.add(bad), /hostile attributes/);
    assert.equal(buffer.length, 1);
    const next = span({ instrumentationScope: GRPC });
    buffer.add(next);
    const taken = buffer.take(10);
    assert.deepEqual(taken.body, ProtobufTraceSerializer.serializeRequest([good, next]));
  });

  it("writes nested lengths of every size", () => {
    for (const size of [0, 1, 127, 128, 16_383, 16_384, 2_097_152]) {
      const w = new ProtoWriter(4);
      const at = w.begin();
      w.ensure(size);
      w.pos += size;
      w.end(at);
      let length = 0;
      let shift = 0;
      let i = 0;
      for (;;) {
        const b = w.buf[i++]!;
        length += (b & 0x7f) * 2 ** shift;
        if (b < 0x80) break;
        shift += 7;
      }
      assert.equal(length, size);
      assert.equal(w.pos, i + size);
    }
  });
});
