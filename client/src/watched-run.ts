/**
 * The merge of a WatchRun message sent without its values (`WatchRunResponse.values_omitted`: the
 * run was too large or too deep for a client's usual limits) into the run read before: used by
 * the client's `waitForRun`, the CLI and the web UI (which imports this module alone: it needs
 * nothing but the generated types, so it bundles for the browser).
 */
import type { Attempt, Run, RunSignal, TaskError, TaskRun } from "@nexusflow/gen";

/** `lean`'s error with the details of `known`'s when it is the same error (type, message, retryable). */
function mergedError(known: TaskError | undefined, lean: TaskError | undefined): { error?: TaskError } {
  if (lean === undefined) return {};
  if (
    lean.details !== undefined ||
    known?.details === undefined ||
    known.type !== lean.type ||
    known.message !== lean.message ||
    known.retryable !== lean.retryable
  )
    return { error: lean };
  return { error: { ...lean, details: known.details } };
}

/** `lean`'s `field` if it has one, else `known`'s (as the spread of the field; nothing without either). */
function kept<K extends "input" | "output" | "payload", M extends Partial<Record<K, unknown>>>(
  known: M | undefined,
  lean: M,
  field: K,
): Partial<M> {
  const value = lean[field] ?? known?.[field];
  return (value === undefined ? {} : { [field]: value }) as Partial<M>;
}

/** Identity of a signal on its run: name, idempotency key and when it was received. */
function signalKey(s: RunSignal): string {
  return `${s.name}\u0000${s.idempotencyKey}\u0000${s.receiveTime?.seconds ?? ""}.${s.receiveTime?.nanos ?? ""}`;
}

/**
 * The run of a WatchRun message sent without its values (`valuesOmitted`: the run was too large
 * for a client's usual limits) with the values of `known`, the same run as read before (GetRun,
 * or an earlier message): the states (statuses, attempts, times, pending reasons) are `lean`'s;
 * the run's input and output, each task's input and output (by task id), the error details of
 * the run, of each task and of each attempt (by number) while the error is the same one, and
 * signals' payloads are kept from `known` where `lean` has none. A message in the BASIC view (no
 * tasks: a run of tens of thousands of tasks) keeps `known`'s tasks, signals and reruns. Values
 * that appeared after `known` are missing: GetRun answers the whole run.
 */
export function mergeWatchedRun(known: Run | undefined, lean: Run): Run {
  if (known === undefined || known.id !== lean.id) return lean;
  const run: Run = {
    ...lean,
    ...kept(known, lean, "input"),
    ...kept(known, lean, "output"),
    ...mergedError(known.error, lean.error),
  };
  if (lean.tasks.length === 0 && known.tasks.length > 0)
    return { ...run, tasks: known.tasks, signals: known.signals, reruns: known.reruns };
  const tasks = new Map(known.tasks.map((t) => [t.id, t]));
  const signals = new Map(known.signals.map((s) => [signalKey(s), s]));
  return {
    ...run,
    tasks: lean.tasks.map((t): TaskRun => {
      const k = tasks.get(t.id);
      if (k === undefined) return t;
      const attempts = new Map(k.attempts.map((a) => [a.number, a]));
      return {
        ...t,
        ...kept(k, t, "input"),
        ...kept(k, t, "output"),
        ...mergedError(k.error, t.error),
        attempts: t.attempts.map((a): Attempt => ({
          ...a,
          ...mergedError(attempts.get(a.number)?.error, a.error),
        })),
      };
    }),
    signals: lean.signals.map((s) => ({ ...s, ...kept(signals.get(signalKey(s)), s, "payload") })),
  };
}
