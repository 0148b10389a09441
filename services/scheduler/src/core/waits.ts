/**
 * Durable waits and sleeps (dag/durable.ts): steps that no executor runs. When one becomes ready
 * it goes WAITING, its timeout or wake-up time stored as the task's `nextAttemptAt` (so that
 * recovery re-arms it, recovery.ts), and costs no executor slot. A wait completes with the payload
 * of a signal of its name (SignalRun), taken at once from those the run already holds, or when one
 * arrives; a wait for an event, with the first event published while it waits that matches it
 * (event-waits.ts). Either fails with WAIT_TIMEOUT, not retried, once its timeout passes. A sleep
 * succeeds at its time with {"until": time}.
 *
 * Signals live on the run (RunState.signals, written with the run's row in the commit that
 * applies them): one is never lost (the SignalRun call answers once it is committed) and never
 * applied twice (it names the step that consumed it, in the same commit as that step's end); a
 * signal whose idempotency key the run already has is not stored again.
 */
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { TaskKind } from "@nexusflow/gen";
import { untilTime, type CompiledDurable } from "../dag/index.js";
import {
  TERMINAL_RUN_STATUSES,
  type RunState,
  type SignalState,
  type TaskState,
} from "../model/run-state.js";
import type { Core, Rejection } from "./context.js";
import { eventWaitsOf } from "./event-wait-index.js";
import { advance } from "./runs.js";
import { failTerminally, succeedTask, waitTask } from "./transitions.js";

/** Longest delay a Node.js timer takes (about 24.8 days); a later time is reached in steps. */
export const MAX_TIMER_MS = 2_147_483_647;
/** Most signals one run holds (consumed or not). */
export const MAX_SIGNALS_PER_RUN = 1000;
/**
 * Most payload one run keeps for its waits to come, in bytes of JSON (the run's row carries it).
 * A consumed signal keeps no payload: it is its step's output.
 */
export const MAX_KEPT_SIGNAL_BYTES = 1024 * 1024;

/** Bytes of `value` as JSON. */
function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value ?? null));
}

/** A signal as SignalRun sends it (checked by the API). */
export interface SignalInput {
  readonly name: string;
  readonly key: string | null;
  readonly payload: unknown;
}

/** What became of a signal: the step it completed (null: kept), or a duplicate of a stored one. */
export interface SignalOutcome {
  readonly stepId: string | null;
  readonly duplicate: boolean;
}

/**
 * Arms the timer of a WAITING task at its stored time (a wait without timeout has none); a wait
 * for an event is entered in the index that published events are matched against.
 */
export function armDurable(core: Core, task: TaskState, nowMs: number): void {
  const durable = core.runs.get(task.runId)?.workflow.stepsById.get(task.stepId)?.durable;
  if (durable?.kind === "event" && task.kind === "STEP") eventWaitsOf(core).add(task, durable);
  if (task.nextAttemptAt === null) return;
  const delay = Math.max(0, task.nextAttemptAt.getTime() - nowMs);
  core.fx.setTimer({ kind: "durable", task }, Math.min(MAX_TIMER_MS, delay));
}

/**
 * A wait or sleep step became ready (runs.ts advance): it takes a signal the run already holds,
 * or goes WAITING with its timer. Its end (taken at once, or a bad `until`) is evaluated soon.
 */
export function startWaiting(
  core: Core,
  run: RunState,
  task: TaskState,
  durable: CompiledDurable,
  now: Date,
): void {
  let due: Date | null;
  let signal = "";
  if (durable.kind === "wait") {
    signal = durable.signal;
    const held = run.signals.find((s) => s.stepId === null && s.name === durable.signal);
    if (held !== undefined) {
      const payload = held.payload;
      held.stepId = task.stepId;
      held.payload = null;
      core.fx.writeRun(run);
      succeedTask(core, run, task, payload, now);
      core.fx.advanceSoon(run);
      return;
    }
    due = durable.timeoutMs === null ? null : new Date(now.getTime() + durable.timeoutMs);
  } else if (durable.kind === "event") {
    // Only events published from now on satisfy it (armDurable enters it in the index).
    due = durable.timeoutMs === null ? null : new Date(now.getTime() + durable.timeoutMs);
  } else if (durable.forMs !== null) {
    due = new Date(now.getTime() + durable.forMs);
  } else {
    const until = (task.input as { until?: unknown } | null)?.until;
    due = untilTime(until);
    if (due === null) {
      failTerminally(
        core,
        run,
        task,
        {
          type: TaskErrorType.INVALID_SLEEP_UNTIL,
          message: `sleep.until rendered ${JSON.stringify(until) ?? "undefined"}, not an RFC 3339 time with an offset`,
          retryable: false,
        },
        now,
      );
      core.fx.advanceSoon(run);
      return;
    }
  }
  waitTask(core, run, task, due, TaskKind.STEP, {
    signal,
    ...(durable.kind === "event" ? { event: durable.event, filter: durable.filterText ?? "" } : {}),
  });
  armDurable(core, task, now.getTime());
}

