/**
 * Keyed concurrency limits (`concurrency` on a workflow or a step): at most `limit` holders with
 * the same key value at once. A step's task holds a slot of each of its keys while an executor
 * holds its lease (leased or running); a run holds its workflow's keys from its start until it
 * ends, is cancelled or starts rolling back. A {@link Claim} is what one task (or run) wants; a
 * {@link KeySpace} is one key value's holders and its queue of waiters, in arrival order.
 *
 * What happens when a key is full is the limit's strategy, decided when the task would be leased
 * (the dispatcher asks {@link admitTask} for a task that has a claim, and skips it when refused,
 * so a full key never holds up other keys or types) or when the run starts ({@link admitRun}):
 * - queue: it waits in the key's queue; a freed slot goes back to the first waiter;
 * - cancel-newest: its run is cancelled (with compensation, as CancelRun with compensate);
 * - cancel-in-progress: the oldest holders' runs are cancelled, and it takes the slot;
 * - keep-newest-queued: it waits, and older waiters' runs are cancelled (a newer waiter cancels it).
 * With several limits, cancel-newest and the queues are decided first; cancel-in-progress cancels
 * holders only when every other key has room.
 *
 * Nothing is stored: holders and queues are derived from the active runs (the tasks' states, the
 * keys evaluated again from the run's input and outputs), so recovery rebuilds them
 * ({@link recoverClaims}). A key evaluates to a string or a number (42 and "42" are one key);
 * anything else fails the StartRun call (a workflow's key) or the step (CONCURRENCY_KEY_ERROR).
 */
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import {
  type CompiledConcurrencyLimit,
  type ConcurrencyStrategy,
  type EvalScope,
  type Expr,
  expressionPaths,
  type StepStatus,
} from "../dag/index.js";
import { type Claim, ConcurrencyState, type KeySpace, type Slot } from "../model/concurrency-state.js";
import { ACTIVE_LEASE, type RunState, type TaskState } from "../model/run-state.js";
import type { Core } from "./context.js";
import { keyString } from "./key-value.js";

export { type Claim, ConcurrencyState, type KeySpace, type Slot };

/** A key that is not a string or a number, or that cannot be evaluated. */
export class ConcurrencyKeyError extends Error {
  override name = "ConcurrencyKeyError";
  /** JSON path of the key in the definition, e.g. `$.steps[1].concurrency[0].key`. */
  readonly path: string;

  constructor(path: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.path = path;
  }
}

/** The concurrency state of `core`, made on first use. */
export function concurrencyOf(core: Core): ConcurrencyState {
  return (core.concurrency ??= new ConcurrencyState());
}

/** The value of one limit's key in `scope` (see the module comment); throws ConcurrencyKeyError. */
export function keyValue(limit: CompiledConcurrencyLimit, scope: EvalScope): string {
  const path = `${limit.path}.key`;
  const what = `concurrency key ${JSON.stringify(limit.expression)} (${path})`;
  return keyString(
    limit.key,
    scope,
    what,
    "a concurrency key",
    (message, options) => new ConcurrencyKeyError(path, message, options),
  );
}

function slotsOf(limits: readonly CompiledConcurrencyLimit[], scope: EvalScope): Slot[] {
  return limits.map((limit) => {
    const value = keyValue(limit, scope);
    return { limit, value, id: `${limit.space}\u0000${value}` };
  });
}

/** The scope of a workflow's keys: the run's input and `run.*`. */
export function runScope(run: Pick<RunState, "id" | "workflow" | "input">): EvalScope {
  return {
    input: run.input ?? null,
    run: { id: run.id, workflow: run.workflow.name, version: run.workflow.version },
    step: undefined,
    stepView: () => undefined,
  };
}

/** The scope of a step's keys: the run's input, `run.*` and its steps' outputs. */
function taskScope(run: RunState, stepState: StepStateOf): EvalScope {
  return {
    ...runScope(run),
    stepView: (id) => {
      const t = run.tasks.get(id);
      if (t === undefined) return undefined;
      const s = stepState(t);
      return { status: s.status, output: s.output };
    },
  };
}

