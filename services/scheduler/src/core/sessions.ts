/**
 * Executor sessions and their leases: a lost session's leases wait for their executor to reconnect
 * and reclaim them (Attach.held_leases) until it has been silent for the session timeout;
 * unclaimed, they expire as a failed attempt. An executor that re-attaches says which leases it
 * holds, so the others of its id expire at once instead of at the end of the grace. A silent
 * session is declared lost.
 */
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import type { LeaseKey } from "@nexusflow/gen";
import { ACTIVE_LEASE, type RunState, type TaskState } from "../model/run-state.js";
import type { Core, Moment, SessionLeases } from "./context.js";
import { keyMatches } from "./fencing.js";
import { failAttempt } from "./retries.js";

/**
 * The retry-after hint a lost lease's attempt fails with: the retry is due at once instead of
 * after the policy's backoff. The executor was lost, not the task's dependencies, so waiting
 * would only add to the recovery; the attempt still counts against `maxAttempts`, which bounds a
 * task that keeps killing its executors.
 */
export const LOST_LEASE_RETRY_AFTER_MS = 1;

/**
 * The task's executor no longer holds its lease (lost, re-attached without it, or left it out of
 * its list): the attempt fails with LEASE_EXPIRED, its retry due at once.
 */
function expireLost(core: Core, task: TaskState, message: string, at: Moment): void {
  failAttempt(
    core,
    task,
    { type: TaskErrorType.LEASE_EXPIRED, message, retryable: true },
    LOST_LEASE_RETRY_AFTER_MS,
    at,
  );
}

/** Starts the grace period of a lease without a session; it expires unless an executor reclaims it. */
export function orphan(core: Core, task: TaskState, graceMs: number): void {
  task.sessionId = null;
  core.fx.setTimer({ kind: "lease-grace", task, token: task.fencingToken }, graceMs);
}

/**
 * The session ended, its executor silent for `silentForMs`: its leases wait for a reconnect until
 * the executor has been silent for the session timeout, then expire. Counting from the last word
 * rather than from the end of the stream makes every way of losing an executor cost the same one
 * timeout: a stream that ends at once (a SIGKILLed process) and one declared dead after a
 * timeout of silence (a partition), whose leases then go at once rather than a timeout later.
 */
export function sessionLost(
  core: Core,
  session: SessionLeases,
  silentForMs = 0,
  each: RunRules = direct,
): void {
  const graceMs = Math.max(0, core.sessionTimeoutMs - silentForMs);
  for (const id of session.leases) {
    const task = core.tasks.get(id);
    if (task !== undefined && task.sessionId === session.id && ACTIVE_LEASE.has(task.status))
      each(core.runs.get(task.runId), () => orphan(core, task, graceMs));
  }
  session.leases.clear();
}

/**
 * Applies rules of one run (`fn`): the engine confines a fault in them to that run
 * (engine/faults.ts), so that the other runs a session's loss or an attach reaches are still
 * handled. Returns what `fn` returns, or undefined after a fault. By default, `fn` directly.
 */
export type RunRules = <T>(run: RunState | undefined, fn: () => T) => T | undefined;

const direct: RunRules = (_run, fn) => fn();

/**
 * A lease's grace period ended: unless reclaimed (or decided) meanwhile, the attempt fails with
 * LEASE_EXPIRED, its retry due at once. Returns whether it did.
 */
export function leaseGraceExpired(core: Core, task: TaskState, token: number, at: Moment): boolean {
  if (task.fencingToken !== token || !ACTIVE_LEASE.has(task.status) || task.sessionId !== null) return false;
  expireLost(core, task, `executor ${task.executorId ?? "?"} was lost`, at);
  return true;
}

/**
 * A session attached with the leases its executor says it holds: those that are still its current
 * leases move to the session; the others are returned, to be revoked.
 */
export function reclaim(core: Core, session: SessionLeases, held: readonly LeaseKey[]): LeaseKey[] {
  const revoked: LeaseKey[] = [];
  for (const key of held) {
    const task = core.tasks.get(key.taskRunId);
    if (
      task === undefined ||
      !keyMatches(task, key) ||
      !ACTIVE_LEASE.has(task.status) ||
      task.executorId !== session.executorId
    ) {
      revoked.push(key);
      continue;
    }
    core.fx.leaseEnded(task);
    if (task.sessionId !== null) core.sessions.get(task.sessionId)?.leases.delete(task.id);
    task.sessionId = session.id;
    session.leases.add(task.id);
  }
  return revoked;
}

/**
 * The leases of an Attach's `held` this replica judges: an executor with a session to every
 * replica lists every lease it holds in each Attach, naming each lease's run (LeaseKey.run_id).
 * A lease of a run in a partition this replica does not hold, or whose runs it has not loaded
 * yet (`owns` false), belongs to another replica's session or is not judged yet: it is left out,
 * so it is neither reclaimed nor revoked here (a report adopts it later, core/fencing.ts). A
 * replica holds in memory only the tasks of the partitions it holds and has loaded
 * (engine/partition-load.ts), so such a lease is never one of its tasks. Keys without a run (older executors) are all judged, as before.
 */
export function ownHeldLeases(
  held: readonly LeaseKey[],
  owns: (runId: string) => boolean,
): readonly LeaseKey[] {
  return held.every((k) => k.runId === "" || owns(k.runId))
    ? held
    : held.filter((k) => k.runId === "" || owns(k.runId));
}

