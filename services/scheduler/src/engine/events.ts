/** Lifecycle events of the runs the engine holds, numbered per run in the order they happen. */
import { lifecycleEventAt, type EventInit, type OutboxRow } from "../persistence/outbox.js";
import type { RunState } from "../model/run-state.js";

export type { EventInit };

/**
 * Creates the outbox row for one event of `run`, consuming the run's next sequence number. The
 * message is encoded later, with the rest of its commit's events (encodeRunBatches).
 */
export function lifecycleEvent(run: RunState, event: EventInit, now = new Date()): OutboxRow {
  return lifecycleEventAt(
    {
      runId: run.id,
      sequence: BigInt(++run.eventSeq),
      workflowName: run.workflow.name,
      workflowVersion: run.workflow.version,
    },
    event,
    now,
  );
}