/** How a task looks to expressions (transitions.ts stepState, passed in to keep imports one way). */
type StepStateOf = (t: TaskState) => { status: StepStatus; output?: unknown };

/** The keys of a workflow's limits for `input` (what StartRun checks before creating a run). */
export function workflowKeys(run: Pick<RunState, "id" | "workflow" | "input">): Slot[] {
  return slotsOf(run.workflow.concurrency, runScope(run));
}

function newClaim(keys: ConcurrencyState, run: RunState, task: TaskState | null, slots: Slot[]): Claim {
  return { keys, run, task, slots, seq: ++keys.seq, state: "free" };
}

// ---------------------------------------------------------------- runs

/**
 * A new run of a workflow with limits takes its slots: true when it holds them and may start its
 * steps, false when it waits (its steps stay pending) or was cancelled by a strategy. A key that
 * cannot be evaluated throws ConcurrencyKeyError (StartRun checks the keys first).
 */
export function admitRun(core: Core, run: RunState, now: Date, cancel: CancelRun): boolean {
  const keys = concurrencyOf(core);
  const claim = newClaim(keys, run, null, workflowKeys(run));
  run.claim = claim;
  return acquire(core, claim, now, cancel);
}

/**
 * A run that waited for its workflow's keys and was let out of their queues (its `claim` free)
 * takes them now by the same rules; true when it holds them.
 */
export function readmitRun(core: Core, run: RunState, now: Date, cancel: CancelRun): boolean {
  const claim = run.claim;
  if (claim === undefined || claim.state === "held") return true;
  if (claim.state === "parked" || run.status !== "RUNNING") return false;
  return acquire(core, claim, now, cancel);
}

/** The run stopped its forward work (ended, cancelled or rolling back): its slots are freed. */
export function releaseRun(core: Core, run: RunState): void {
  if (run.claim !== undefined) leave(core, run.claim);
}

// ---------------------------------------------------------------- tasks

/**
 * Evaluates the keys of a step's task when it is first queued; returns the error that fails the
 * step when a key is not a string or a number (null when the keys are set).
 */
export function claimTask(
  core: Core,
  run: RunState,
  task: TaskState,
  limits: readonly CompiledConcurrencyLimit[],
  stepState: StepStateOf,
): ConcurrencyKeyError | null {
  if (task.claim !== undefined) return null;
  try {
    task.claim = newClaim(concurrencyOf(core), run, task, slotsOf(limits, taskScope(run, stepState)));
    return null;
  } catch (error) {
    if (error instanceof ConcurrencyKeyError) return error;
    throw error;
  }
}

/** The error a step fails with when its key is not a string or a number. */
export function keyErrorInfo(error: ConcurrencyKeyError): {
  type: string;
  message: string;
  retryable: false;
} {
  return { type: TaskErrorType.CONCURRENCY_KEY_ERROR, message: error.message, retryable: false };
}

/**
 * The dispatcher is about to lease `task`, which has a claim: true when it takes a slot of every
 * key (lease it), false when it waits in a key's queue or its run was cancelled by a strategy
 * (skip it: it is offered again when a slot frees).
 */
export function admitTask(core: Core, task: TaskState, now: Date, cancel: CancelRun): boolean {
  const claim = task.claim;
  if (claim === undefined || claim.state === "held" || task.status !== "QUEUED") return true;
  // Its keys are not known until an offloaded output is read back: offered again then (unread-keys.ts).
  if (claim.state === "unread") return false;
  return acquire(core, claim, now, cancel);
}

/** The task's lease ended (or the task ended): its slots are freed and their first waiters go. */
export function releaseTask(core: Core, task: TaskState): void {
  if (task.claim !== undefined) leave(core, task.claim);
}

// ---------------------------------------------------------------- the rules

/**
 * Cancels a run by a strategy (runs.ts cancelByLimit: cancelRun with compensation; passed in to
 * keep imports one way). One function for every call: the dispatcher makes no closure per task.
 */
