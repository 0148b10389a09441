/**
 * Durable waits for an event (`"wait": {"event": "orders.paid", "filter": "...", "timeout": "1h"}`,
 * dag/durable.ts). A WAITING wait for an event is satisfied by an event published while it waits
 * whose key matches its pattern and for which its filter (over `event.*`, the run's `input`,
 * `run.*` and its upstream steps' outputs) is truthy: it succeeds with {eventId, key, payload,
 * publishTime} as its output. An event published before the step began waiting does not satisfy
 * it (unlike a signal, an event is not kept for a wait to come). One event satisfies every wait
 * it matches, in any number of runs (and several waits of one run); a wait is satisfied once.
 *
 * Publishing is two inputs, around the statement that stores the event (triggers/publish.ts):
 * {@link matchEvent} reads which waits the event satisfies now and changes nothing (they are
 * stored with the event, as pending wait matches, in that statement), then {@link applyEvent}
 * ends each of them that is still WAITING with the event. Between the two a wait may end
 * otherwise (timeout, cancel, another event applied first): then this event's match is moot. A
 * scheduler that crashes in between applies the stored matches after its restart.
 *
 * The WAITING waits for an event are found through their index (event-wait-index.ts); a task
 * that left it otherwise than by ending (its run refused by storage) is dropped when next met.
 */
import { EvaluationError, evaluateExpression, keyMatches, truthy } from "../dag/index.js";
import type { CompiledEventWait } from "../dag/index.js";
import type { RunState, TaskState } from "../model/run-state.js";
import { runScope } from "./concurrency.js";
import type { Core } from "./context.js";
import { advance } from "./runs.js";
import { stepState, succeedTask } from "./transitions.js";

/** An event as a wait sees it: its key and payload. */
export interface WaitEvent {
  readonly key: string;
  readonly payload: unknown;
}

/** A stored event as it ends a wait (its step's output). */
export interface StoredWaitEvent extends WaitEvent {
  readonly eventId: string;
  readonly publishTime: Date;
}

/** A wait an event satisfies. */
export interface WaitMatch {
  readonly taskRunId: string;
  readonly runId: string;
  readonly stepId: string;
}

/** A filter that failed on an event: not a match (reported once per wait). */
export interface WaitFilterFailure extends WaitMatch {
  readonly message: string;
}

/** The wait of a task, when it is an active WAITING wait for an event. */
function activeWait(core: Core, task: TaskState): { run: RunState; wait: CompiledEventWait } | undefined {
  if (task.status !== "WAITING" || core.tasks.get(task.id) !== task) return undefined;
  const run = core.runs.get(task.runId);
  const durable = run?.workflow.stepsById.get(task.stepId)?.durable;
  if (run === undefined || durable?.kind !== "event" || run.tasks.get(task.stepId) !== task) return undefined;
  return { run, wait: durable };
}

/** Whether `wait`'s filter is truthy for `event` in the run's scope; throws when it fails. */
function filterHolds(run: RunState, wait: CompiledEventWait, event: WaitEvent): boolean {
  if (wait.filter === null) return true;
  return truthy(
    evaluateExpression(wait.filter, {
      ...runScope(run),
      event: { key: event.key, payload: event.payload },
      stepView: (id) => {
        const t = run.tasks.get(id);
        if (t === undefined) return undefined;
        const s = stepState(t);
        return { status: s.status, output: s.output };
      },
    }),
  );
}

/**
 * The waits `event` satisfies now (changes nothing but the index's stale entries). A filter that
 * fails on the event is not a match; `failures` lists those failing for the first time.
 */
export function matchEvent(
  core: Core,
  event: WaitEvent,
): { matches: WaitMatch[]; failures: WaitFilterFailure[] } {
  const matches: WaitMatch[] = [];
  const failures: WaitFilterFailure[] = [];
  const index = core.eventWaits;
  if (index === undefined) return { matches, failures };
  for (const task of index.candidates(event.key)) {
    const active = activeWait(core, task);
    if (active === undefined) {
      index.remove(task);
      continue;
    }
    if (!keyMatches(active.wait.segments, event.key)) continue;
    const match = { taskRunId: task.id, runId: task.runId, stepId: task.stepId };
    try {
      if (filterHolds(active.run, active.wait, event)) matches.push(match);
    } catch (e) {
      // Hostile or unlucky data (a field the payload lacks, a type error): no match, never a crash.
      if (index.firstFailure(task))
        failures.push({
          ...match,
          message: e instanceof EvaluationError || e instanceof Error ? e.message : String(e),
        });
    }
  }
  return { matches, failures };
}

/** What became of a stored match: the wait ended with the event, had ended, or is not active here. */
export type WaitApplyOutcome = "applied" | "ended" | "unknown";

/**
 * A stored event's matches: each wait still WAITING succeeds with the event as its output, in
 * the commit this asks for. Returns the outcome of each match, in order.
 */
export function applyEvent(
  core: Core,
  event: StoredWaitEvent,
  matches: readonly Pick<WaitMatch, "taskRunId">[],
  now: Date,
): WaitApplyOutcome[] {
  const advanced = new Set<RunState>();
  const outcomes = matches.map((m): WaitApplyOutcome => {
    const task = core.tasks.get(m.taskRunId);
    if (task === undefined) return "unknown";
    const active = activeWait(core, task);
    if (active === undefined) return "ended";
    succeedTask(core, active.run, task, waitOutput(event), now);
    advanced.add(active.run);
    return "applied";
  });
  for (const run of advanced) advance(core, run, now);
  if (advanced.size > 0) core.fx.commit();
  return outcomes;
}

/** The output of a wait an event satisfied. */
export function waitOutput(event: StoredWaitEvent): {
  eventId: string;
  key: string;
  payload: unknown;
  publishTime: string;
} {
  return {
    eventId: event.eventId,
    key: event.key,
    payload: event.payload ?? null,
    publishTime: event.publishTime.toISOString(),
  };
}
