/**
 * Map steps (dynamic fan-out, dag/map.ts): a map step that becomes ready goes WAITING with its
 * items as its input, and runs its task once per element as element tasks: task rows of kind STEP
 * stored as `<step>[<index>]`, made as they are queued, never more than `parallelism` of them
 * unfinished (queued, leased, running or waiting for a retry). Each element has the step's retry
 * policy and timeouts. When every element succeeded, the step SUCCEEDS with their outputs in item
 * order; an element failing for good fails the step at once and cancels the others (fail-fast),
 * or once every element ended (collect, MAP_ELEMENTS_FAILED listing the failures).
 *
 * The bookkeeping is counters (MapState): an element's end costs O(1) and makes the next element
 * if any, so a scheduling pass never scans a map's elements; the step's end reads them once.
 * Recovery rebuilds a map from its rows (rebuildMap): the elements made, their states, and the
 * counters, so a restart neither runs a finished element again nor loses an unfinished one.
 *
 * A map over a child workflow (the step has `workflow`): an element is not queued but waits on a
 * child run of its own (children.ts startChildStep), WAITING like a child step, and ends with it;
 * it counts as unfinished under `parallelism` meanwhile. Cancelling an element cancels its child
 * by the step's `onParentCancel`: with compensation when the map fails fast (or the run's cancel
 * asks for it). Such a map keeps its elements once it ended (also when rebuilt), so that a
 * rollback of the run reaches their children.
 */
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { TaskKind } from "@nexusflow/gen";
import { isDagError, renderElementInput, type CompiledStep } from "../dag/index.js";
import {
  ACTIVE_LEASE,
  TERMINAL_TASK_STATUSES,
  newTaskState,
  type ErrorInfo,
  type MapState,
  type RunState,
  type TaskState,
} from "../model/run-state.js";
import { cancelChild, startChildStep } from "./children.js";
import type { Core } from "./context.js";
import {
  endTask,
  failTerminally,
  finishAttempt,
  queueTask,
  stepStates,
  succeedTask,
  waitTask,
} from "./transitions.js";

/** Most failures listed in MAP_ELEMENTS_FAILED's details. */
export const MAX_LISTED_FAILURES = 100;

/** The element tasks of a run's maps (only the unfinished ones with `unfinishedOnly`). */
export function mapElements(run: RunState, unfinishedOnly: boolean): TaskState[] {
  const out: TaskState[] = [];
  if (run.maps === undefined) return out;
  for (const map of run.maps.values())
    for (let i = 0; i < map.created; i++) {
      const t = map.elements[i];
      if (t !== undefined && (!unfinishedOnly || !TERMINAL_TASK_STATUSES.has(t.status))) out.push(t);
    }
  return out;
}

/** The map step `task` became ready with `items` (runs.ts advance): it waits for its elements. */
export function startMap(
  core: Core,
  run: RunState,
  task: TaskState,
  step: CompiledStep,
  items: readonly unknown[],
  now: Date,
): void {
  task.input = items;
  waitTask(core, run, task, null, TaskKind.STEP);
  const map = newMap(task, items);
  (run.maps ??= new Map()).set(step.id, map);
  fill(core, run, map, step, now);
}

function newMap(task: TaskState, items: readonly unknown[]): MapState {
  return {
    task,
    items,
    elements: [],
    created: 0,
    inFlight: 0,
    succeeded: 0,
    failed: 0,
    unresolved: 0,
    filling: false,
    work: 0,
  };
}

/** Makes and queues elements while fewer than `parallelism` are unfinished; ends the step when all ended. */
function fill(core: Core, run: RunState, map: MapState, step: CompiledStep, now: Date): void {
  const parallelism = step.map?.parallelism ?? 1;
  let states: ReturnType<typeof stepStates> | undefined;
  map.filling = true;
  try {
    while (map.task.status === "WAITING" && map.inFlight < parallelism && map.created < map.items.length) {
      const index = map.created;
      const element = newTaskState(run.id, step.id, "STEP", step.type, step.order, now, core.newId());
      element.elementIndex = index;
      map.elements[index] = element;
      map.created++;
      map.inFlight++;
      map.work++;
      core.tasks.set(element.id, element);
      states ??= stepStates(run);
      try {
        element.input = renderElementInput(
          run.workflow,
          step,
          run.input ?? null,
          states,
          { id: run.id, workflow: run.workflow.name, version: run.workflow.version },
          map.items[index],
          index,
        );
      } catch (error) {
        if (!isDagError(error)) throw error;
        failTerminally(
          core,
          run,
          element,
          {
            // Rendered past what a lease carries (dag/template.ts counts while rendering).
            type: isDagError(error, "INPUT_TOO_LARGE")
              ? TaskErrorType.INPUT_TOO_LARGE
              : TaskErrorType.TEMPLATE_ERROR,
            message: `element [${index}]: ${error.message}`,
            retryable: false,
          },
          now,
        );
        continue;
      }
      if (step.child !== null) startChildStep(core, run, element, step.child, now);
      else queueTask(core, element, now);
    }
  } finally {
    map.filling = false;
  }
  settle(core, run, map, now);
}