export type CancelRun = (core: Core, run: RunState, reason: string, now: Date) => void;

function describeSlot(s: Slot): string {
  return `concurrency key ${JSON.stringify(s.value)} (${s.limit.expression}, limit ${s.limit.limit})`;
}

function isFull(keys: ConcurrencyState, s: Slot): boolean {
  return keys.holding(s.id) >= s.limit.limit;
}

/** Takes the slots of `claim` by its limits' strategies (see the module comment). */
function acquire(core: Core, claim: Claim, now: Date, cancel: CancelRun): boolean {
  const keys = claim.keys;
  // After a restart, a key space whose leased (or earlier) tasks' keys are not known yet: wait.
  if (keys.unread.size > 0 && claim.task !== null && unreadAhead(claim).length > 0) {
    keys.blocked.add(claim);
    return false;
  }
  // The common case first, without an array or a closure: no key is full.
  let anyFull = false;
  for (const s of claim.slots)
    if (isFull(keys, s)) {
      anyFull = true;
      break;
    }
  if (!anyFull) {
    hold(claim);
    return true;
  }
  let blocked = claim.slots.filter((s) => isFull(keys, s));
  const what = claim.task === null ? "run" : "task";
  for (const s of blocked) {
    if (s.limit.strategy !== "cancel-newest") continue;
    giveUp(
      core,
      now,
      claim,
      cancel,
      `${describeSlot(s)} is full: the newest ${what} is cancelled (cancel-newest)`,
    );
    return false;
  }
  for (const s of blocked) {
    if (s.limit.strategy !== "keep-newest-queued") continue;
    const space = keys.space(s.id);
    if (space.waiters.some((w) => w !== claim && w.seq > claim.seq)) {
      giveUp(core, now, claim, cancel, `${describeSlot(s)}: a newer ${what} is queued (keep-newest-queued)`);
      return false;
    }
    for (const w of [...space.waiters])
      if (w !== claim && w.seq < claim.seq)
        giveUp(
          core,
          now,
          w,
          cancel,
          `${describeSlot(s)}: superseded by a newer ${what} (keep-newest-queued)`,
        );
  }
  if (blocked.some((s) => s.limit.strategy !== "cancel-in-progress")) {
    park(claim, blocked);
    return false;
  }
  // Only cancel-in-progress keys are full: their oldest holders give way.
  for (const s of blocked) {
    const space = keys.spaces.get(s.id);
    while (space !== undefined && space.holders.size >= s.limit.limit) {
      const oldest = space.holders.values().next().value as Claim;
      giveUp(
        core,
        now,
        oldest,
        cancel,
        `${describeSlot(s)}: a newer ${what} takes its slot (cancel-in-progress)`,
      );
    }
  }
  blocked = claim.slots.filter((s) => isFull(keys, s));
  if (blocked.length > 0) {
    park(claim, blocked);
    return false;
  }
  hold(claim);
  return true;
}

/** Cancels the claim's run; its slots and places are freed whatever the run's state. */
function giveUp(core: Core, now: Date, claim: Claim, cancel: CancelRun, reason: string): void {
  cancel(core, claim.run, reason, now);
  // A run already stopping frees nothing by being cancelled again: the claim leaves here.
  forget(claim);
}

function hold(claim: Claim): void {
  if (claim.state === "parked") unpark(claim);
  for (const s of claim.slots) claim.keys.space(s.id).holders.add(claim);
  claim.state = "held";
}

function park(claim: Claim, blocked: readonly Slot[]): void {
  if (claim.state === "parked") unpark(claim);
  for (const s of blocked) {
    const waiters = claim.keys.space(s.id).waiters;
    let i = waiters.length;
    while (i > 0 && (waiters[i - 1] as Claim).seq > claim.seq) i--;
    waiters.splice(i, 0, claim);
  }
  claim.state = "parked";
}

function unpark(claim: Claim): void {
  for (const s of claim.slots) {
    const space = claim.keys.spaces.get(s.id);
    if (space === undefined) continue;
    const i = space.waiters.indexOf(claim);
    if (i >= 0) space.waiters.splice(i, 1);
    claim.keys.tidy(s.id);
  }
  claim.state = "free";
}

