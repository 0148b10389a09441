/**
 * Ends a run whose changes PostgreSQL refused for their data (the batch writer dropped them and
 * their events): in one transaction its row becomes FAILED with the given error, its unfinished
 * tasks and attempts CANCELLED, and a runCompleted event joins the outbox with the run's next
 * sequence number, so that state and events stay in step. Only known-good values are written.
 * With a fence (docs/replicas.md), the transaction first checks that this replica still holds the
 * run's partition at its epoch, and keeps that check's lock until it commits.
 */
import type pg from "pg";
import {
  claimOf,
  fencedByDatabase,
  isPartitionFencedError,
  type WriteFence,
} from "../cluster/partitioning.js";
import { errorToProto } from "@nexusflow/common";
import { RunStatus } from "@nexusflow/gen";
import { encodeEventRows, lifecycleEventAt } from "./outbox.js";
import {
  ACTIVE_LEASE,
  TERMINAL_RUN_STATUSES,
  TERMINAL_TASK_STATUSES,
  type ErrorInfo,
  type RunStatusName,
} from "../model/run-state.js";

/** What {@link failRefusedRun} did. */
export type RefusedRunOutcome = "failed" | "not-stored" | "already-ended";

/** Marks a stored run FAILED with `error`, with its event; see the module comment. */
export async function failRefusedRun(
  pool: pg.Pool,
  runId: string,
  error: ErrorInfo,
  fence?: WriteFence,
): Promise<RefusedRunOutcome> {
  const claim = fence === undefined ? undefined : claimOf(fence, [runId]);
  if (isPartitionFencedError(claim)) throw claim;
  const client = await pool.connect();
  let broken = false;
  try {
    await client.query("BEGIN");
    if (fence !== undefined && claim !== undefined)
      await client
        .query("SELECT nexusflow_fence($1::uuid, $2::int[], $3::bigint[])", [
          fence.replicaId,
          claim.partitions,
          claim.epochs,
        ])
        .catch((e: unknown) => {
          throw fencedByDatabase(e, claim.partitions) ?? e;
        });
    const run = await client.query<{
      status: RunStatusName;
      workflow_name: string;
      workflow_version: number;
      next_sequence: string;
    }>(
      // The run's latest sequence is on its row or on the task row written with the event.
      `SELECT status, workflow_name, workflow_version,
              greatest(event_seq, coalesce((SELECT max(run_event_seq) FROM task_runs WHERE run_id = $1), 0)) + 1
                AS next_sequence
         FROM workflow_runs WHERE id = $1 FOR UPDATE`,
      [runId],
    );
    const row = run.rows[0];
    if (row === undefined) {
      await client.query("ROLLBACK");
      return "not-stored";
    }
    if (TERMINAL_RUN_STATUSES.has(row.status)) {
      await client.query("ROLLBACK");
      return "already-ended";
    }
    const sequence = BigInt(row.next_sequence);
    await client.query(
      `UPDATE workflow_runs SET status = 'FAILED', error = $2, event_seq = $3, updated_at = now(), ended_at = now()
        WHERE id = $1`,
      [runId, JSON.stringify(error), sequence.toString()],
    );
    await client.query(
      // A leased or running attempt is its task's latest, held in the task's row.
      `UPDATE task_runs SET attempt_status = 'CANCELLED', attempt_ended_at = now()
        WHERE run_id = $1 AND attempt_status = ANY($2::text[])`,
      [runId, [...ACTIVE_LEASE]],
    );
    await client.query(
      `UPDATE task_runs SET status = 'CANCELLED', lease_expires_at = NULL, next_attempt_at = NULL,
              updated_at = now(), ended_at = now()
        WHERE run_id = $1 AND status <> ALL($2::text[])`,
      [runId, [...TERMINAL_TASK_STATUSES]],
    );
    const event = lifecycleEventAt(
      { runId, sequence, workflowName: row.workflow_name, workflowVersion: row.workflow_version },
      { case: "runCompleted", value: { status: RunStatus.FAILED, error: errorToProto(error) } },
    );
    const [batch] = encodeEventRows([event]);
    await client.query(
      `INSERT INTO outbox_events (run_id, first_sequence, event_count, payload) VALUES ($1, $2, 1, $3)`,
      [runId, sequence.toString(), Buffer.from(batch!.payload)],
    );
    await client.query("COMMIT");
    return "failed";
  } catch (e) {
    broken = true;
    await client.query("ROLLBACK").catch(() => undefined);
    throw e;
  } finally {
    client.release(broken);
  }
}