/** What an attach changed: held leases no longer valid (to revoke), and leases expired at once. */
export interface Attached {
  readonly revoked: LeaseKey[];
  readonly expired: number;
  /** Held leases that moved to the session. */
  readonly reclaimed: number;
}

/**
 * A session of `session.executorId` attached holding `held`: those leases move to it (the ones
 * that are no longer its executor's current leases are returned, to be revoked), and every other
 * active lease of the same executor id expires now, as it would at the end of its grace
 * (LEASE_EXPIRED, a failed attempt whose retry is due at once): an executor that does not list
 * a lease does not hold it, whether its process died with the lease running or never received
 * it, so waiting the grace out only delays the retry. Leases on the executor's earlier sessions count
 * too (the new session supersedes them). The caller has checked that the session may use this
 * executor id (the token binds it): attaching is what releases the id's leases. Leases of runs
 * `judges` leaves out (a partition this replica is not sure it still holds: paused, or cut off
 * from the database, past its lease) are neither revoked nor expired, since their run's owner may
 * be another replica now, holding those very leases; the listed ones that are its current leases
 * here are still reclaimed (harmless if the partition is gone: unloading it cancels them with
 * `partition_moved`, and the executor goes on).
 */
export function attached(
  core: Core,
  session: SessionLeases,
  held: readonly LeaseKey[],
  at: Moment,
  judges: (runId: string) => boolean = () => true,
  each: RunRules = direct,
): Attached {
  // A key whose run's rules faulted is revoked: its run has failed (engine/faults.ts).
  const unmatched: LeaseKey[] = [];
  for (const key of held) {
    const task = core.tasks.get(key.taskRunId);
    const run = task === undefined ? undefined : core.runs.get(task.runId);
    unmatched.push(...(each(run, () => reclaim(core, session, [key])) ?? [key]));
  }
  const revoked = unmatched.filter((k) => k.runId === "" || judges(k.runId));
  const lost: TaskState[] = [];
  for (const task of core.tasks.values()) {
    if (
      task.executorId === session.executorId &&
      task.sessionId !== session.id &&
      ACTIVE_LEASE.has(task.status) &&
      judges(task.runId)
    )
      lost.push(task);
  }
  for (const task of lost)
    each(core.runs.get(task.runId), () => {
      // Still on an earlier session (half-open): tell it to stop before that session is closed.
      if (task.sessionId !== null) core.fx.cancelLease(task, "the executor re-attached without this lease");
      expireLost(core, task, `executor ${session.executorId} re-attached without this lease`, at);
    });
  return { revoked, expired: lost.length, reclaimed: held.length - unmatched.length };
}

/** Whether a session has been silent longer than the session timeout (monotonic ms). */
export function isSilent(lastSeen: number, mono: number, sessionTimeoutMs: number): boolean {
  return mono - lastSeen > sessionTimeoutMs;
}

/** The leases of a session an executor was asked to list (Ping.list_held): task run id -> fencing token. */
export type AskedLeases = ReadonlyMap<string, number>;

/**
 * The leases of `session` to ask its executor about: those it holds on this session that were
 * sent to it (or that it reported: adopted, reclaimed), by their current fencing token; `unsent`
 * names the ones granted and not written to the stream yet (task run id -> fencing token), which
 * the executor cannot know of.
 */
export function leasesToList(
  core: Core,
  session: SessionLeases,
  unsent: ReadonlyMap<string, number> | undefined,
): AskedLeases {
  const asked = new Map<string, number>();
  for (const id of session.leases) {
    const task = core.tasks.get(id);
    if (task !== undefined && ACTIVE_LEASE.has(task.status) && unsent?.get(id) !== task.fencingToken)
      asked.set(id, task.fencingToken);
  }
  return asked;
}

/**
 * The executor of `session` listed the leases it holds (Pong.held) in answer to a Ping that asked
 * about `asked`: every one of those that is still this session's, at the same token, and that the
 * list leaves out is not held by the executor (it never received it, dropped it, or another
 * replica revoked it), so it expires now as a lost lease (LEASE_EXPIRED, its retry due at once),
 * with a Cancel in case. Without this, such a lease would stay on a live session, its task never
 * retried. Leases of runs `judges` leaves out (a partition this replica is not sure it still
 * holds) are left alone, as on an attach. Returns how many expired.
 */
export function listedHeld(
  core: Core,
  session: SessionLeases,
  asked: AskedLeases,
  held: readonly LeaseKey[],
  at: Moment,
  judges: (runId: string) => boolean = () => true,
  each: RunRules = direct,
): number {
  const listed = new Set(held.map((k) => `${k.taskRunId}/${k.attempt}/${k.fencingToken}`));
  let expired = 0;
  for (const [id, token] of asked) {
    const task = core.tasks.get(id);
    if (
      task === undefined ||
      task.sessionId !== session.id ||
      task.fencingToken !== token ||
      !ACTIVE_LEASE.has(task.status) ||
      listed.has(`${task.id}/${task.attempt}/${task.fencingToken}`) ||
      !judges(task.runId)
    )
      continue;
    each(core.runs.get(task.runId), () => {
      core.fx.cancelLease(task, "the executor does not list this lease as held");
      expireLost(
        core,
        task,
        `executor ${session.executorId} does not hold this lease (not in its list of held leases)`,
        at,
      );
    });
    expired++;
  }
  return expired;
}
