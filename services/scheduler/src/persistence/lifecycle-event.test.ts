import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type DescMessage, ScalarType, create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ValueSchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { jsonToValue } from "@nexusflow/common";
import { LifecycleEventBatchSchema, LifecycleEventSchema } from "@nexusflow/gen";
import type { RunState } from "../model/run-state.js";
import { HAND_WRITTEN_FIELDS, encodeEventBatch } from "./event-encoding.js";
import { type EventInit, lifecycleEvent, lifecycleEventAt } from "./outbox.js";

/** The fields of a run that events read. */
function run(id = "7f1c9a52-3c1e-4e53-9d0b-1c2d3e4f5a6b"): RunState {
  return {
    id,
    workflow: { name: "orders", version: 3 },
    eventSeq: 0,
  } as unknown as RunState;
}

describe("lifecycle events", () => {
  it("numbers a run's events in order", () => {
    const r = run();
    const a = lifecycleEvent(r, { case: "runCompleted", value: {} });
    const b = lifecycleEvent(r, { case: "runCompleted", value: {} });
    assert.deepEqual([a.message.sequence, b.message.sequence, r.eventSeq], [1n, 2n, 2]);
    // Event ids are derived where the event leaves the outbox (lifecycleEventId), not stored.
    assert.deepEqual([a.message.eventId, b.message.eventId], ["", ""]);
    assert.deepEqual(
      [a.message.runId, a.message.workflowName, a.message.workflowVersion],
      [r.id, "orders", 3],
    );
    assert.equal(a.message.event.case, "runCompleted");
  });
});

/** A value for every field of `schema` that is not its zero value (nested messages one level deep). */
function filled(schema: DescMessage, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of schema.fields) {
    if (f.oneof !== undefined && f !== f.oneof.fields[0]) continue;
    const v = ((): unknown => {
      switch (f.fieldKind) {
        case "scalar":
          return sample(f.scalar, f.number);
        case "enum":
          return f.enum.values[f.enum.values.length - 1]?.number;
        case "message":
          if (f.message.typeName === "google.protobuf.Value") return jsonToValue({ a: [1, "b", null, true] });
          return depth < 1 ? create(f.message, filled(f.message, depth + 1)) : undefined;
        case "list":
          return f.listKind === "scalar" ? [sample(f.scalar, f.number), sample(f.scalar, f.number + 1)] : [];
        case "map":
          return f.mapKind === "scalar" ? { k: sample(f.scalar, f.number) } : {};
      }
    })();
    if (v === undefined) continue;
    if (f.oneof !== undefined) out[f.oneof.localName] = { case: f.localName, value: v };
    else out[f.localName] = v;
  }
  return out;
}

function sample(t: ScalarType, n: number): unknown {
  switch (t) {
    case ScalarType.STRING:
      return `s${n}-é😀`;
    case ScalarType.BOOL:
      return true;
    case ScalarType.BYTES:
      return new Uint8Array([n, 0, 255]);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return BigInt(-n * 1_000_000_007);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return BigInt(n * 1_000_000_007);
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return n + 0.5;
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return n * 300;
    default:
      return -n * 300;
  }
}

describe("the outbox's LifecycleEvent, made and encoded by hand", () => {
  const r = run();
  const cases = LifecycleEventSchema.fields.filter((f) => f.oneof?.name === "event");

  it("knows every field of the messages it writes by hand (teach event-encoding.ts a new one)", () => {
    const all = new Map<string, DescMessage>();
    const visit = (m: DescMessage): void => {
      if (all.has(m.typeName)) return;
      all.set(m.typeName, m);
      for (const f of m.fields) if (f.message !== undefined) visit(f.message);
    };
    visit(LifecycleEventSchema);
    for (const [name, numbers] of Object.entries(HAND_WRITTEN_FIELDS)) {
      const schema = all.get(name);
      assert.ok(schema !== undefined, name);
      assert.deepEqual(
        schema.fields
          .filter((f) => f.oneof?.name !== "event")
          .map((f) => f.number)
          .sort((a, b) => a - b),
        [...numbers],
        name,
      );
    }
  });

  it("encodes every kind of Value as toBinary does, zero values and empty containers too", () => {
    const values = [
      jsonToValue(0),
      create(ValueSchema, { kind: { case: "numberValue", value: -0 } }),
      create(ValueSchema, { kind: { case: "numberValue", value: Number.NaN } }),
      create(ValueSchema, { kind: { case: "numberValue", value: -Infinity } }),
      create(ValueSchema, {}),
      jsonToValue(1e308),
      jsonToValue(""),
      jsonToValue(false),
      jsonToValue({}),
      jsonToValue([]),
      jsonToValue({ "": { a: [[], {}, [null]], "\u0000": "é😀" } }),
    ];
    const events = values.map((output, i) =>
      create(LifecycleEventSchema, {
        runId: r.id,
        sequence: BigInt(i + 1),
        event: { case: i % 2 === 0 ? "taskSucceeded" : "runCompleted", value: { output } },
      }),
    );
    for (const e of events)
      assert.deepEqual(
        encodeEventBatch([e]),
        toBinary(LifecycleEventBatchSchema, create(LifecycleEventBatchSchema, { events: [e] })),
      );
  });

  it("keeps unknown fields of an event or its body, as toBinary does", () => {
    const unknown = [{ no: 99, wireType: 0, data: new Uint8Array([1]) }];
    const a = create(LifecycleEventSchema, {
      runId: r.id,
      event: { case: "taskStarted", value: { attempt: 1 } },
    });
    a.$unknown = unknown;
    const b = create(LifecycleEventSchema, {
      runId: r.id,
      event: { case: "taskStarted", value: { attempt: 1 } },
    });
    if (b.event.case === "taskStarted") b.event.value.$unknown = unknown;
    assert.deepEqual(
      encodeEventBatch([a, b]),
      toBinary(LifecycleEventBatchSchema, create(LifecycleEventBatchSchema, { events: [a, b] })),
    );
  });

  it("makes the message create() makes, and encodes it byte for byte as toBinary does", () => {
    assert.ok(cases.length >= 15);
    const times = [new Date(0), new Date(1_796_563_213_943), new Date(-1_500), new Date(999)];
    const events = cases.flatMap((f, i) =>
      [{}, filled(f.message as DescMessage)].map((value) => {
        const event = { case: f.localName, value } as EventInit;
        const time = times[i % times.length] as Date;
        const row = lifecycleEventAt(
          {
            runId: r.id,
            sequence: BigInt(i * 1000),
            workflowName: i % 2 ? "" : "orders/ü",
            workflowVersion: i,
          },
          event,
          time,
        );
        const expected = create(LifecycleEventSchema, {
          runId: r.id,
          sequence: BigInt(i * 1000),
          time: timestampFromDate(time),
          workflowName: i % 2 ? "" : "orders/ü",
          workflowVersion: i,
          event,
        });
        assert.ok(equals(LifecycleEventSchema, row.message, expected), f.localName);
        assert.deepEqual(
          encodeEventBatch([row.message]),
          toBinary(LifecycleEventBatchSchema, create(LifecycleEventBatchSchema, { events: [expected] })),
          f.localName,
        );
        return row.message;
      }),
    );
    const batch = encodeEventBatch(events);
    assert.deepEqual(
      batch,
      toBinary(LifecycleEventBatchSchema, create(LifecycleEventBatchSchema, { events })),
    );
    assert.ok(
      equals(
        LifecycleEventBatchSchema,
        fromBinary(LifecycleEventBatchSchema, batch),
        create(LifecycleEventBatchSchema, { events }),
      ),
    );
  });
});
