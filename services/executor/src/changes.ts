/**
 * Waiting for a condition on in-memory state without polling: the owner of the state calls
 * {@link Changes.notify} when it changes, waiters re-check their condition then.
 */

/** Wakes the waiters of one component when its state may have changed. */
export class Changes {
  readonly #waiters = new Set<() => void>();

  /** Re-checks every waiter's condition. */
  notify(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }

  /** Resolves true once `condition` holds (checked now and on every notify), false once `signal` aborts. */
  until(condition: () => boolean, signal: AbortSignal): Promise<boolean> {
    if (condition()) return Promise.resolve(true);
    if (signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const finish = (value: boolean): void => {
        this.#waiters.delete(check);
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      };
      const check = (): void => {
        if (condition()) finish(true);
      };
      const onAbort = (): void => finish(false);
      this.#waiters.add(check);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/**
 * Calls `wait` with a signal that aborts after `timeoutMs`, and clears the timer when `wait`
 * settles. Unlike `AbortSignal.timeout`, the timer keeps the process alive meanwhile: a shutdown
 * waiting for its deadline must not end early because nothing else is pending.
 */
export async function within<T>(timeoutMs: number, wait: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), timeoutMs);
  try {
    return await wait(deadline.signal);
  } finally {
    clearTimeout(timer);
  }
}