/** Frees the claim's slots or places without promoting anyone (see leave). */
function forget(claim: Claim): boolean {
  if (claim.state === "parked") {
    unpark(claim);
    return false;
  }
  if (claim.state !== "held") return false;
  const spaces = claim.keys.spaces;
  for (const s of claim.slots) {
    const space = spaces.get(s.id);
    if (space === undefined) continue;
    space.holders.delete(claim);
    // Dropped when nobody holds or waits for it (ConcurrencyState.tidy, without a second lookup).
    if (space.holders.size === 0 && space.waiters.length === 0) spaces.delete(s.id);
  }
  claim.state = "free";
  return true;
}

/** Frees the claim's slots (or its places in queues); each freed key's first waiters go. */
function leave(core: Core, claim: Claim): void {
  // A lease that ended before its keys were known: it holds nothing, and keeps nobody waiting now.
  if (claim.state === "unread") readOut(core, claim);
  // A free claim may be one `promote` let out of a queue (offered, or its run about to advance)
  // that ends before it takes its slot (cancelled, timed out): its turn passes on, or the waiters
  // behind it would wait until some other holder of the key leaves, which may be never. A free
  // claim that was never let out promotes only where there is room (promote counts the holders).
  const free = claim.state === "free";
  if (!forget(claim) && !free) return;
  for (const s of claim.slots) promote(core, claim.keys, s.id);
}

/**
 * Slots of `id` are free: its waiters, first first, go while there is room: a task is offered
 * again at the front of its queue (it takes the slot when leased), a run advances (it takes its
 * slots and starts its steps). A waiter that another full key still queues stays in its queue.
 */
function promote(core: Core, keys: ConcurrencyState, id: string): void {
  const space = keys.spaces.get(id);
  if (space === undefined || space.waiters.length === 0) return;
  let promoted = 0;
  // Walks the queue in place (a long queue is not copied per freed slot): a waiter that goes
  // leaves it, so the next one moves up to the same index.
  for (let i = 0; i < space.waiters.length;) {
    const w = space.waiters[i] as Claim;
    const mine = w.slots.find((s) => s.id === id);
    if (mine === undefined || space.holders.size + promoted >= mine.limit.limit) break;
    // Held by another key that queues it: it stays in that key's queue. (A full
    // cancel-in-progress key does not hold it: it takes that slot when admitted.)
    if (w.slots.some((s) => s.id !== id && s.limit.strategy !== "cancel-in-progress" && isFull(keys, s))) {
      i++;
      continue;
    }
    unpark(w);
    promoted++;
    // Admitted again by the same rules: a task when the dispatcher reaches it, a run when it advances.
    if (w.task === null) core.fx.advanceSoon(w.run);
    else core.fx.offer(w.task, true);
  }
  core.fx.pump();
}

// ---------------------------------------------------------------- recovery

/**
 * Rebuilds the holders and queues from recovered runs (before any lease is handed out): a run
 * with a step already started (not one a rerun took over) holds its workflow's keys, one without waits for them (taken in
 * the order the runs were created); a leased or running task holds its step's keys (even above a
 * limit lowered since); queued and retrying tasks get their keys back, in the order they were
 * queued. A step's key that cannot be evaluated again because it reads an offloaded output not
 * read back yet gets a claim in state "unread" that keeps the task's place in that order: the
 * task is not leased, and its claim is made once the output is read (unread-keys.ts).
 */
