import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { RunState } from "../model/run-state.js";
import { lifecycleEvent } from "./outbox.js";

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
