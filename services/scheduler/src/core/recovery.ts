/**
 * Recovery: the model rebuilt from what storage holds (engine-store.ts StoredActiveState), and
 * every run picked up where it was: queued tasks offered again with what is left of their
 * schedule-to-start timeout, retries re-armed, held leases given a grace period for their
 * executors to reconnect and reclaim them, offloaded outputs read back, runs advanced.
 *
 * The grace of a lease after a restart is the session timeout, counted from the restart (the
 * moment the scheduler began starting, before it took the database), no allowance on top: the
 * caller passes what is left of it. An executor that is alive reconnects well within it (its reconnect backoff is
 * capped at 5 s, the default timeout is 10 s) and reclaims what it holds, expiring what it does
 * not at once (sessions.ts attached); a dead one's leases wait one session timeout, as they would
 * have without the restart.
 */
import type { CompiledWorkflow } from "../dag/index.js";
import type { StoredActiveState, StoredRun } from "../persistence/engine-store.js";
import {
  ACTIVE_LEASE,
  runTraceContext,
  runTraceSampled,
  storedStepId,
  type RunState,
  type TaskState,
} from "../model/run-state.js";
import type { Core, Moment } from "./context.js";
import { recoverClaims } from "./concurrency.js";
import { chargeRecovered } from "./fair-shares.js";
import { advanceAny, cancelByLimit } from "./runs.js";
import { orphan } from "./sessions.js";
import { armRetry, armRunDeadline, armScheduleToStart } from "./timers.js";
import { stepState } from "./transitions.js";
import { armDurable } from "./waits.js";
import { childRunId, startsChild } from "./children.js";
import { rebuildMaps } from "./maps.js";

/** A stored run as the model holds it, without its tasks (recovery; a child rolled back, child-rollback.ts). */
export function storedRunState(
  r: StoredRun,
  workflow: CompiledWorkflow,
  requestHash: string | null,
): RunState {
  return {
    id: r.id,
    definitionId: r.definitionId,
    workflow,
    status: r.status,
    input: r.input,
    output: null,
    error: null,
    idempotencyKey: r.idempotencyKey,
    requestHash,
    labels: r.labels,
    traceParent: r.traceParent ?? null,
    traceContext: runTraceContext(r.traceParent ?? null),
    traceSampled: runTraceSampled(r.traceParent ?? null),
    cancelRequested: r.cancelRequested,
    compensateOnCancel: r.compensateOnCancel,
    eventSeq: r.lastEventSeq,
    deadline: r.deadline,
    createdAt: r.createdAt,
    endedAt: null,
    tasks: new Map(),
    compensations: new Map(),
    compensationWaves: null,
    rollbackError: r.error,
    signals: r.signals ?? [],
    parent: r.parent ?? null,
    ...(r.rerun === undefined ? {} : { rerun: r.rerun }),
  };
}

/** What was recovered. */
export interface Recovered {
  readonly runs: readonly RunState[];
  /** Tasks offered again. */
  readonly queued: number;
  /** Leases waiting (one session timeout) for their executor to reclaim them. */
  readonly orphaned: number;
}

/**
 * Rebuilds the active runs from `stored` (`workflows` by definition id, `requestHashes` by run id
 * for runs whose idempotency key still names them) and resumes them; held leases expire `graceMs`
 * after `at` unless their executor reclaims them: what is left of one session timeout since the
 * restart began (@default `core.sessionTimeoutMs`, the restart taken to be `at`).
 */
export function recover(
  core: Core,
  stored: StoredActiveState,
  workflows: ReadonlyMap<number, CompiledWorkflow>,
  requestHashes: ReadonlyMap<string, string>,
  at: Moment,
  graceMs: number = core.sessionTimeoutMs,
): Recovered {
  const runs: RunState[] = [];
  for (const r of stored.runs) {
    const workflow = workflows.get(r.definitionId);
    if (workflow === undefined) throw new Error(`no workflow definition ${r.definitionId} for run ${r.id}`);
    const run = storedRunState(r, workflow, requestHashes.get(r.id) ?? null);
    core.runs.set(run.id, run);
    runs.push(run);
  }
  let queued = 0;
  let orphaned = 0;
  /** Element tasks of map steps, by run (maps.ts rebuildMaps). */
  const elements = new Map<RunState, TaskState[]>();
  const nowMs = at.now.getTime();
  /** The tasks recovered now (a run loaded back while others are in memory: its own only). */
  const recovered: TaskState[] = [];
  for (const t of stored.tasks) {
    const run = core.runs.get(t.runId);
    if (run === undefined) continue;
    const task: TaskState = { ...t, sessionId: null, lastHeartbeat: at.mono };
    recovered.push(task);
    if (task.elementIndex !== undefined) (elements.get(run) ?? elements.set(run, []).get(run))?.push(task);
    else if (task.kind === "STEP") run.tasks.set(task.stepId, task);
    else run.compensations.set(task.stepId, task);
    core.tasks.set(task.id, task);
    if (task.status === "QUEUED") {
      core.fx.offer(task, false);
      // The wait in the queue goes on across the restart: only what is left of it remains.
      armScheduleToStart(core, task, nowMs);
      queued++;
    } else if (task.status === "RETRY_WAIT") {
      armRetry(core, task, nowMs);
    } else if (task.status === "WAITING") {
      // A wait or sleep goes on across the restart: its timeout or wake-up time is stored.
      armDurable(core, task, nowMs);
    } else if (ACTIVE_LEASE.has(task.status)) {
      // Its group's minimum and maximum count it until it ends.
      chargeRecovered(core, task);
      orphan(core, task, graceMs);
      orphaned++;
    }
  }
  const childless: [RunState, TaskState][] = [];
  for (const task of recovered) {
    if (
      task.kind === "STEP" &&
      task.status === "SUCCEEDED" &&
      task.outputRef !== null &&
      // An element's output is read only while its map step still collects them (maps.ts).
      (task.elementIndex === undefined ||
        core.runs.get(task.runId)?.tasks.get(task.stepId)?.status === "WAITING")
    )
      core.fx.resolveOutput(task);
    // A child step (or element of a map over one) whose child is not active here: not started yet
    // (a crash before its commit), or ended without its parent's step (children.ts); the shell
    // reads its row and says which, once the maps are rebuilt.
    if (task.kind === "STEP" && task.status === "WAITING") {
      const run = core.runs.get(task.runId);
      if (
        run !== undefined &&
        startsChild(run, task) &&
        !core.runs.has(childRunId(run.id, storedStepId(task)))
      )
        childless.push([run, task]);
    }
  }
  // Map steps: their counters from their element rows, before the runs advance.
  for (const run of runs) rebuildMaps(core, run, elements.get(run) ?? [], at.now);
  for (const [run, task] of childless) core.fx.startChild(run, task);
  // Concurrency keys: holders and queues derived from the runs, before any lease is handed out.
  recoverClaims(core, runs, at.now, stepState, cancelByLimit);
  for (const run of runs) {
    armRunDeadline(core, run, nowMs);
    advanceAny(core, run, at.now);
  }
  return { runs, queued, orphaned };
}