/** Ends the map step once every element ended (and every offloaded output was read back). */
function settle(core: Core, run: RunState, map: MapState, now: Date): void {
  const task = map.task;
  if (task.status !== "WAITING") return;
  if (map.succeeded + map.failed < map.items.length || map.unresolved > 0) return;
  if (map.failed === 0) {
    const output = map.elements.map((e) => (e.outputRef !== null ? e.resolvedOutput : e.output) ?? null);
    map.work += map.elements.length;
    succeedTask(core, run, task, output, now);
  } else {
    const failed: { index: number; error: ErrorInfo | null }[] = [];
    for (const e of map.elements) {
      map.work++;
      if (e.status !== "SUCCEEDED" && failed.length < MAX_LISTED_FAILURES)
        failed.push({ index: e.elementIndex ?? -1, error: e.error });
    }
    const first = failed[0];
    failTerminally(
      core,
      run,
      task,
      {
        type: TaskErrorType.MAP_ELEMENTS_FAILED,
        message: `${map.failed} of ${map.items.length} elements failed${first === undefined ? "" : `; the first, [${first.index}]: ${first.error?.message ?? "no error"}`}`,
        retryable: false,
        details: { failedCount: map.failed, succeededCount: map.succeeded, failed },
      },
      now,
    );
  }
  core.fx.advanceSoon(run);
}

/** An element failed for good under fail-fast: the step fails, the unfinished elements are cancelled. */
function failFast(core: Core, run: RunState, map: MapState, element: TaskState, now: Date): void {
  const index = element.elementIndex ?? -1;
  failTerminally(
    core,
    run,
    map.task,
    {
      type: TaskErrorType.MAP_ELEMENT_FAILED,
      message: `element [${index}] failed: ${element.error?.message ?? "no error"}`,
      retryable: false,
      details: { index, error: element.error },
    },
    now,
  );
  const reason = `map step ${map.task.stepId} failed: element [${index}] failed`;
  const error: ErrorInfo = { type: TaskErrorType.CANCELLED, message: reason, retryable: false };
  for (let i = 0; i < map.created; i++) {
    const t = map.elements[i] as TaskState;
    map.work++;
    if (TERMINAL_TASK_STATUSES.has(t.status)) continue;
    if (ACTIVE_LEASE.has(t.status)) {
      core.fx.cancelLease(t, reason);
      finishAttempt(core, t, "CANCELLED", error, now);
    }
    const waiting = t.status === "WAITING";
    endTask(core, t, "CANCELLED", now);
    core.fx.event(run, { case: "taskCancelled", value: { taskRunId: t.id, stepId: t.stepId, reason } });
    // A child rolls back what it did (a failure, not an operator's plain cancel).
    if (waiting) cancelChild(core, run, t, reason, now, true);
  }
  core.fx.advanceSoon(run);
}

/**
 * An element task ended (transitions.ts endTask): the counters move, the next element is made,
 * and the step ends when its policy says so. Nothing but the counters once the step has ended.
 */
export function mapElementEnded(core: Core, element: TaskState, now: Date): void {
  const run = core.runs.get(element.runId);
  const map = run?.maps?.get(element.stepId);
  if (run === undefined || map === undefined || element.elementIndex === undefined) return;
  if (map.elements[element.elementIndex] !== element) return;
  map.inFlight--;
  map.work++;
  if (element.status === "SUCCEEDED") {
    map.succeeded++;
    if (element.outputRef !== null && element.resolvedOutput === undefined) map.unresolved++;
  } else map.failed++;
  if (map.task.status !== "WAITING") return;
  const step = run.workflow.stepsById.get(map.task.stepId);
  if (step?.map == null) return;
  if (element.status !== "SUCCEEDED" && step.map.failure === "fail-fast") {
    failFast(core, run, map, element, now);
    return;
  }
  // An element failing while elements are being made (a render error) is counted; the loop goes on.
  if (!map.filling) fill(core, run, map, step, now);
}

/** An element's offloaded output was read back (reports.ts outputResolved): the step may end now. */
export function mapOutputResolved(core: Core, element: TaskState, now: Date): void {
  const run = core.runs.get(element.runId);
  const map = run?.maps?.get(element.stepId);
  if (run === undefined || map === undefined || element.elementIndex === undefined) return;
  if (map.elements[element.elementIndex] !== element || element.status !== "SUCCEEDED") return;
  map.unresolved--;
  settle(core, run, map, now);
}

