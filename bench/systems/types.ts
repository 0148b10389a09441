/** What the throughput, latency and cost sections need from a system under test. */

/** Records when each job's handler started, on the process's monotonic clock. */
export class StartRecorder {
  /** performance.now() at handler start, by job index (NaN until started). */
  starts: Float64Array;
  /** Handlers started so far. */
  started = 0;
  /** Handlers finished so far. */
  finished = 0;
  private waiters: { n: number; resolve: () => void }[] = [];

  constructor(capacity: number) {
    this.starts = new Float64Array(capacity).fill(Number.NaN);
  }

  /** Forgets everything and sizes for `capacity` jobs. */
  reset(capacity: number): void {
    this.starts = new Float64Array(capacity).fill(Number.NaN);
    this.started = 0;
    this.finished = 0;
    this.waiters = [];
  }

  /** Called first thing in a handler. Duplicates (re-deliveries) keep the first start. */
  start(i: number): void {
    if (i >= 0 && i < this.starts.length && Number.isNaN(this.starts[i])) {
      this.starts[i] = performance.now();
      this.started++;
    }
  }

  /** Called when a handler returns. */
  finish(): void {
    this.finished++;
    if (this.waiters.length === 0) return;
    const still: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (this.finished >= w.n) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
  }

  /** Resolves once `n` handlers finished, or rejects after `timeoutMs`. */
  async untilFinished(n: number, timeoutMs: number, what: string): Promise<void> {
    if (this.finished >= n) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        new Promise<void>((resolve) => this.waiters.push({ n, resolve })),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(new Error(`${what}: only ${this.finished}/${n} handlers finished in ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A job system compared in sections 1, 2 and 5: Nexusflow, pg-boss or graphile-worker. */
export interface QueueSystem {
  /** Display name. */
  readonly name: string;
  /** Its database in the shared cluster (for pg_stat_database / pg_stat_statements). */
  readonly database: string;
  /** The settings it runs with, recorded in the results. */
  readonly settings: Record<string, unknown>;
  /** Handler start times of the current phase. */
  readonly recorder: StartRecorder;
  /** Queries the harness itself ran on the system's database (subtracted from its cost). */
  readonly probeQueries?: number;
  /** Starts the system without consumers (schema, workflow registration, clients). */
  start(): Promise<void>;
  /** Submits job `i` with one call (StartRun, send, addJob). */
  enqueue(i: number): Promise<void>;
  /** Starts the consumers (executors, workers). */
  startConsumers(): Promise<void>;
  /** Stops the consumers. */
  stopConsumers(): Promise<void>;
  /** Resolves once the completion of every submitted job is committed. */
  drained(timeoutMs: number): Promise<void>;
  /** Stops everything and closes every connection. */
  stop(): Promise<void>;
}

/** Polls `probe` every `everyMs` until it is true; rejects after `timeoutMs`. */
export async function pollUntil(
  what: string,
  probe: () => boolean | Promise<boolean>,
  timeoutMs: number,
  everyMs = 2,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await probe())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
