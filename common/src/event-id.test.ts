import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { LifecycleEventSchema } from "@nexusflow/gen";
import { lifecycleEventId, withEventId } from "./event-id.js";

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
});
