/**
 * The relay's event header (outbox-store.ts eventHeader): read straight from the bytes, it must
 * say what protobuf-es's reader says for every encoding, and leave to that reader (which reads it,
 * or throws as before) what it does not take.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { jsonToValue } from "@nexusflow/common";
import { LifecycleEventSchema } from "@nexusflow/gen";
import { eventHeader, headerByReader } from "./outbox-store.js";

/** Every case of LifecycleEvent's `event`, with a value of its own (an empty one where it has none). */
const CASES = LifecycleEventSchema.fields.filter((f) => f.oneof?.name === "event").map((f) => f.localName);

/** The header, or the error's name when reading throws. */
function outcome(read: (b: Uint8Array) => unknown, bytes: Uint8Array): unknown {
  try {
    return read(bytes);
  } catch (e) {
    return e instanceof Error ? `throws ${e.name}` : "throws";
  }
}

function assertSame(bytes: Uint8Array, what: string): void {
  assert.deepEqual(outcome(eventHeader, bytes), outcome(headerByReader, bytes), what);
}

/** A deterministic pseudo-random sequence (the failing case can be run again). */
function random(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x / 2147483648;
  };
}

describe("the relay's event header", () => {
  it("reads each event case, with and without an id, at any sequence", () => {
    assert.ok(CASES.length >= 10, CASES.join());
    for (const name of CASES)
      for (const sequence of [0n, 1n, 127n, 128n, 2n ** 49n - 1n, 2n ** 49n, 2n ** 53n + 1n])
        for (const eventId of ["", "3f6c1a0e-9b4d-4e7a-8c2f-5d1b7e9a0c46", "\ufeffé€𝄞"]) {
          const event = create(LifecycleEventSchema, {
            eventId,
            runId: "0b6c5f0e-3a43-4f4e-9d0c-2f1d9b7f4a11",
            sequence,
            time: timestampFromDate(new Date("2026-12-07T12:00:00Z")),
            workflowName: "orders",
            workflowVersion: 3,
            event: { case: name, value: {} } as never,
          });
          const bytes = toBinary(LifecycleEventSchema, event);
          assertSame(bytes, `${name} ${sequence} ${JSON.stringify(eventId)}`);
          const header = eventHeader(bytes);
          assert.equal(header.type, name);
          assert.equal(header.eventId, eventId);
          assert.equal(header.sequence, Number(sequence));
        }
  });

  it("reads a task's output and unknown fields of every wire type as the reader does", () => {
    const event = create(LifecycleEventSchema, {
      runId: "r",
      sequence: 9n,
      event: {
        case: "taskSucceeded",
        value: { taskRunId: "t", stepId: "s", attempt: 2, output: jsonToValue({ a: [1, "x"] }) },
      },
    });
    const known = toBinary(LifecycleEventSchema, event);
    const w = new BinaryWriter();
    w.tag(1000, WireType.Varint).uint64(2n ** 63n); // past what the fast path reads: the reader's
    w.tag(1001, WireType.Bit64).fixed64(5n);
    w.tag(1002, WireType.Bit32).fixed32(7);
    w.tag(1003, WireType.LengthDelimited).bytes(new Uint8Array([1, 2, 3]));
    w.tag(1004, WireType.StartGroup).tag(1, WireType.Varint).int32(1).tag(1004, WireType.EndGroup);
    const unknown = w.finish();
    for (const bytes of [
      known,
      new Uint8Array([...known, ...unknown]),
      new Uint8Array([...unknown, ...known]),
      unknown.subarray(0, 11), // varint, fixed64
    ])
      assertSame(bytes, Buffer.from(bytes).toString("hex"));
  });

  it("agrees with the reader on cut, corrupt and random bytes", () => {
    const bytes = toBinary(
      LifecycleEventSchema,
      create(LifecycleEventSchema, {
        eventId: "e",
        runId: "0b6c5f0e-3a43-4f4e-9d0c-2f1d9b7f4a11",
        sequence: 300n,
        event: { case: "taskStarted", value: { taskRunId: "t", stepId: "s", attempt: 1 } },
      }),
    );
    for (let n = 0; n <= bytes.length; n++) assertSame(bytes.subarray(0, n), `cut at ${n}`);
    // Tags, lengths and values padded with continuation bytes (0x80 ... 0x00), up to ten bytes.
    for (let pad = 0; pad <= 6; pad++) {
      const padded = (b: number): number[] =>
        pad === 0 ? [b] : [b | 0x80, ...Array<number>(pad - 1).fill(0x80), 0];
      for (const [what, field] of [
        ["event id", [...padded(0x0a), 1, 0x41]],
        ["sequence", [...padded(0x18), 5]],
        ["sequence value", [0x18, ...padded(5)]],
        ["run id length", [0x12, ...padded(1), 0x42]],
      ] as const)
        assertSame(new Uint8Array(field), `${what} padded by ${pad}`);
    }
    const next = random(7);
    for (let i = 0; i < 5000; i++) {
      const b = Uint8Array.from(bytes);
      for (let k = 0; k < 1 + Math.floor(next() * 3); k++)
        b[Math.floor(next() * b.length)] = Math.floor(next() * 256);
      assertSame(b, `corrupted ${Buffer.from(b).toString("hex")}`);
      const junk = Uint8Array.from({ length: Math.floor(next() * 40) }, () => Math.floor(next() * 256));
      assertSame(junk, `random ${Buffer.from(junk).toString("hex")}`);
    }
  });
});