/** The timer of a WAITING task fired: a sleep wakes, a wait times out (or, early, re-armed). */
export function durableDue(core: Core, task: TaskState, now: Date): void {
  if (task.status !== "WAITING" || task.nextAttemptAt === null) return;
  if (task.nextAttemptAt.getTime() > now.getTime()) {
    armDurable(core, task, now.getTime());
    return;
  }
  const run = core.runs.get(task.runId);
  const durable = run?.workflow.stepsById.get(task.stepId)?.durable;
  if (run === undefined || durable == null) return;
  if (durable.kind === "sleep") {
    succeedTask(core, run, task, { until: task.nextAttemptAt.toISOString() }, now);
  } else {
    failTerminally(
      core,
      run,
      task,
      {
        type: TaskErrorType.WAIT_TIMEOUT,
        message:
          durable.kind === "wait"
            ? `no signal ${JSON.stringify(durable.signal)} arrived by ${task.nextAttemptAt.toISOString()}`
            : `no event matching ${describeEventWait(durable)} was published by ${task.nextAttemptAt.toISOString()}`,
        retryable: false,
      },
      now,
    );
  }
  advance(core, run, now);
  core.fx.commit();
}

/** A wait for an event in words: its key pattern and its filter, if any. */
export function describeEventWait(wait: { event: string; filterText: string | null }): string {
  return `${JSON.stringify(wait.event)}${wait.filterText === null ? "" : ` with filter ${JSON.stringify(wait.filterText)}`}`;
}

/**
 * A signal sent to an active run: a duplicate of a stored one (same idempotency key) changes
 * nothing; otherwise it is stored, completing the first wait step WAITING for its name (by
 * position), or kept for a later one. Refused once the run is ending (cancelled, rolling back)
 * or holds {@link MAX_SIGNALS_PER_RUN} signals.
 */
export function signalReceived(
  core: Core,
  run: RunState,
  input: SignalInput,
  now: Date,
): SignalOutcome | Rejection {
  if (input.key !== null) {
    const stored = run.signals.find((s) => s.key === input.key);
    if (stored !== undefined) return { stepId: stored.stepId, duplicate: true };
  }
  if (TERMINAL_RUN_STATUSES.has(run.status) || run.cancelRequested || run.status === "COMPENSATING")
    return {
      code: "FAILED_PRECONDITION",
      message: `run ${run.id} is ${run.status === "COMPENSATING" ? "rolling back" : "ending"}: it takes no more signals`,
    };
  if (run.signals.length >= MAX_SIGNALS_PER_RUN)
    return {
      code: "RESOURCE_EXHAUSTED",
      message: `run ${run.id} already holds ${MAX_SIGNALS_PER_RUN} signals, the most one run holds`,
    };
  let waiting: TaskState | undefined;
  for (const task of run.tasks.values()) {
    if (task.status !== "WAITING") continue;
    const durable = run.workflow.stepsById.get(task.stepId)?.durable;
    if (durable?.kind !== "wait" || durable.signal !== input.name) continue;
    if (waiting === undefined || task.position < waiting.position) waiting = task;
  }
  if (waiting === undefined) {
    let kept = jsonBytes(input.payload);
    for (const s of run.signals) if (s.stepId === null) kept += jsonBytes(s.payload);
    if (kept > MAX_KEPT_SIGNAL_BYTES)
      return {
        code: "RESOURCE_EXHAUSTED",
        message: `run ${run.id} would keep ${kept} bytes of signal payloads for its waits to come; the most is ${MAX_KEPT_SIGNAL_BYTES}`,
      };
  }
  const payload = input.payload ?? null;
  const signal: SignalState = {
    name: input.name,
    key: input.key,
    // A consumed signal's payload is its step's output; the run's row keeps only what waits.
    payload: waiting === undefined ? payload : null,
    at: now.getTime(),
    stepId: waiting?.stepId ?? null,
  };
  run.signals.push(signal);
  core.fx.writeRun(run);
  core.fx.event(run, {
    case: "signalReceived",
    value: { name: input.name, idempotencyKey: input.key ?? "", stepId: signal.stepId ?? "" },
  });
  if (waiting !== undefined) {
    succeedTask(core, run, waiting, payload, now);
    advance(core, run, now);
  }
  core.fx.commit();
  return { stepId: signal.stepId, duplicate: false };
}
