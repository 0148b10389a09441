/** Builds outbox rows for lifecycle events, numbering them per run in commit order. */
import { randomUUID } from "node:crypto";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { LifecycleEventSchema } from "@nexusflow/gen";
import type { OutboxRow } from "../persistence/batch-writer.js";
import type { RunState } from "./model.js";

/** The `event` oneof of LifecycleEvent, as an init shape. */
export type EventInit = NonNullable<MessageInitShape<typeof LifecycleEventSchema>["event"]>;

/** Creates the outbox row for one event of `run`, consuming the run's next sequence number. */
export function lifecycleEvent(run: RunState, event: EventInit, now = new Date()): OutboxRow {
  const sequence = ++run.eventSeq;
  const eventId = randomUUID();
  const message = create(LifecycleEventSchema, {
    eventId,
    runId: run.id,
    sequence: BigInt(sequence),
    time: timestampFromDate(now),
    workflowName: run.workflow.name,
    workflowVersion: run.workflow.version,
    event,
  });
  return {
    eventId,
    runId: run.id,
    sequence,
    type: event.case ?? "unknown",
    payload: toBinary(LifecycleEventSchema, message),
    traceContext: null,
  };
}
