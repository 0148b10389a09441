import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeRecord, recordIdempotencyKey, type SourceRecord } from "./kafka-record.js";
import { MAX_EVENT_PAYLOAD_BYTES } from "./publish.js";

function record(over: Partial<SourceRecord> = {}): SourceRecord {
  return {
    topic: "orders",
    partition: 2,
    offset: "41",
    timestamp: "1767225600000",
    key: Buffer.from("orders.created"),
    value: Buffer.from('{"orderId":"o-1","total":250}'),
    ...over,
  };
}

function rejected(r: SourceRecord, keyHeader?: string): { reason: string; detail: string } {
  const d = decodeRecord(r, keyHeader);
  assert.equal(d.ok, false, JSON.stringify(d));
  return d.ok ? { reason: "", detail: "" } : { reason: d.reason, detail: d.detail };
}

describe("a Kafka record as an event", () => {
  it("takes the record key as the event key and the JSON value as the payload", () => {
    assert.deepEqual(decodeRecord(record(), undefined), {
      ok: true,
      event: {
        key: "orders.created",
        payload: { orderId: "o-1", total: 250 },
        idempotencyKey: "kafka:orders/2/41@1767225600000",
      },
    });
  });

  it("takes the key from a header when one is named (the first value), ignoring the record key", () => {
    const d = decodeRecord(
      record({ key: Buffer.from("o-1"), headers: { "event-key": [Buffer.from("orders.paid"), "x.y"] } }),
      "event-key",
    );
    assert.ok(d.ok);
    assert.equal(d.event.key, "orders.paid");
    assert.deepEqual(rejected(record({ headers: {} }), "event-key"), {
      reason: "no_key",
      detail: 'the record has no header "event-key"',
    });
  });

  it("accepts any JSON value, a scalar included", () => {
    for (const [text, payload] of [
      ["42", 42],
      ['"hi"', "hi"],
      ["null", null],
      ["[1,{}]", [1, {}]],
    ] as const) {
      const d = decodeRecord(record({ value: Buffer.from(text) }), undefined);
      assert.ok(d.ok, text);
      assert.deepEqual(d.event.payload, payload);
    }
  });

  it("rejects a record with no key or an empty one", () => {
    assert.equal(rejected(record({ key: null })).reason, "no_key");
    assert.equal(rejected(record({ key: Buffer.alloc(0) })).reason, "no_key");
  });

  it("rejects a key that is no event key, saying why", () => {
    const r = rejected(record({ key: Buffer.from("orders created") }));
    assert.equal(r.reason, "invalid_key");
    assert.match(r.detail, /^the record key: /);
    assert.equal(rejected(record({ key: Buffer.from("a".repeat(256)) })).reason, "invalid_key");
  });

  it("rejects a value that is missing, not UTF-8 or not JSON", () => {
    assert.deepEqual(rejected(record({ value: null })), {
      reason: "not_json",
      detail: "the record has no value",
    });
    assert.equal(rejected(record({ value: Buffer.alloc(0) })).reason, "not_json");
    assert.deepEqual(rejected(record({ value: Buffer.from([0x7b, 0xff, 0x7d]) })), {
      reason: "not_json",
      detail: "the value is not UTF-8",
    });
    const r = rejected(record({ value: Buffer.from("{orderId: 1}") }));
    assert.equal(r.reason, "not_json");
    assert.match(r.detail, /^the value is not JSON: /);
  });

  it("rejects a value larger than an event's payload, before parsing it, and a payload that grows past it", () => {
    const big = Buffer.from(JSON.stringify({ blob: "x".repeat(MAX_EVENT_PAYLOAD_BYTES) }));
    assert.deepEqual(rejected(record({ value: big })), {
      reason: "too_large",
      detail: `the value is ${big.length} bytes; an event's payload is at most ${MAX_EVENT_PAYLOAD_BYTES}`,
    });
    // 1e5 is written 100000 when stored: within the bound as a value, past it as a payload.
    const numbers = `[${Array.from({ length: Math.floor((MAX_EVENT_PAYLOAD_BYTES - 2) / 4) }, () => "1e5").join(",")}]`;
    assert.ok(Buffer.byteLength(numbers) <= MAX_EVENT_PAYLOAD_BYTES);
    assert.equal(rejected(record({ value: Buffer.from(numbers) })).reason, "too_large");
  });

  it("rejects JSON an event cannot hold: a NUL character, a number out of range", () => {
    assert.deepEqual(rejected(record({ value: Buffer.from('{"a":["ok","x\\u0000y"]}') })), {
      reason: "not_storable",
      detail: "payload.a[1] contains a NUL character (U+0000)",
    });
    assert.deepEqual(rejected(record({ value: Buffer.from('{"n":1e400}') })), {
      reason: "not_storable",
      detail: "payload.n is a number out of range",
    });
    // Nested deeper than the stack allows, in 200 KB: rejected like the others, not thrown (a throw
    // stopped the partition, and the consumer group rejoined and crashed on it again, for ever).
    const deep = Buffer.from(`${"[".repeat(100_000)}${"]".repeat(100_000)}`);
    const refused = rejected(record({ value: deep }));
    assert.equal(refused.reason, "not_storable");
    assert.match(refused.detail, /nested too deeply/);
    // Deeper than a run can carry it (as a woken wait's output in the run's output, 46 levels): a
    // run it started or woke could be read by no client.
    const levels = (n: number): Buffer => Buffer.from(`${"[".repeat(n)}1${"]".repeat(n)}`);
    assert.equal(decodeRecord(record({ value: levels(46) }), undefined).ok, true);
    const tooDeep = rejected(record({ value: levels(47) }));
    assert.equal(tooDeep.reason, "not_storable");
    assert.match(tooDeep.detail, /nested too deeply: .* at most 46 levels/);
  });

  it("names each record by topic, partition, offset and timestamp, hashing a long topic", () => {
    const base = { partition: 0, offset: "9", timestamp: "5" };
    assert.equal(recordIdempotencyKey({ topic: "t", ...base }), "kafka:t/0/9@5");
    const long = recordIdempotencyKey({ topic: "t".repeat(249), ...base });
    assert.match(long, /^kafka:sha256:[0-9a-f]{64}\/0\/9@5$/);
    assert.notEqual(long, recordIdempotencyKey({ topic: "u".repeat(249), ...base }));
    // The longest key a record can have fits the column (200 characters).
    const longest = recordIdempotencyKey({
      topic: "t".repeat(249),
      partition: 2 ** 31 - 1,
      offset: "9223372036854775807",
      timestamp: "9223372036854775807",
    });
    assert.ok(longest.length <= 200, String(longest.length));
  });
});