export function recoverClaims(
  core: Core,
  runs: readonly RunState[],
  now: Date,
  stepState: StepStateOf,
  cancel: CancelRun,
): void {
  const keys = concurrencyOf(core);
  const byAge = [...runs].sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
  const waiting: Claim[] = [];
  for (const run of byAge) {
    if (run.workflow.concurrency.length === 0 || run.status !== "RUNNING" || run.cancelRequested) continue;
    let slots: Slot[];
    try {
      slots = workflowKeys(run);
    } catch (error) {
      if (error instanceof ConcurrencyKeyError) continue;
      throw error;
    }
    const claim = newClaim(keys, run, null, slots);
    run.claim = claim;
    // Started: a step moved. Steps a rerun took over from its original (SUCCEEDED from the start,
    // before the run was admitted) do not count: such a rerun may still wait for its keys.
    const started = [...run.tasks.values()].some(
      (t) => t.status !== "PENDING" && run.rerun?.reused[t.stepId] === undefined,
    );
    if (started) hold(claim);
    else waiting.push(claim);
  }
  const tasks: { run: RunState; task: TaskState }[] = [];
  for (const run of runs)
    for (const task of run.tasks.values()) {
      const step = run.workflow.steps[task.position];
      if (step === undefined || step.concurrency.length === 0) continue;
      if (task.status === "QUEUED" || task.status === "RETRY_WAIT" || ACTIVE_LEASE.has(task.status))
        tasks.push({ run, task });
    }
  const at = (t: TaskState): number => (t.queuedAt ?? t.createdAt).getTime();
  tasks.sort((a, b) => at(a.task) - at(b.task));
  for (const { run, task } of tasks) {
    const step = run.workflow.steps[task.position];
    if (step === undefined) continue;
    if (claimTask(core, run, task, step.concurrency, stepState) !== null) {
      if (unreadSteps(run, limitKeys(step.concurrency)).length > 0) {
        const claim: Claim = { keys, run, task, slots: [], seq: ++keys.seq, state: "unread" };
        task.claim = claim;
        (run.unreadKeys ??= new Set()).add(task);
        for (const limit of step.concurrency) {
          const unread =
            keys.unread.get(limit.space) ?? keys.unread.set(limit.space, new Set()).get(limit.space);
          unread?.add(claim);
        }
      }
      continue;
    }
    if (ACTIVE_LEASE.has(task.status) && task.claim !== undefined) hold(task.claim);
  }
  for (const claim of waiting) if (claim.state === "free") acquire(core, claim, now, cancel);
}

// ---------------------------------------------------------------- keys reading offloaded outputs

/** The key expressions of `limits`. */
export function limitKeys(limits: readonly { readonly key: Expr | null }[]): (Expr | null)[] {
  return limits.map((l) => l.key);
}

/**
 * The steps of `run` that `keys` read whose offloaded output is not read back yet (stepState
 * shows them active until then), each once, in the order read.
 */
export function unreadSteps(run: RunState, keys: Iterable<Expr | null>): string[] {
  const out: string[] = [];
  for (const key of keys) {
    if (key === null) continue;
    for (const path of expressionPaths(key)) {
      if (path.root !== "steps") continue;
      const id = String(path.segments[0]);
      const t = run.tasks.get(id);
      if (
        t?.status === "SUCCEEDED" &&
        t.outputRef !== null &&
        t.outputRef !== undefined &&
        t.resolvedOutput === undefined &&
        !out.includes(id)
      )
        out.push(id);
    }
  }
  return out;
}

/**
 * An offloaded output of `task`'s run was read back (or cannot be): when `task`'s claim is
 * "unread", its keys are evaluated again. "made": the claim is made, with the place in the keys'
 * queues its task had (its arrival order kept), holding its slots at once when the task is leased
 * or running (even above a limit, as recovery does); "unread": a key still reads an output not
 * read back; a ConcurrencyKeyError when a key cannot be evaluated with nothing left to read (the
 * task has no claim then). "made" as well for a claim that is not "unread".
 */
export function claimAfterRead(
  core: Core,
  run: RunState,
  task: TaskState,
  stepState: StepStateOf,
): "made" | "unread" | ConcurrencyKeyError {
  const unread = task.claim;
  if (unread?.state !== "unread") return "made";
  const limits = run.workflow.steps[task.position]?.concurrency ?? [];
  let slots: Slot[];
  try {
    slots = slotsOf(limits, taskScope(run, stepState));
  } catch (error) {
    if (!(error instanceof ConcurrencyKeyError)) throw error;
    if (unreadSteps(run, limitKeys(limits)).length > 0) return "unread";
    task.claim = undefined;
    readOut(core, unread);
    return error;
  }
  const claim: Claim = { keys: unread.keys, run, task, slots, seq: unread.seq, state: "free" };
  task.claim = claim;
  if (ACTIVE_LEASE.has(task.status)) hold(claim);
  readOut(core, unread);
  return "made";
}

