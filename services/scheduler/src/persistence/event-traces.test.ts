import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeEventTraces, encodeEventTraces } from "./event-traces.js";

const A = Object.freeze({ traceparent: `00-${"0af7651916cd43dd8448eb211c80319c"}-${"b7ad6b7169203331"}-01` });
const B = { traceparent: `00-${"4bf92f3577b34da6a3ce929d0e0e4736"}-${"00f067aa0ba902b7"}-00` };
const WITH_STATE = { traceparent: A.traceparent, tracestate: "vendor=a,other=b" };
// Another version, upper case: kept as they are, in JSON.
const ODD = { traceparent: `01-${"0AF7651916CD43DD8448EB211C80319C"}-${"B7AD6B7169203331"}-01-extra` };
const UNICODE = { traceparent: A.traceparent, baggage: "user=zoë 🚀" };

describe("an outbox row's trace contexts (event_traces)", () => {
  it("gives each event its context back, a shared one written once, and null for none", () => {
    const contexts = [A, null, B, A, WITH_STATE, ODD, A, UNICODE, null, B, WITH_STATE];
    const bytes = encodeEventTraces(contexts)!;
    // The version, A and B as 26 bytes each, three references of 2 and two more, two nones, the
    // JSON ones with their lengths.
    const json = [WITH_STATE, ODD, UNICODE].map((c) => Buffer.byteLength(JSON.stringify(c)));
    assert.equal(bytes.byteLength, 1 + 2 * 26 + 4 * 2 + 2 + json.reduce((a, n) => a + 2 + n, 0));
    const read = decodeEventTraces(bytes, contexts.length);
    assert.deepEqual(read, contexts);
    assert.equal(read[0], read[3]);
    assert.equal(read[4], read[10]);
  });

  it("writes a traceparent of the right length but not lower-case version 00 as JSON, as it is", () => {
    const upper = { traceparent: A.traceparent.toUpperCase() };
    const badDash = { traceparent: `${A.traceparent.slice(0, 35)}_${A.traceparent.slice(36)}` };
    const notHex = { traceparent: `${A.traceparent.slice(0, 10)}g${A.traceparent.slice(11)}` };
    const contexts = [upper, A, badDash, notHex, upper];
    for (const c of [upper, badDash, notHex]) assert.equal(c.traceparent.length, 55);
    const bytes = encodeEventTraces(contexts)!;
    const json = [upper, badDash, notHex].map((c) => Buffer.byteLength(JSON.stringify(c)));
    // The version, A as 26 bytes, three JSON ones with their lengths, one reference.
    assert.equal(bytes.byteLength, 1 + 26 + json.reduce((a, n) => a + 2 + n, 0) + 2);
    assert.deepEqual(decodeEventTraces(bytes, contexts.length), contexts);
  });

  it("is null when no event has a context", () => {
    assert.equal(encodeEventTraces([]), null);
    assert.equal(encodeEventTraces([null, null]), null);
  });

  it("writes references of any size", () => {
    const many = Array.from({ length: 300 }, (_, i) => ({
      traceparent: `00-${i.toString(16).padStart(32, "0")}-${"1".repeat(16)}-01`,
    }));
    const contexts = [...many, many[0]!, many[299]!, many[150]!];
    assert.deepEqual(decodeEventTraces(encodeEventTraces(contexts)!, contexts.length), contexts);
  });

  it("reads what it cannot as no context, never failing", () => {
    const bytes = encodeEventTraces([A, B, WITH_STATE, A])!;
    // More events than entries, another version, truncated, an unknown kind, a reference ahead.
    assert.deepEqual(decodeEventTraces(bytes, 6), [A, B, WITH_STATE, A, null, null]);
    assert.deepEqual(decodeEventTraces(Uint8Array.of(2, ...bytes.subarray(1)), 2), [null, null]);
    assert.deepEqual(decodeEventTraces(bytes.subarray(0, 30), 4), [A, null, null, null]);
    assert.deepEqual(decodeEventTraces(Uint8Array.of(1, 0x07, 0x00), 2), [null, null]);
    assert.deepEqual(decodeEventTraces(Uint8Array.of(1, 0x03, 0x05, 0x00), 2), [null, null]);
    // JSON that is not an object of strings: no context, and its references none either.
    const bad = Buffer.from("[1,2]");
    assert.deepEqual(decodeEventTraces(Uint8Array.of(1, 0x02, bad.length, ...bad, 0x03, 0x00), 2), [
      null,
      null,
    ]);
    const mixed = Buffer.from('{"traceparent":"x","n":1}');
    assert.deepEqual(decodeEventTraces(Uint8Array.of(1, 0x02, mixed.length, ...mixed), 1), [
      { traceparent: "x" },
    ]);
    const invalidUtf8 = Uint8Array.of(1, 0x02, 2, 0xc3, 0x28);
    assert.deepEqual(decodeEventTraces(invalidUtf8, 1), [null]);
    assert.deepEqual(decodeEventTraces(new Uint8Array(), 1), [null]);
  });
});
