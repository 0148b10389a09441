import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { LifecycleEventSchema } from "@nexusflow/gen";
import { createHash } from "node:crypto";
import { lifecycleEventId, withEventId } from "./event-id.js";

/** RFC 9562's version-5 UUID of `name` in the lifecycle events' namespace, byte by byte. */
function uuid5(name: string): string {
  const h = createHash("sha1")
    .update(Buffer.from("3f6c1a0e9b4d4e7a8c2f5d1b7e9a0c46", "hex"))
    .update(name, "utf8")
    .digest();
  h[6] = ((h[6] as number) & 0x0f) | 0x50;
  h[8] = ((h[8] as number) & 0x3f) | 0x80;
  const x = h.toString("hex", 0, 16);
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

describe("lifecycle event ids", () => {
  const run = "0b6c5f0e-3a43-4f4e-9d0c-2f1d9b7f4a11";

  it("are version-5 UUIDs of the run and the sequence, the same every time, distinct otherwise", () => {
    const id = lifecycleEventId(run, 1);
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(lifecycleEventId(run, 1n), id);
    const ids = new Set<string>();
    for (let s = 1; s <= 1000; s++) ids.add(lifecycleEventId(run, s));
    ids.add(lifecycleEventId("0b6c5f0e-3a43-4f4e-9d0c-2f1d9b7f4a12", 1));
    assert.equal(ids.size, 1001);
  });

  it("are RFC 9562's version-5 UUIDs in Nexusflow's namespace (known answers)", () => {
    // Computed by Python's uuid.uuid5 (namespace 3f6c1a0e-9b4d-4e7a-8c2f-5d1b7e9a0c46, name "<run>/<sequence>"):
    // an id published once is the id of that event for good, whatever computes it.
    assert.equal(lifecycleEventId(run, 1), "23a2a602-8c16-500e-af97-c92f3cfdd9dc");
    assert.equal(lifecycleEventId(run, 9007199254740993n), "7b533e8a-8246-5a12-8d56-c67a061d44f2");
    assert.equal(lifecycleEventId("ünïcode-€", 42), "1506cc39-3f07-5e94-b75d-382b21538321");
    assert.equal(lifecycleEventId("r".repeat(300), 7), "06f34c5e-13fd-5767-a80a-b6d3d92f3b1e");
    // The longest name hashed from the reused buffer (80 UTF-16 units, three bytes each but the
    // "/1"), the shortest that takes its own, and a short one after a long one (nothing left over).
    const longest = "€".repeat(78);
    assert.equal(lifecycleEventId(longest, 1), uuid5(`${longest}/1`));
    assert.equal(lifecycleEventId(`${longest}€`, 1), uuid5(`${longest}€/1`));
    assert.equal(lifecycleEventId("r", 2), uuid5("r/2"));
  });

  it("go back into an encoding without one, which then decodes to the whole event", () => {
    const event = create(LifecycleEventSchema, {
      runId: run,
      sequence: 7n,
      time: timestampFromDate(new Date("2026-12-05T12:00:00Z")),
      workflowName: "orders",
      workflowVersion: 3,
      event: { case: "taskStarted", value: { taskRunId: "t-1", stepId: "charge", attempt: 2 } },
    });
    const stored = toBinary(LifecycleEventSchema, event);
    const id = lifecycleEventId(run, 7);
    const decoded = fromBinary(LifecycleEventSchema, withEventId(stored, id));
    assert.equal(decoded.eventId, id);
    assert.deepEqual({ ...decoded, eventId: "" }, event);
  });

  it("take an id of up to 127 bytes of UTF-8 (a row written before kept its own), and refuse a longer one", () => {
    const stored = toBinary(LifecycleEventSchema, create(LifecycleEventSchema, { runId: run, sequence: 1n }));
    for (const id of ["é".repeat(63) + "x", "x".repeat(127), ""]) {
      const bytes = withEventId(stored, id);
      assert.equal(fromBinary(LifecycleEventSchema, bytes).eventId, id);
      assert.equal(bytes.byteLength, 2 + Buffer.byteLength(id) + stored.byteLength);
    }
    assert.throws(() => withEventId(stored, "é".repeat(64)), RangeError);
  });
});
