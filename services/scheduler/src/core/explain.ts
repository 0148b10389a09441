/**
 * Why a task is not running (ExplainPending, TaskRun.pending_reason): every gate that holds it
 * now, computed from the engine's own state, not guessed from outside. Dependencies, conditions,
 * retries and deadlines are read from the run and its tasks; the executor gates are the decision
 * the latest scheduling pass recorded for the task's type (`TaskState.hold`, see holds.ts), never
 * recomputed here, and so is the fair-share gate: the order of the groups as that pass left them
 * (fair-shares.ts). Each member of {@link Gate} has its line in {@link describeGate}.
 */
import type { ErrorInfo, RunState, RunStatusName, TaskState } from "../model/run-state.js";
import { TERMINAL_TASK_STATUSES, storedStepId } from "../model/run-state.js";
import { rollingBack } from "./child-rollback.js";
import { childRunId } from "./children.js";
import { mapProgress } from "./maps.js";
import { keyWaits, type KeyWait } from "./concurrency.js";
import { fairWait, type FairWait } from "./fair-shares.js";
import { describeHold } from "./holds.js";
import { rateHolds } from "./rate-limits.js";
import { retryPolicyOf } from "./retries.js";
import { stepState } from "./transitions.js";
import { describeEventWait } from "./waits.js";
import { keysReading } from "./unread-keys.js";

/** One gate that holds a task back (proto PendingGate). */
export type Gate =
  | {
      /** Dependencies (for a compensation: the wave before it) have not finished. */
      readonly kind: "dependencies";
      /** Unfinished, in topological order. */
      readonly steps: readonly string[];
      /** Succeeded with an offloaded output still being read back. */
      readonly readingOutput: readonly string[];
    }
  | {
      /** The step's `when` is evaluated once its dependencies finish. */
      readonly kind: "condition";
      readonly expression: string;
      readonly steps: readonly string[];
    }
  | {
      /** A failed attempt's retry waits out its backoff. */
      readonly kind: "retry-backoff";
      readonly until: Date | null;
      readonly nextAttempt: number;
      readonly maxAttempts: number;
      readonly lastError: ErrorInfo | null;
    }
  | {
      /** No attached session advertises the type. */
      readonly kind: "no-executor";
      readonly type: string;
      /** Queued tasks of the type ahead of this one. */
      readonly ahead: number;
      readonly since: Date | null;
    }
  | {
      /** Every session advertising the type has no credit or is draining. */
      readonly kind: "executors-busy";
      readonly type: string;
      readonly executors: number;
      readonly draining: number;
      readonly ahead: number;
      readonly since: Date | null;
    }
  | {
      /** The queued attempt times out at `deadline` unless an executor takes it. */
      readonly kind: "schedule-to-start";
      readonly deadline: Date;
      readonly timeoutMs: number;
    }
  | ({
      /**
       * A concurrency limit's key is full: the task waits for a slot (scope "step"), or its run
       * does before starting its steps (scope "workflow").
       */
      readonly kind: "concurrency-key";
    } & KeyWait)
  | ({
      /**
       * Its tenant, or its key within the tenant, has had its fair share of its type's executors:
       * another group goes first when a slot frees (given with an executor gate only).
       */
      readonly kind: "fair-share";
    } & FairWait)
  | {
      /** The run is cancelled or rolling back: the step will not start. */
      readonly kind: "run-stopping";
      readonly runStatus: RunStatusName;
      readonly cancelRequested: boolean;
    }
  | {
      /**
       * A wait step waits for its signal or for an event (until its timeout, if any), a sleep
       * step for its time.
       */
      readonly kind: "durable-wait";
      /** The signal; null for a sleep and a wait for an event. */
      readonly signal: string | null;
      /** The event key pattern and filter of a wait for an event; null otherwise. */
      readonly event: { readonly key: string; readonly filter: string | null } | null;
      readonly until: Date | null;
    }
  | {
      /**
       * A rate limit holds the task (core/rate-limits.ts): its bucket lacks the task's units
       * until `nextTokenAt`, or its key is paused until `pausedUntil` (by whom, why).
       */
      readonly kind: "rate-limit";
      readonly name: string;
      readonly key: string;
      readonly nextTokenAt: Date;
      readonly pausedUntil: Date | null;
      readonly pausedBy: string;
      readonly pauseNote: string;
    }
  | {
      /**
       * A child workflow step (or map element) waits for its child run to end (core/children.ts),
       * or the step's compensation for the child's rollback (core/child-rollback.ts).
       */
      readonly kind: "child-run";
      readonly runId: string;
      readonly workflow: string;
      /** The version asked for; null: the latest. */
      readonly version: number | null;
      /** True for the step's compensation: the child rolls back. */
      readonly compensating: boolean;
    }
  | {
      /** A map step waits for its elements (core/maps.ts): counts, read from its counters. */
      readonly kind: "map-elements";
      readonly total: number;
      readonly succeeded: number;
      readonly failed: number;
      readonly running: number;
      /** Made and not running: queued or waiting for a retry. */
      readonly queued: number;
      readonly waitingForParallelism: number;
      readonly parallelism: number;
    };

