/** Abortable waits and timers that also work past Node's 24.8-day timer limit. */
import { setTimeout as delay } from "node:timers/promises";
import { cancellationError } from "./task-error.js";
import { MAX_TIMER_MS } from "./validate.js";

/** Waits `ms` milliseconds; rejects with `cancellationError(signal)` when `signal` aborts. */
export async function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) throw cancellationError(signal);
  let remaining = ms;
  const end = Date.now() + ms;
  do {
    try {
      await delay(Math.min(remaining, MAX_TIMER_MS), undefined, { signal });
    } catch (e) {
      if (signal.aborted) throw cancellationError(signal);
      throw e;
    }
    remaining = end - Date.now();
  } while (remaining > 0);
}

/** Calls `onFire` after `ms` milliseconds unless the returned function is called first. */
export function startTimer(ms: number, onFire: () => void): () => void {
  let timer: NodeJS.Timeout;
  const end = Date.now() + ms;
  const arm = (): void => {
    const remaining = end - Date.now();
    if (remaining <= 0) {
      onFire();
      return;
    }
    timer = setTimeout(arm, Math.min(remaining, MAX_TIMER_MS));
  };
  timer = setTimeout(arm, Math.min(ms, MAX_TIMER_MS));
  return () => clearTimeout(timer);
}