/** The limits of an unread claim's step. */
function unreadLimits(claim: Claim): readonly CompiledConcurrencyLimit[] {
  return claim.task === null ? [] : (claim.run.workflow.steps[claim.task.position]?.concurrency ?? []);
}

/**
 * The unread claims that keep `claim` (a task's) from a slot: of the key spaces of its keys, those
 * whose task is leased (it may hold the same key) or that came before it (their place is kept).
 */
export function unreadAhead(claim: Claim): Claim[] {
  const out: Claim[] = [];
  for (const s of claim.slots)
    for (const u of claim.keys.unread.get(s.limit.space) ?? [])
      if (
        u !== claim &&
        !out.includes(u) &&
        (u.seq < claim.seq || (u.task !== null && ACTIVE_LEASE.has(u.task.status)))
      )
        out.push(u);
  return out;
}

/**
 * An unread claim leaves its key spaces (its keys are known now, or its lease ended): the claims
 * it held back are offered again (each is checked again when leased).
 */
function readOut(core: Core, claim: Claim): void {
  const keys = claim.keys;
  for (const limit of unreadLimits(claim)) {
    const unread = keys.unread.get(limit.space);
    if (unread?.delete(claim) === true && unread.size === 0) keys.unread.delete(limit.space);
  }
  if (keys.blocked.size === 0) return;
  const blocked = [...keys.blocked];
  keys.blocked.clear();
  for (const b of blocked) {
    const t = b.task;
    // Still queued with this claim, and still here (not unloaded with its run, unload.ts).
    if (t?.status === "QUEUED" && t.claim === b && core.tasks.get(t.id) === t) core.fx.offer(t, true);
  }
  core.fx.pump();
}

// ---------------------------------------------------------------- explaining

/** A holder of a key as ExplainPending names it. */
export interface KeyHolder {
  readonly runId: string;
  /** The step whose task holds it; null for a run. */
  readonly stepId: string | null;
  readonly taskRunId: string | null;
}

/** Why a claim waits on one key (core/explain.ts turns it into a gate). */
export interface KeyWait {
  readonly scope: "workflow" | "step";
  readonly expression: string;
  readonly key: string;
  readonly limit: number;
  readonly strategy: ConcurrencyStrategy;
  /** The first 20 holders, oldest first. */
  readonly holders: readonly KeyHolder[];
  readonly holding: number;
  /** Place in the key's queue from 1; 0 when not in it. */
  readonly position: number;
  readonly waiting: number;
}

/** Most holders an explanation names. */
export const MAX_NAMED_HOLDERS = 20;

/** The keys that hold `claim` back now: those it waits in, and full ones it would wait in. */
export function keyWaits(claim: Claim): KeyWait[] {
  if (claim.state === "held") return [];
  const out: KeyWait[] = [];
  for (const s of claim.slots) {
    const space = claim.keys.spaces.get(s.id);
    const position = space === undefined ? 0 : space.waiters.indexOf(claim) + 1;
    if (position === 0 && !isFull(claim.keys, s)) continue;
    const holders: KeyHolder[] = [];
    for (const h of space?.holders ?? []) {
      if (holders.length >= MAX_NAMED_HOLDERS) break;
      holders.push({ runId: h.run.id, stepId: h.task?.stepId ?? null, taskRunId: h.task?.id ?? null });
    }
    out.push({
      scope: s.limit.scope,
      expression: s.limit.expression,
      key: s.value,
      limit: s.limit.limit,
      strategy: s.limit.strategy,
      holders,
      holding: space?.holders.size ?? 0,
      position,
      waiting: space?.waiters.length ?? 0,
    });
  }
  return out;
}