/**
 * Every gate that holds `task` of `run` now, most decisive first; none for a task that is leased,
 * running or finished, or that nothing holds (about to be queued or leased). `ahead` counts the
 * queued tasks of its type ahead of it, asked only for a queued task held for an executor (it
 * walks the queue).
 */
export function explainPending(
  run: Readonly<RunState>,
  task: Readonly<TaskState>,
  ahead: () => number = () => 0,
  now: Date | null = null,
): Gate[] {
  const gates: Gate[] = [];
  if (TERMINAL_TASK_STATUSES.has(task.status)) return gates;
  if (
    task.kind === "STEP" &&
    (run.cancelRequested || run.status === "COMPENSATING") &&
    (task.status === "PENDING" || task.status === "QUEUED" || task.status === "RETRY_WAIT")
  )
    gates.push({ kind: "run-stopping", runStatus: run.status, cancelRequested: run.cancelRequested });
  const runClaim = run.claim;
  if (
    runClaim !== undefined &&
    task.kind === "STEP" &&
    task.status === "PENDING" &&
    run.status === "RUNNING" &&
    !run.cancelRequested
  )
    for (const wait of keyWaits(runClaim)) gates.push({ kind: "concurrency-key", ...wait });
  switch (task.status) {
    case "PENDING":
      if (task.kind === "STEP") dependencyGates(run, task, gates);
      else compensationGates(run, task, gates);
      break;
    case "RETRY_WAIT":
      readingGate(run, task, gates);
      gates.push({
        kind: "retry-backoff",
        until: task.nextAttemptAt,
        nextAttempt: task.attempt + 1,
        maxAttempts: retryPolicyOf(run, task)?.maxAttempts ?? task.attempt,
        lastError: task.error,
      });
      break;
    case "QUEUED": {
      // Its keys read an offloaded output not read back yet (after a restart): out of its type's queue.
      const reading = readingGate(run, task, gates);
      const claim = task.claim;
      const keys = claim === undefined ? [] : keyWaits(claim);
      for (const wait of keys) gates.push({ kind: "concurrency-key", ...wait });
      // A task waiting for a bucket's tokens is out of its type's queue too (rate-limits.ts).
      const rate = now === null ? [] : rateHolds(task, now);
      if (now !== null) gates.push(...rateGates(rate, now));
      // Among a bucket's waiters while its tokens go to those before it: it waits for its turn.
      const turn = now === null || rate.length > 0 ? [] : turnGates(task);
      gates.push(...turn);
      const bucketWait = turn.length > 0 || rate.some((r) => r.bucket.waiters.some((w) => w.id === task.id));
      // A task in a key's queue is out of its type's queue: no executor gate holds it.
      const hold = claim?.state === "parked" || bucketWait || reading ? null : (task.hold?.hold ?? null);
      const since = task.hold?.since ?? null;
      if (hold?.kind === "unadvertised")
        gates.push({ kind: "no-executor", type: task.type, ahead: ahead(), since });
      else if (hold?.kind === "busy")
        gates.push({
          kind: "executors-busy",
          type: task.type,
          executors: hold.executors,
          draining: hold.draining,
          ahead: ahead(),
          since,
        });
      // With a free slot the task would be leased whatever its share: only with an executor gate.
      const fair = hold === null ? null : fairWait(task);
      if (fair !== null) gates.push({ kind: "fair-share", ...fair });
      const step = run.workflow.stepsById.get(task.stepId);
      const timeouts = task.kind === "STEP" ? step?.timeouts : step?.compensate?.timeouts;
      const limit = timeouts?.scheduleToStartMs ?? null;
      if (limit !== null && task.queuedAt !== null)
        gates.push({
          kind: "schedule-to-start",
          deadline: new Date(task.queuedAt.getTime() + limit),
          timeoutMs: limit,
        });
      break;
    }
    case "WAITING": {
      const child = run.workflow.stepsById.get(task.stepId)?.child;
      if (task.kind === "COMPENSATION" && child != null) {
        for (const runId of rollingBack(run, task, 20))
          gates.push({
            kind: "child-run",
            runId,
            workflow: child.name,
            version: child.version,
            compensating: true,
          });
        break;
      }
      const map = task.elementIndex === undefined ? mapProgress(run, task.stepId) : undefined;
      if (map !== undefined) {
        const { inFlight, ...counts } = map;
        gates.push({ kind: "map-elements", ...counts, queued: inFlight - counts.running });
        break;
      }
      if (child != null) {
        gates.push({
          kind: "child-run",
          runId: childRunId(run.id, storedStepId(task)),
          workflow: child.name,
          version: child.version,
          compensating: false,
        });
        break;
      }
      const durable = run.workflow.stepsById.get(task.stepId)?.durable;
      gates.push({
        kind: "durable-wait",
        signal: durable?.kind === "wait" ? durable.signal : null,
        event: durable?.kind === "event" ? { key: durable.event, filter: durable.filterText } : null,
        until: task.nextAttemptAt,
      });
      break;
    }
    default:
      // LEASED or RUNNING: nothing holds it.
      return [];
  }
  return gates;
}