/**
 * An element's offloaded output cannot be read (reports.ts outputUnavailable), which is about to
 * fail it: it no longer counts as succeeded (nor as waiting for its output) but as unfinished, so
 * that its failure is counted once.
 */
export function mapOutputUnavailable(core: Core, element: TaskState): void {
  const run = core.runs.get(element.runId);
  const map = run?.maps?.get(element.stepId);
  if (map === undefined || element.elementIndex === undefined) return;
  if (map.elements[element.elementIndex] !== element || element.status !== "SUCCEEDED") return;
  map.succeeded--;
  if (element.resolvedOutput === undefined) map.unresolved--;
  map.inFlight++;
}

/**
 * Recovery: the maps of `run` rebuilt from its WAITING map steps (their input is their items) and
 * the element rows read (`elements`, any order); each goes on making elements where it stopped.
 * Ended maps over a child workflow are rebuilt too, without going on (see the module comment).
 */
export function rebuildMaps(core: Core, run: RunState, elements: readonly TaskState[], now: Date): void {
  const byStep = new Map<string, TaskState[]>();
  for (const e of elements) {
    let list = byStep.get(e.stepId);
    if (list === undefined) byStep.set(e.stepId, (list = []));
    list.push(e);
  }
  for (const task of run.tasks.values()) {
    const step = run.workflow.stepsById.get(task.stepId);
    if (step?.map == null) continue;
    // A map over a child workflow that ended keeps its elements (for a rollback of the run).
    if (task.status !== "WAITING" && (step.child === null || !TERMINAL_TASK_STATUSES.has(task.status)))
      continue;
    const items = Array.isArray(task.input) ? (task.input as unknown[]) : [];
    const map = newMap(task, items);
    for (const e of byStep.get(task.stepId) ?? []) {
      const index = e.elementIndex as number;
      if (index < 0 || index >= items.length) continue;
      map.elements[index] = e;
    }
    // Elements are made in order and in the commit that queues them, so the rows are a prefix.
    while (map.created < items.length && map.elements[map.created] !== undefined) {
      const e = map.elements[map.created] as TaskState;
      map.created++;
      if (!TERMINAL_TASK_STATUSES.has(e.status)) map.inFlight++;
      else if (e.status === "SUCCEEDED") {
        map.succeeded++;
        if (e.outputRef !== null && e.resolvedOutput === undefined) map.unresolved++;
      } else map.failed++;
    }
    map.elements.length = map.created;
    (run.maps ??= new Map()).set(step.id, map);
    if (task.status !== "WAITING") continue;
    if (map.failed > 0 && step.map.failure === "fail-fast") {
      const first = map.elements.find(
        (e) => TERMINAL_TASK_STATUSES.has(e.status) && e.status !== "SUCCEEDED",
      );
      if (first !== undefined) failFast(core, run, map, first, now);
      continue;
    }
    fill(core, run, map, step, now);
  }
}

/** What `runs why` says of a WAITING map step: its elements by state. */
export interface MapProgress {
  readonly total: number;
  readonly succeeded: number;
  readonly failed: number;
  /** Unfinished elements: made, not ended (queued, leased, running, waiting for a retry). */
  readonly inFlight: number;
  /** Of those, how many are running (leased or running; waiting on their child run, for a map over a child workflow). */
  readonly running: number;
  /** Elements not made yet: waiting for a place under `parallelism`. */
  readonly waitingForParallelism: number;
  readonly parallelism: number;
}

/** The progress of the map step `stepId` of `run`, or undefined when it is not running a map. */
export function mapProgress(run: Readonly<RunState>, stepId: string): MapProgress | undefined {
  const map = run.maps?.get(stepId);
  const step = run.workflow.stepsById.get(stepId);
  if (map === undefined || step?.map == null || map.task.status !== "WAITING") return undefined;
  let running = 0;
  // Read from the newest back, stopping once every unfinished element is seen (only runs why reads this).
  for (let i = map.created - 1, seen = 0; i >= 0 && seen < map.inFlight; i--) {
    const t = map.elements[i] as TaskState;
    if (TERMINAL_TASK_STATUSES.has(t.status)) continue;
    seen++;
    // An element of a map over a child workflow runs while it waits on its child.
    if (ACTIVE_LEASE.has(t.status) || t.status === "WAITING") running++;
  }
  return {
    total: map.items.length,
    succeeded: map.succeeded,
    failed: map.failed,
    inFlight: map.inFlight,
    running,
    waitingForParallelism: map.items.length - map.created,
    parallelism: step.map.parallelism,
  };
}
