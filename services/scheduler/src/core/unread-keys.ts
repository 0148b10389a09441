/**
 * Keys that read an offloaded output not read back yet. A step's concurrency key or rate limit key
 * may read an upstream step's output (`steps.a.output.customer`). An offloaded output (a claim
 * check) is in memory only once it is read back (reports.ts outputResolved), so after a restart,
 * or a partition's runs loaded, the keys of a task queued, retrying or leased then cannot be
 * evaluated until the read ends. The task is not leased meanwhile, and ExplainPending says it
 * waits for the read (a dependencies gate naming the step whose output is being read back):
 * - its concurrency keys: a claim in state "unread" (concurrency.ts recoverClaims) that keeps the
 *   task's place in the order of the keys' queues (its queue time); once the output is read, the
 *   claim is made with that place: a queued task is offered again and admitted by the usual rules
 *   (it waits in a full key's queue before those queued after it), a leased or running one holds
 *   its slots at once (even above the limit, as recovery does for leases). Meanwhile no task takes
 *   a slot of the key spaces (key expressions) of a leased task whose keys are not known (it may
 *   hold the same key), nor of a task queued before it whose keys are not known (its place is
 *   kept): concurrency.ts unreadAhead; such a task is offered again when that claim is made;
 * - its rate limit keys (evaluated when the task would first be leased, rate-limits.ts): the task
 *   is offered again once the outputs they read are read back.
 * An output that cannot be read fails its step (OUTPUT_UNAVAILABLE, reports.ts); a key that still
 * cannot be evaluated then fails a task not leased yet as any key that cannot be evaluated does
 * (CONCURRENCY_KEY_ERROR; RATE_LIMIT_KEY_ERROR when it is offered), and a leased task runs on
 * without it. Nothing of this costs the hot path: only a run with such a task
 * (RunState.unreadKeys) is looked at, when one of its outputs is read back.
 */
import { TERMINAL_TASK_STATUSES, type RunState, type TaskState } from "../model/run-state.js";
import { claimAfterRead, keyErrorInfo, limitKeys, unreadAhead, unreadSteps } from "./concurrency.js";
import type { Core } from "./context.js";
import { failTerminally, stepState } from "./transitions.js";

/** The steps whose offloaded output the keys of `task` wait for (empty when they do not). */
export function keysReading(run: Readonly<RunState>, task: Readonly<TaskState>): string[] {
  const out: string[] = [];
  const step = run.workflow.stepsById.get(task.stepId);
  if (step !== undefined && run.unreadKeys?.has(task) === true)
    out.push(...unreadSteps(run, [...limitKeys(step.concurrency), ...limitKeys(step.rateLimits)]));
  // Held back by other tasks whose keys are not known yet (concurrency.ts unreadAhead).
  const claim = task.claim;
  if (claim?.state === "free" && claim.keys.blocked.has(claim))
    for (const u of unreadAhead(claim))
      for (const id of unreadSteps(
        u.run,
        limitKeys(u.run.workflow.steps[u.task?.position ?? -1]?.concurrency ?? []),
      ))
        if (!out.includes(id)) out.push(id);
  return out;
}

/** `task`'s rate limit keys wait for an offloaded output to be read back (rate-limits.ts). */
export function awaitRead(run: RunState, task: TaskState): void {
  (run.unreadKeys ??= new Set()).add(task);
}

/**
 * An offloaded output of `run` was read back, or cannot be (its step failed): the tasks whose
 * keys waited for it go on (see the module comment).
 */
export function keysRead(core: Core, run: RunState, now: Date): void {
  const waiting = run.unreadKeys;
  if (waiting === undefined) return;
  let offered = false;
  for (const task of [...waiting]) {
    if (TERMINAL_TASK_STATUSES.has(task.status) || core.tasks.get(task.id) !== task) {
      waiting.delete(task);
      continue;
    }
    const made = claimAfterRead(core, run, task, stepState);
    if (made === "unread") continue;
    if (made !== "made") {
      waiting.delete(task);
      // Not leased yet: it fails as a key that cannot be evaluated does; a lease runs on.
      if (task.status === "QUEUED" || task.status === "RETRY_WAIT") {
        failTerminally(core, run, task, keyErrorInfo(made), now);
        core.fx.advanceSoon(run);
      }
      continue;
    }
    const rateLimits = run.workflow.stepsById.get(task.stepId)?.rateLimits ?? [];
    if (task.rate === null && unreadSteps(run, limitKeys(rateLimits)).length > 0) continue;
    waiting.delete(task);
    // Refused by the dispatcher while its keys were unknown: offered again (a second entry in
    // its queue, if it was not reached meanwhile, is harmless: the queues skip what is leased).
    if (task.status === "QUEUED") {
      core.fx.offer(task, true);
      offered = true;
    }
  }
  if (waiting.size === 0) run.unreadKeys = undefined;
  if (offered) core.fx.pump();
}
