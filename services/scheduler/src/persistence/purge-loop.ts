/**
 * The timer of a background purge (run retention, event retention): one purge at start, then one
 * `intervalMs` after the previous one ended, never two at once. A purge works in batches and
 * checks its signal between them (pausing with {@link pauseFor}), so that stop() waits for one
 * batch at most. A failed purge is logged and retried at the next interval. States: IDLE ->
 * RUNNING -> STOPPED (a disabled purge goes straight to STOPPED).
 */
import type { Logger } from "@nexusflow/common";

/** Options of {@link PurgeLoop}. */
export interface PurgeLoopOptions {
  /** What the logs call it, e.g. "run retention purge". */
  name: string;
  log: Logger;
  /** Time between the end of one purge and the start of the next. */
  intervalMs: number;
  /** One purge; stops between batches once `signal` aborts. */
  purge: (signal: AbortSignal) => Promise<unknown>;
}

/** Lifecycle of {@link PurgeLoop}. */
export type PurgeLoopState =
  | { state: "IDLE" }
  | { state: "RUNNING"; timer: NodeJS.Timeout | undefined; abort: AbortController }
  | { state: "STOPPED" };

/** See the module comment. */
export class PurgeLoop {
  private current: PurgeLoopState = { state: "IDLE" };
  private purging: Promise<unknown> | undefined;

  constructor(private readonly options: PurgeLoopOptions) {}

  /** The current state's name. */
  get state(): PurgeLoopState["state"] {
    return this.current.state;
  }

  /** Starts purging every `intervalMs` (the first purge right away); `enabled` false does nothing. */
  start(enabled = true): void {
    if (this.current.state !== "IDLE") return;
    if (!enabled) {
      this.current = { state: "STOPPED" };
      return;
    }
    this.current = { state: "RUNNING", timer: undefined, abort: new AbortController() };
    this.schedule(0);
  }

  private schedule(delay: number): void {
    const current = this.current;
    if (current.state !== "RUNNING") return;
    current.timer = setTimeout(() => {
      current.timer = undefined;
      const p = this.options.purge(current.abort.signal).catch((e: unknown) => {
        if (!current.abort.signal.aborted)
          this.options.log.warn({ err: e }, `${this.options.name} failed; retrying at the next interval`);
      });
      this.purging = p;
      void p.then(() => {
        this.purging = undefined;
        this.schedule(this.options.intervalMs);
      });
    }, delay);
  }

  /** Stops the timer and waits for a purge in progress to end its current batch. */
  async stop(): Promise<void> {
    const current = this.current;
    this.current = { state: "STOPPED" };
    if (current.state !== "RUNNING") return;
    clearTimeout(current.timer);
    current.abort.abort();
    await this.purging;
  }
}

/**
 * Runs `batch` (one short statement, deleting at most `batchSize` rows; returns how many it did)
 * until one deletes fewer than `batchSize` or `signal` aborts, pausing `pauseMs` between two.
 * Returns the rows deleted in all.
 */
export async function purgeInBatches(
  batch: () => Promise<number>,
  batchSize: number,
  pauseMs: number,
  signal: AbortSignal | undefined,
): Promise<number> {
  let deleted = 0;
  for (;;) {
    if (signal?.aborted) return deleted;
    const n = await batch();
    deleted += n;
    if (n < batchSize) return deleted;
    await pauseFor(pauseMs, signal);
  }
}

/** Waits `ms`, or less when `signal` aborts (the pause between two batches of a purge). */
export function pauseFor(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) return resolve();
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
