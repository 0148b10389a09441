/**
 * Unloading: runs leave the model because this replica no longer owns their partition (issue #22,
 * docs/replicas.md), in two steps so that a clean hand-over can still commit their last changes.
 *
 * - {@link detachRuns} takes them out at once without touching a stored field: out of `runs` and
 *   `tasks` (a report for one of their leases is rejected from now on), their leases out of their
 *   sessions with a Cancel to the executor (nothing it reports later is accepted here), and the
 *   slots, shares and event waits they held in memory given back. What was marked for them stays
 *   with the writer until the engine says: a hand-over commits it first, a loss drops it.
 * - {@link disarmRuns}, once that is settled, makes the objects inert: every timer, queue entry or
 *   late callback that still holds one finds a task no longer in the state it acts on.
 *
 * The new owner (or this replica, when the partition comes back) loads them from their committed
 * rows through recovery (recovery.ts), as at start-up.
 */
import { ACTIVE_LEASE, type RunState, type TaskState } from "../model/run-state.js";
import type { Core } from "./context.js";
import { releaseRun, releaseTask } from "./concurrency.js";
import { releaseShare } from "./fair-shares.js";
import { mapElements } from "./maps.js";

/** What {@link detachRuns} took out of the model. */
export interface DetachedRuns {
  readonly runs: readonly RunState[];
  readonly tasks: readonly TaskState[];
  /** Leases whose executor was told to stop. */
  readonly leases: number;
}

/**
 * Takes out of the model the runs `belongs` names, with their tasks (and the leased tasks of ended
 * runs kept to reject late reports), telling executors to stop their leases with `reason`.
 */
export function detachRuns(core: Core, belongs: (runId: string) => boolean, reason: string): DetachedRuns {
  const runs: RunState[] = [];
  const tasks = new Set<TaskState>();
  for (const run of core.runs.values()) {
    if (!belongs(run.id)) continue;
    runs.push(run);
    for (const t of [...mapElements(run, false), ...run.tasks.values(), ...run.compensations.values()])
      tasks.add(t);
  }
  for (const t of core.tasks.values()) if (belongs(t.runId)) tasks.add(t);
  for (const run of runs) core.runs.delete(run.id);
  let leases = 0;
  for (const task of tasks) {
    if (core.tasks.get(task.id) === task) core.tasks.delete(task.id);
    if (task.sessionId !== null) {
      const session = core.sessions.get(task.sessionId);
      if (session?.leases.delete(task.id) === true && ACTIVE_LEASE.has(task.status)) {
        core.fx.cancelLease(task, reason);
        leases++;
      }
      // Not stored (executor_id is): a lease granted and not sent yet is not sent (leaseStands).
      task.sessionId = null;
    }
    core.fx.leaseEnded(task);
    core.eventWaits?.remove(task);
    if (task.fairLease !== undefined) releaseShare(task);
  }
  // Concurrency keys: their places in queues first, so that a slot freed next goes to a waiter
  // that stays, never to one of these.
  for (const held of [false, true]) {
    for (const task of tasks)
      if (task.claim !== undefined && (task.claim.state === "held") === held) releaseTask(core, task);
    for (const run of runs)
      if (run.claim !== undefined && (run.claim.state === "held") === held) releaseRun(core, run);
  }
  // In memory only: a queue entry still holding one of them takes no slot and no token.
  for (const task of tasks) {
    task.claim = undefined;
    task.rate = undefined;
  }
  return { runs, tasks: [...tasks], leases };
}

/**
 * Makes detached runs and tasks inert (see the module comment): only once their last changes are
 * committed or dropped, since the writer reads the objects when it commits.
 */
export function disarmRuns(detached: DetachedRuns): void {
  for (const task of detached.tasks) {
    task.status = "CANCELLED";
    task.sessionId = null;
    task.nextAttemptAt = null;
  }
  for (const run of detached.runs) run.status = "CANCELLED";
}