/** The rate-limit gates of the buckets that hold a task at `now` (rate-limits.ts rateHolds). */
export function rateGates(rate: ReturnType<typeof rateHolds>, now: Date): Gate[] {
  return rate.map((r) => ({
    kind: "rate-limit",
    name: r.name,
    key: r.key,
    nextTokenAt: new Date(r.nextTokenAt),
    pausedUntil:
      r.bucket.pausedUntil !== null && r.bucket.pausedUntil > now.getTime()
        ? new Date(r.bucket.pausedUntil)
        : null,
    pausedBy: r.bucket.pausedBy,
    pauseNote: r.bucket.pauseNote,
  }));
}

/**
 * The rate-limit gates of the buckets whose waiters `task` is among though they hold no units
 * back from it: the tokens there go to the waiters before it, and it is offered again at the
 * bucket's next wake-up (`nextTokenAt`).
 */
export function turnGates(task: Readonly<TaskState>): Gate[] {
  const gates: Gate[] = [];
  for (const { bucket: b } of task.rate ?? []) {
    if (b.wakeAt === null || !b.waiters.some((w) => w.id === task.id)) continue;
    gates.push({
      kind: "rate-limit",
      name: b.name,
      key: b.key,
      nextTokenAt: new Date(b.wakeAt),
      pausedUntil: null,
      pausedBy: "",
      pauseNote: "",
    });
  }
  return gates;
}

