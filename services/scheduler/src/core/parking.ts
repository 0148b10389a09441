/**
 * Parking: a run that only waits leaves memory. A run whose unfinished tasks are WAITING on
 * something outside it (a signal, an event, a sleep's time, a child run), or PENDING behind their
 * dependencies, and nothing else (no task
 * queued, leased, running or waiting to retry, no compensation, no cancel under way, no concurrency
 * key held, no map step collecting) needs nothing of the scheduler until one of those happens:
 * {@link parkable} says so, and {@link parkRun} takes it out of the model, with what the shell
 * stores for it (engine/parking.ts): when it must wake at the latest (its nearest wait timeout or
 * sleep, its deadline) and the event patterns its waits for an event listen to. Whatever happens to
 * it later loads it back through recovery (recovery.ts), from its committed rows.
 *
 * A parent in memory reaches its children there (a cancel, children.ts cancelChild), so a child
 * run parks only once its parent is out of memory, and a parent is loaded back with its children
 * ({@link waitingChildren}, engine/parking.ts).
 */
import { TERMINAL_TASK_STATUSES, storedStepId, type RunState, type TaskState } from "../model/run-state.js";
import type { Core } from "./context.js";
import { childRunId, startsChild } from "./children.js";
import type { ParkedEntry, ParkedEventWait } from "../model/parked-run.js";

export type { ParkedEntry, ParkedEventWait };

/**
 * Whether `task` of `run` waits on something outside the run: a durable wait, a sleep, or a child
 * run that has started (it is in memory: a child run is never parked; a child being started, or
 * found ended, is the shell's work in progress).
 */
function waitsOutside(core: Core, run: Readonly<RunState>, task: Readonly<TaskState>): boolean {
  if (task.status !== "WAITING" || task.kind !== "STEP" || task.elementIndex !== undefined) return false;
  const step = run.workflow.stepsById.get(task.stepId);
  if (step === undefined || step.map !== null) return false;
  if (step.durable != null) return true;
  return startsChild(run, task) && core.runs.has(childRunId(run.id, storedStepId(task)));
}

/** Whether `run` only waits (see the module comment), and so may leave memory once committed. */
export function parkable(core: Core, run: Readonly<RunState>): boolean {
  if (core.runs.get(run.id) !== run) return false;
  if (run.status !== "RUNNING" || run.cancelRequested) return false;
  // A child parks only once its parent has left memory (a parent in memory reaches its children).
  if (run.parent !== null && core.runs.has(run.parent.runId)) return false;
  if (run.claim !== undefined || run.compensations.size > 0 || run.childRollbacks !== undefined) return false;
  let waiting = 0;
  for (const task of run.tasks.values()) {
    if (TERMINAL_TASK_STATUSES.has(task.status)) {
      // An offloaded output not read back yet: its dependents wait for the read, here.
      if (task.outputRef !== null && task.resolvedOutput === undefined && task.status === "SUCCEEDED")
        return false;
      continue;
    }
    // A step waiting for its dependencies waits with them (unless a concurrency key holds it).
    if (task.status === "PENDING" && task.claim === undefined && task.hold === undefined) continue;
    if (!waitsOutside(core, run, task)) return false;
    waiting++;
  }
  return waiting > 0;
}

/** A POSIX regular expression every key the pattern's segments match matches (see keyMatches). */
export function keyPatternRegex(segments: readonly string[]): string {
  let re = "^";
  for (const [i, seg] of segments.entries()) {
    const dot = i === 0 ? "" : "\\.";
    if (seg === "**") return `${re}${dot}.*$`;
    re += dot + (seg === "*" ? "[^.]*" : seg.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  }
  return `${re}$`;
}

/**
 * Takes a {@link parkable} run out of the model (its tasks, its waits for an event in the index)
 * and returns what the shell stores for it. The shell clears its timers (the tasks' waits, the
 * deadline) and must have committed everything it changed before.
 */
export function parkRun(core: Core, run: RunState): ParkedEntry {
  let wake = run.deadline?.getTime() ?? Infinity;
  const eventWaits: ParkedEventWait[] = [];
  for (const task of run.tasks.values()) {
    core.tasks.delete(task.id);
    if (task.status !== "WAITING") continue;
    core.eventWaits?.remove(task);
    if (task.nextAttemptAt !== null) wake = Math.min(wake, task.nextAttemptAt.getTime());
    const durable = run.workflow.stepsById.get(task.stepId)?.durable;
    if (durable?.kind !== "event") continue;
    const literal = durable.segments.every((s) => s !== "*" && s !== "**");
    eventWaits.push({
      taskRunId: task.id,
      key: literal ? durable.event : null,
      pattern: literal ? null : keyPatternRegex(durable.segments),
    });
  }
  core.runs.delete(run.id);
  return { runId: run.id, wakeAt: wake === Infinity ? null : new Date(wake), eventWaits };
}

/** The child runs that the WAITING child workflow steps among `tasks` of run `run` wait on. */
export function waitingChildren(
  run: Pick<RunState, "id" | "workflow">,
  tasks: Iterable<Pick<TaskState, "stepId" | "elementIndex" | "kind" | "status">>,
): string[] {
  const ids: string[] = [];
  for (const task of tasks) {
    if (task.status !== "WAITING" || task.kind !== "STEP") continue;
    const step = run.workflow.stepsById.get(task.stepId);
    if (step?.child == null || (step.map === null) !== (task.elementIndex === undefined)) continue;
    ids.push(childRunId(run.id, storedStepId(task)));
  }
  return ids;
}
