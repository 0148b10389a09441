/** What the throughput, latency and cost sections need from a system under test. */
import type { TelemetryConfig } from "@nexusflow/common/telemetry";
import type { GcPauses } from "../lib/gc-pauses.js";

/**
 * Records when each job's handler started, on the bench process's monotonic clock. The arrays live
 * in shared memory so executors in a worker thread (see `executor-host.ts`) record into them too.
 */
/** What a worker host (executor-host.ts, producer-host.ts) receives as `workerData`. */
export interface WorkerHostData {
  /** The host's module, for the bootstrap (worker.mjs). */
  module: string;
  /** The parent's `performance.timeOrigin`: times are exchanged on its clock. */
  parentTimeOrigin: number;
  /** Telemetry the thread starts before it loads the module (`--tracing`; executors only). */
  tracing?: TelemetryConfig;
}

export class StartRecorder {
  /** performance.now() of the main thread at handler start, by job index (NaN until started). */
  starts: Float64Array;
  /** [started, finished] handler counts, shared with worker threads. */
  counts: Int32Array;
  private waiters: { n: number; resolve: () => void }[] = [];
  /** Called after every reset with the new shared buffers (worker threads switch to them). */
  onReset: ((starts: Float64Array, counts: Int32Array) => void) | undefined;

  constructor(capacity: number) {
    this.starts = sharedStarts(capacity);
    this.counts = new Int32Array(new SharedArrayBuffer(8));
  }

  /** Handlers started so far. */
  get started(): number {
    return Atomics.load(this.counts, 0);
  }

  /** Handlers finished so far. */
  get finished(): number {
    return Atomics.load(this.counts, 1);
  }

  /** Forgets everything and sizes for `capacity` jobs. */
  reset(capacity: number): void {
    this.starts = sharedStarts(capacity);
    this.counts = new Int32Array(new SharedArrayBuffer(8));
    this.waiters = [];
    this.onReset?.(this.starts, this.counts);
  }

  /** Called first thing in a handler. Duplicates (re-deliveries) keep the first start. */
  start(i: number): void {
    recordStart(this.starts, this.counts, i, performance.now());
  }

  /** Called when a handler returns. */
  finish(): void {
    Atomics.add(this.counts, 1, 1);
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

function sharedStarts(capacity: number): Float64Array {
  return new Float64Array(new SharedArrayBuffer(capacity * 8)).fill(Number.NaN);
}

/** Records the start of job `i` at `at` (ms on the main thread's clock) unless already recorded. */
export function recordStart(starts: Float64Array, counts: Int32Array, i: number, at: number): void {
  if (i >= 0 && i < starts.length && Number.isNaN(starts[i])) {
    starts[i] = at;
    Atomics.add(counts, 0, 1);
  }
}

/** A job system compared in sections 1, 2 and 5: Nexusflow, pg-boss, graphile-worker or DBOS. */
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
  /**
   * Submits jobs `first`..`first + count - 1` with one call of the system's bulk API (StartRuns,
   * insert, addJobs); absent for a system without one.
   */
  bulkEnqueue?(first: number, count: number): Promise<void>;
  /**
   * Pre-loads jobs 0..n-1, `concurrency` calls in flight, from a client outside this event loop
   * (a system that is a server has its callers elsewhere). Without it the harness calls `enqueue`.
   */
  preload?(n: number, concurrency: number): Promise<void>;
  /** Sends job i at intended[i] (performance.now() of this thread) from such a client. */
  openLoop?(
    intended: Float64Array,
    rate: number,
  ): Promise<{ sentAt: Float64Array; errors: number; firstError?: string }>;
  /**
   * Collections on the system's own worker threads during the last open loop and consumer run
   * (read after stop), by thread: what the main thread's record does not see.
   */
  threadGc?(): Record<string, GcPauses>;
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