/**
 * A queued or retrying task whose concurrency or rate limit keys read an offloaded output not read
 * back yet (unread-keys.ts): a dependencies gate naming the steps being read; true when it has one.
 */
function readingGate(run: Readonly<RunState>, task: Readonly<TaskState>, gates: Gate[]): boolean {
  if (run.unreadKeys === undefined && (task.claim === undefined || task.claim.keys.unread.size === 0))
    return false;
  const readingOutput = keysReading(run, task);
  if (readingOutput.length === 0) return false;
  gates.push({ kind: "dependencies", steps: [], readingOutput });
  return true;
}

/** A pending step: the dependencies it waits for, and its condition if it has one. */
function dependencyGates(run: Readonly<RunState>, task: Readonly<TaskState>, gates: Gate[]): void {
  const step = run.workflow.stepsById.get(task.stepId);
  if (step === undefined) return;
  const steps: string[] = [];
  const readingOutput: string[] = [];
  // dependencyOrders sorted: the dependencies in topological order.
  for (const order of [...step.dependencyOrders].sort((a, b) => a - b)) {
    const id = run.workflow.steps[order]?.id;
    const dep = id === undefined ? undefined : run.tasks.get(id);
    if (id === undefined || dep === undefined) continue;
    const state = stepState(dep).status;
    if (state === "pending" || state === "active") {
      if (dep.status === "SUCCEEDED") readingOutput.push(id);
      else steps.push(id);
    }
  }
  if (steps.length + readingOutput.length === 0) return;
  gates.push({ kind: "dependencies", steps, readingOutput });
  if (step.when !== null && typeof step.spec.when === "string")
    gates.push({ kind: "condition", expression: step.spec.when, steps: [...steps, ...readingOutput] });
}

/** A pending compensation: the unfinished compensations of the waves before its own. */
function compensationGates(run: Readonly<RunState>, task: Readonly<TaskState>, gates: Gate[]): void {
  const waves = run.compensationWaves;
  if (waves === null) return;
  const steps: string[] = [];
  for (const wave of waves) {
    if (wave.includes(task.stepId)) break;
    for (const id of wave) {
      const c = run.compensations.get(id);
      if (c !== undefined && !TERMINAL_TASK_STATUSES.has(c.status)) steps.push(id);
    }
  }
  if (steps.length > 0) gates.push({ kind: "dependencies", steps, readingOutput: [] });
}

/** One gate in a few words, for people (a part of TaskRun.pending_reason). */
export function describeGate(gate: Gate): string {
  switch (gate.kind) {
    case "dependencies": {
      const parts: string[] = [];
      if (gate.steps.length > 0) parts.push(`unfinished dependencies: ${gate.steps.join(", ")}`);
      if (gate.readingOutput.length > 0)
        parts.push(`reading the offloaded output of ${gate.readingOutput.join(", ")}`);
      return parts.join("; ");
    }
    case "condition":
      return `condition ${JSON.stringify(gate.expression)} is decided once ${gate.steps.join(", ")} finish${gate.steps.length === 1 ? "es" : ""}`;
    case "retry-backoff":
      return `retry (attempt ${gate.nextAttempt} of ${gate.maxAttempts}) due at ${gate.until?.toISOString() ?? "once recovered"}`;
    case "no-executor":
      return describeHold(gate.type, { kind: "unadvertised" });
    case "executors-busy":
      return describeHold(gate.type, { kind: "busy", executors: gate.executors, draining: gate.draining });
    case "schedule-to-start":
      return `times out unless started by ${gate.deadline.toISOString()}`;
    case "run-stopping":
      return gate.cancelRequested ? "the run was cancelled" : "the run is rolling back (compensating)";
    case "durable-wait": {
      const until = gate.until === null ? "" : ` until ${gate.until.toISOString()}`;
      if (gate.event !== null)
        return `waiting for an event matching ${describeEventWait({ event: gate.event.key, filterText: gate.event.filter })}${until}`;
      return gate.signal === null
        ? `sleeping until ${gate.until?.toISOString() ?? "its time"}`
        : `waiting for signal ${JSON.stringify(gate.signal)}${until}`;
    }
    case "concurrency-key":
      return describeKeyWait(gate);
    case "fair-share":
      return describeFairWait(gate);
    case "rate-limit":
      return gate.pausedUntil !== null
        ? `rate limit ${JSON.stringify(gate.name)}${gate.key === "" ? "" : ` key ${JSON.stringify(gate.key)}`} is paused until ${gate.pausedUntil.toISOString()}${gate.pausedBy === "" ? "" : ` by ${gate.pausedBy}`}${gate.pauseNote === "" ? "" : ` (${gate.pauseNote})`}`
        : `rate limit ${JSON.stringify(gate.name)}${gate.key === "" ? "" : ` key ${JSON.stringify(gate.key)}`}: next token at ${gate.nextTokenAt.toISOString()}`;
    case "map-elements":
      return `waiting for its elements: ${gate.succeeded + gate.failed} of ${gate.total} ended (${gate.failed} failed), ${gate.running} running, ${gate.queued} queued, ${gate.waitingForParallelism} waiting for parallelism (${gate.parallelism})`;
    case "child-run":
      return `waiting for child run ${gate.runId} (${gate.workflow}${gate.version === null ? "" : ` v${gate.version}`}) to ${gate.compensating ? "roll back" : "end"}`;
  }
}

