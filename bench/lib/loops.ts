/** The harness's two ways of sending work, shared by the main thread and the producer thread. */

/** Sends jobs 0..n-1 with `concurrency` calls in flight; the first failed call rejects the loop. */
export async function closedLoop(
  n: number,
  concurrency: number,
  send: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) await send(next++);
    }),
  );
}

/** Outcome of {@link openLoop}. */
export interface OpenLoopResult {
  errors: number;
  firstError?: string;
}

/**
 * Sends job i at `intended(i)` on the clock `now`, whether or not earlier calls answered (open
 * loop), recording the actual send time into `sentAt[i]`; waits for every answer.
 */
export async function openLoop(
  n: number,
  intended: (i: number) => number,
  now: () => number,
  send: (i: number) => Promise<void>,
  sentAt: Float64Array,
): Promise<OpenLoopResult> {
  // Counts answers instead of keeping every call's promise: at 1,000 calls/s a growing array of
  // promises kept the sender's heap growing, and its GC pauses became send lag.
  let errors = 0;
  let firstError: string | undefined;
  let outstanding = 0;
  let allSent = false;
  let done!: () => void;
  const answered = new Promise<void>((resolve) => (done = resolve));
  const settle = (): void => {
    outstanding--;
    if (allSent && outstanding === 0) done();
  };
  let i = 0;
  while (i < n) {
    const t = now();
    while (i < n && intended(i) <= t) {
      sentAt[i] = now();
      outstanding++;
      send(i).then(settle, (e: unknown) => {
        errors++;
        firstError ??= e instanceof Error ? e.message : JSON.stringify(e);
        settle();
      });
      i++;
    }
    if (i < n) await new Promise((r) => setTimeout(r, Math.max(0, Math.floor(intended(i) - now()))));
  }
  allSent = true;
  if (outstanding > 0) await answered;
  return { errors, ...(firstError === undefined ? {} : { firstError }) };
}
