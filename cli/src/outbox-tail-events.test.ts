/**
 * What `nexusflow events tail` prints for an outbox row (decodeOutboxRow, pure): a task_held event
 * as one JSON line with its type, header and every field, the gate by its enum name; each event's
 * `traceparent` from the row's trace contexts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { HoldGate, LifecycleEventBatchSchema, TaskKind } from "@nexusflow/gen";
import { decodeOutboxRow } from "./outbox-tail.js";

const RUN = "0b6d9d4e-8f53-4d59-9f0b-8a4b7b1c2d3e";

describe("events tail lines", () => {
  it("prints a task_held event with its gate, limit, key and reason", () => {
    const payload = toBinary(
      LifecycleEventBatchSchema,
      create(LifecycleEventBatchSchema, {
        events: [
          {
            runId: RUN,
            sequence: 3n,
            time: timestampFromMs(Date.parse("2026-12-05T18:00:00Z")),
            workflowName: "charge",
            workflowVersion: 1,
            event: {
              case: "taskHeld",
              value: {
                taskRunId: "t-1",
                stepId: "charge",
                kind: TaskKind.STEP,
                attempt: 1,
                gate: HoldGate.CONCURRENCY_KEY,
                limit: "input.customerId",
                key: "c1",
                reason:
                  'concurrency key "c1" (input.customerId, limit 1): held by charge of run r-0; 1 of 3 in its queue',
              },
            },
          },
        ],
      }),
    );
    const [line, more] = decodeOutboxRow({
      id: "7",
      run_id: RUN,
      payload: Buffer.from(payload),
      trace_context: null,
      event_traces: null,
      created_at: new Date("2026-12-05T18:00:00Z"),
    });
    assert.equal(more, undefined);
    assert.ok(line);
    // The line `events tail` writes.
    const printed = JSON.parse(JSON.stringify(line)) as typeof line;
    assert.equal(printed.type, "task_held");
    assert.equal(printed.headers["nf-event-type"], "task_held");
    assert.deepEqual((printed.event as { taskHeld: unknown }).taskHeld, {
      taskRunId: "t-1",
      stepId: "charge",
      kind: "TASK_KIND_STEP",
      attempt: 1,
      gate: "HOLD_GATE_CONCURRENCY_KEY",
      limit: "input.customerId",
      key: "c1",
      reason:
        'concurrency key "c1" (input.customerId, limit 1): held by charge of run r-0; 1 of 3 in its queue',
    });
  });

  it("gives each event its trace context, one written once for the events that share it", () => {
    const traceparent = `00-${"a".repeat(32)}-${"b".repeat(16)}-00`;
    const event = (sequence: bigint) => ({
      runId: RUN,
      sequence,
      workflowName: "charge",
      workflowVersion: 1,
      event: { case: "runCompleted" as const, value: {} },
    });
    const payload = toBinary(
      LifecycleEventBatchSchema,
      create(LifecycleEventBatchSchema, { events: [event(1n), event(2n), event(3n)] }),
    );
    // The second event has none; the third has the first's: in event_traces (version 1, a
    // traceparent's ids and flags, none, the first again), and as JSON in rows written before it.
    const binary = Buffer.from([
      1,
      1,
      ...new Array<number>(16).fill(0xaa),
      ...new Array<number>(8).fill(0xbb),
      0,
      0,
      3,
      0,
    ]);
    for (const [trace_context, event_traces] of [
      [null, binary],
      [[{ traceparent }, null, 0], null],
    ] as const) {
      const lines = decodeOutboxRow({
        id: "8",
        run_id: RUN,
        payload: Buffer.from(payload),
        trace_context: trace_context === null ? null : [...trace_context],
        event_traces,
        created_at: new Date("2026-12-05T18:00:00Z"),
      });
      assert.deepEqual(
        lines.map((l) => l.headers["traceparent"]),
        [traceparent, undefined, traceparent],
      );
    }
  });
});