/**
 * A key wait in a few words: `concurrency key "c1" (input.customerId) is full: 1 of 1 held by
 * charge of run 0190...; 2nd of 3 in its queue`.
 */
function describeKeyWait(w: KeyWait): string {
  const who = w.holders.map((h) => (h.stepId === null ? `run ${h.runId}` : `${h.stepId} of run ${h.runId}`));
  const more = w.holding > who.length ? ` and ${w.holding - who.length} more` : "";
  const held = w.holding === 0 ? "no holder" : `held by ${who.join(", ")}${more}`;
  const place = w.position > 0 ? `; ${w.position} of ${w.waiting} in its queue` : "";
  const subject = w.scope === "workflow" ? "the run waits for " : "";
  return `${subject}concurrency key ${JSON.stringify(w.key)} (${w.expression}, limit ${w.limit}): ${held}${place}`;
}

/**
 * A fair-share wait in a few words: `fair share: tenant "b" is served before tenant "a" (which
 * holds 8 leases of type "t", weight 1, at its max 8; 2 tenants waiting)`.
 */
function describeFairWait(w: FairWait): string {
  const group = (value: string): string =>
    w.level === "key"
      ? `key ${JSON.stringify(value)} of tenant ${JSON.stringify(w.tenant)}`
      : `tenant ${JSON.stringify(value)}${value === "" ? " (runs without fairness)" : ""}`;
  const share = [
    `which holds ${w.leased} lease${w.leased === 1 ? "" : "s"} of type ${JSON.stringify(w.type)}`,
  ];
  share.push(`weight ${w.weight}`);
  if (w.min > 0) share.push(`min ${w.min}`);
  if (w.max > 0) share.push(w.atMax ? `at its max ${w.max}` : `max ${w.max}`);
  const groups = w.level === "key" ? "keys of the tenant" : "tenants";
  return `fair share: ${group(w.next)} is served before ${group(w.level === "key" ? w.key : w.tenant)} (${share.join(", ")}; ${w.waiting} ${groups} waiting)`;
}

/**
 * The gates in one line (TaskRun.pending_reason): what holds the task, joined by "; ". The
 * schedule-to-start deadline is left out: it does not hold the task, it ends its wait.
 */
export function pendingReason(gates: readonly Gate[]): string {
  return gates
    .filter((g) => g.kind !== "schedule-to-start")
    .map(describeGate)
    .join("; ");
}
