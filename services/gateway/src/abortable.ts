/** Ending an async iteration when a signal aborts, even while it waits for its next item. */

/**
 * Yields what `source` yields until `signal` aborts, then throws the signal's reason at once, even
 * while `source` is waiting for its next item. `source` is then returned (its `return()` runs once
 * its pending read settles), so a generator behind it runs its `finally` blocks.
 */
export async function* untilAborted<T>(source: AsyncIterable<T>, signal: AbortSignal): AsyncGenerator<T> {
  const it = source[Symbol.asyncIterator]();
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason as Error);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  // Rejected only once aborted, and then awaited through the race below.
  aborted.catch(() => undefined);
  try {
    for (;;) {
      const next = it.next();
      let r: IteratorResult<T>;
      try {
        r = await Promise.race([next, aborted]);
      } catch (e) {
        if (!signal.aborted) throw e;
        // The abandoned read settles once the source stops; nobody waits for it.
        next.catch(() => undefined);
        throw signal.reason as Error;
      }
      if (r.done === true) return;
      yield r.value;
    }
  } finally {
    if (onAbort !== undefined) signal.removeEventListener("abort", onAbort);
    // Queued behind a pending read, if any.
    it.return?.().catch(() => undefined);
  }
}
