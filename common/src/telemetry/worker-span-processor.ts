/**
 * A span processor that batches a service's ended, sampled spans as the SDK's
 * `BatchSpanProcessor` does (a batch every `exportDelayMs`, or as soon as `maxExportBatchSize`
 * spans wait) but hands each batch to a worker thread (./export-worker.ts), which sends it. The
 * service's thread encodes each span as OTLP/protobuf once, as it ends (./otlp-spans.ts), and a
 * batch goes to the export thread as one request body whose buffer is moved, not copied
 * (bench/notes/26-session-thirty.md; before it, plain arrays copied by `postMessage` and
 * serialized there: bench/notes/14-session-twelve.md).
 *
 * Memory is bounded: at most `maxQueueSize` spans wait, counting those handed to the export thread
 * and not yet sent; a span ended while the queue is full is dropped and counted, with a warning
 * (the first at once, then at most one every {@link DROP_WARNING_INTERVAL_MS} with the count).
 * The export thread's failure never reaches the service: its spans are counted as failed and a
 * new thread is started for the next batch, at most once every {@link RESTART_DELAY_MS}.
 * `forceFlush` resolves once every span ended before it is sent (or failed); `shutdown` flushes,
 * then stops the exporter and the thread.
 */
import { Worker } from "node:worker_threads";
import { TraceFlags } from "@opentelemetry/api";
import type { ReadableSpan, SpanProcessor } from "@opentelemetry/sdk-trace";
import type { ExportWorkerData, FromExportWorker, ToExportWorker } from "./export-worker.js";
import { type EncodedSpans, OtlpSpanBuffer } from "./otlp-spans.js";

/** Options of {@link WorkerSpanProcessor}. */
export interface WorkerSpanProcessorOptions {
  /** The OTLP/HTTP traces URL. */
  url: string;
  /** Headers sent with each export. @default {} */
  headers?: Record<string, string>;
  /** The longest a span waits before its batch is handed over, ms. @default 200 */
  exportDelayMs?: number;
  /** Spans per export request. @default 512 (the SDK's) */
  maxExportBatchSize?: number;
  /** Spans waiting at most, handed over or not. @default 2048 (the SDK's) */
  maxQueueSize?: number;
  /** The longest one export may take before its spans count as failed, ms. @default 30000 (the SDK's) */
  exportTimeoutMs?: number;
  /**
   * Where warnings go (spans dropped, the export thread failed): `message` says it all, `fields`
   * has its numbers. @default none
   */
  warn?: (message: string, fields: Record<string, unknown>) => void;
  /**
   * The export thread's name, which the operating system shows too (`top -H`, /proc; 15 characters
   * at most are kept). @default "otlp-export"
   */
  threadName?: string;
  /**
   * Starts an export thread (tests start one that fails). @default {@link startExportWorker}
   */
  startThread?: (data: ExportWorkerData, name: string) => Worker;
}

/** The warnings of dropped spans come at most this often (with the count since the last). */
export const DROP_WARNING_INTERVAL_MS = 10_000;
/** A failed export thread is started again at most this often. */
export const RESTART_DELAY_MS = 1_000;

type Resolved = Required<Omit<WorkerSpanProcessorOptions, "warn">> & {
  warn: WorkerSpanProcessorOptions["warn"] | undefined;
};

/** The export thread's name when none is given (`top -H`, /proc/<pid>/task/<tid>/comm). */
const DEFAULT_THREAD_NAME = "otlp-export";

function withDefaults(options: WorkerSpanProcessorOptions): Resolved {
  const maxQueueSize = options.maxQueueSize ?? 2048;
  return {
    url: options.url,
    headers: options.headers ?? {},
    exportDelayMs: options.exportDelayMs ?? 200,
    maxQueueSize,
    maxExportBatchSize: Math.min(options.maxExportBatchSize ?? 512, maxQueueSize),
    exportTimeoutMs: options.exportTimeoutMs ?? 30_000,
    warn: options.warn,
    threadName: options.threadName ?? DEFAULT_THREAD_NAME,
    startThread: options.startThread ?? startExportWorker,
  };
}

/** The export thread's state: none yet, running, failed (restartable after a pause), or stopped. */
type ThreadState =
  | { kind: "idle" }
  | { kind: "running"; worker: Worker; sent: Map<number, number>; flushes: Map<number, () => void> }
  | { kind: "failed"; at: number }
  | { kind: "stopped" };

/** How the export thread counts what it did (for tests and the benchmark). */
export interface ExportCounts {
  /** Spans the collector accepted. */
  exported: number;
  /** Spans whose export failed (the collector refused them, timed out, or the thread died). */
  failed: number;
  /** Spans dropped because the queue was full. */
  dropped: number;
}

export class WorkerSpanProcessor implements SpanProcessor {
  private readonly options: Resolved;
  private readonly buffer = new OtlpSpanBuffer();
  /** Spans handed to the export thread and not yet done. */
  private handedOver = 0;
  private timer: NodeJS.Timeout | undefined;
  private state: ThreadState = { kind: "idle" };
  private seq = 0;
  private readonly counts: ExportCounts = { exported: 0, failed: 0, dropped: 0 };
  private droppedUnwarned = 0;
  private lastDropWarning = -Infinity;
  private stopping: Promise<void> | undefined;

  constructor(options: WorkerSpanProcessorOptions) {
    this.options = withDefaults(options);
    // Started now, with the service, not at its first span: loading the exporter's modules in a
    // new thread takes hundreds of ms of CPU, which would land on the service's first traffic.
    this.thread(true);
  }

  /** What was exported, failed and dropped so far. */
  get exportCounts(): Readonly<ExportCounts> {
    return this.counts;
  }

  onStart(): void {}

  onEnd(span: ReadableSpan): void {
    if (this.stopping !== undefined) return;
    if ((span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
    if (this.buffer.length + this.handedOver >= this.options.maxQueueSize) {
      this.drop(1);
      return;
    }
    try {
      this.buffer.add(span);
    } catch (e) {
      // Never the service's problem: ending a span must not throw.
      this.counts.failed += 1;
      this.options.warn?.(`trace export: a span could not be encoded (${String(e)}); it is dropped`, {
        err: String(e),
      });
      return;
    }
    if (this.buffer.length >= this.options.maxExportBatchSize) this.handOver();
    else if (this.timer === undefined) this.handOverLater();
  }

  forceFlush(): Promise<void> {
    // A flush does not wait out a failed thread's pause: it starts a new one at once.
    while (this.buffer.length > 0 && this.handOver(true));
    const state = this.state;
    if (state.kind !== "running") return Promise.resolve();
    const id = ++this.seq;
    return new Promise<void>((resolve) => {
      state.flushes.set(id, resolve);
      // Kept alive until the thread answers: a flush at exit must not be cut short.
      state.worker.ref();
      this.post(state, { kind: "flush", id });
    });
  }

  shutdown(): Promise<void> {
    this.stopping ??= this.stop();
    return this.stopping;
  }

  private async stop(): Promise<void> {
    await this.forceFlush();
    const state = this.state;
    this.state = { kind: "stopped" };
    this.clearTimer();
    // Spans no thread could take (it failed again at the flush) are lost.
    this.counts.failed += this.buffer.length;
    this.buffer.clear();
    this.warnDropped(true);
    if (state.kind !== "running") return;
    const closed = new Promise<void>((resolve) => {
      state.worker.once("exit", () => resolve());
      state.worker.on("message", (m: FromExportWorker) => {
        if (m.kind === "closed") resolve();
      });
    });
    state.worker.ref();
    state.worker.postMessage({ kind: "shutdown" } satisfies ToExportWorker);
    await closed;
    await state.worker.terminate();
  }

  /**
   * Hands the buffered spans (one batch at most) to the export thread; false when there is none
   * to take them (it failed a moment ago: the spans wait, bounded by the queue, for the next try).
   */
  private handOver(now = false): boolean {
    this.clearTimer();
    if (this.buffer.length === 0) return false;
    const state = this.thread(now);
    if (state === undefined) {
      if (this.stopping === undefined) this.handOverLater();
      return false;
    }
    let taken: EncodedSpans;
    try {
      taken = this.buffer.take(this.options.maxExportBatchSize);
    } catch (e) {
      // Never the service's problem (this runs inside a span's end, or a timer): the spans waiting
      // are lost, counted and warned of.
      const lost = this.buffer.length;
      this.buffer.clear();
      this.counts.failed += lost;
      this.options.warn?.(
        `trace export: a batch could not be assembled (${String(e)}); ${lost} spans are lost`,
        {
          err: String(e),
          lost_spans: lost,
        },
      );
      return false;
    }
    const { body, count } = taken;
    const seq = ++this.seq;
    state.sent.set(seq, count);
    this.handedOver += count;
    this.post(state, { kind: "spans", seq, body, count }, [body.buffer as ArrayBuffer]);
    if (this.buffer.length > 0) this.handOverLater();
    return true;
  }

  /** Hands the buffered spans over in `exportDelayMs` (a timer that keeps no process alive). */
  private handOverLater(): void {
    this.timer = setTimeout(() => this.handOver(), this.options.exportDelayMs);
    this.timer.unref();
  }

  private post(
    state: Extract<ThreadState, { kind: "running" }>,
    message: ToExportWorker,
    transfer: ArrayBuffer[] = [],
  ): void {
    try {
      state.worker.postMessage(message, transfer);
    } catch (e) {
      this.failed(state, e);
    }
  }

  /** The running export thread, started if there is none (undefined while a failed one pauses). */
  private thread(now: boolean): Extract<ThreadState, { kind: "running" }> | undefined {
    const state = this.state;
    if (state.kind === "running") return state;
    if (state.kind === "stopped") return undefined;
    if (state.kind === "failed" && !now && performance.now() - state.at < RESTART_DELAY_MS) return undefined;
    let worker: Worker;
    try {
      worker = this.options.startThread(
        {
          url: this.options.url,
          headers: this.options.headers,
          exportTimeoutMs: this.options.exportTimeoutMs,
        },
        this.options.threadName,
      );
    } catch (e) {
      this.state = { kind: "failed", at: performance.now() };
      const err = e instanceof Error ? e.message : String(e);
      this.options.warn?.(`trace export thread could not start (${err}); spans wait for the next try`, {
        err,
      });
      return undefined;
    }
    const running: Extract<ThreadState, { kind: "running" }> = {
      kind: "running",
      worker,
      sent: new Map(),
      flushes: new Map(),
    };
    worker.unref();
    worker.on("message", (m: FromExportWorker) => this.onMessage(running, m));
    worker.on("error", (e) => this.failed(running, e));
    worker.on("exit", (code) => {
      if (this.state === running) this.failed(running, new Error(`exited with code ${code}`));
    });
    this.state = running;
    return running;
  }

  private onMessage(state: Extract<ThreadState, { kind: "running" }>, m: FromExportWorker): void {
    switch (m.kind) {
      case "done": {
        const count = state.sent.get(m.seq);
        if (count === undefined) return;
        state.sent.delete(m.seq);
        this.handedOver -= count;
        if (m.ok) this.counts.exported += count;
        else this.counts.failed += count;
        return;
      }
      case "flushed": {
        const resolve = state.flushes.get(m.id);
        state.flushes.delete(m.id);
        if (state.flushes.size === 0 && this.state === state) state.worker.unref();
        resolve?.();
        return;
      }
      case "closed":
        return;
    }
  }

  /** The export thread died or refused a message: its spans are lost, the service goes on. */
  private failed(state: Extract<ThreadState, { kind: "running" }>, e: unknown): void {
    if (this.state !== state) return;
    let lost = 0;
    for (const count of state.sent.values()) lost += count;
    this.handedOver -= lost;
    this.counts.failed += lost;
    state.sent.clear();
    this.state = { kind: "failed", at: performance.now() };
    for (const resolve of state.flushes.values()) resolve();
    state.flushes.clear();
    state.worker.removeAllListeners("message");
    void state.worker.terminate().catch(() => undefined);
    const err = e instanceof Error ? e.message : String(e);
    this.options.warn?.(`trace export thread failed (${err}); its ${lost} spans are lost, a new one starts`, {
      err,
      lost_spans: lost,
    });
  }

  private drop(count: number): void {
    this.counts.dropped += count;
    this.droppedUnwarned += count;
    this.warnDropped(false);
  }

  private warnDropped(final: boolean): void {
    if (this.droppedUnwarned === 0) return;
    const now = performance.now();
    if (!final && now - this.lastDropWarning < DROP_WARNING_INTERVAL_MS) return;
    this.options.warn?.(
      `trace export queue full (${this.options.maxQueueSize} spans): ${this.droppedUnwarned} spans dropped (${this.counts.dropped} in all)`,
      { dropped_spans: this.droppedUnwarned, dropped_spans_total: this.counts.dropped },
    );
    this.droppedUnwarned = 0;
    this.lastDropWarning = now;
  }

  private clearTimer(): void {
    if (this.timer === undefined) return;
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/**
 * Starts ./export-worker: the compiled `.js` as it is (the container image), or, running from the
 * TypeScript sources, the `.ts` through tsx's loader registered in the new thread. The thread gets
 * none of the service's Node flags (they would preload the service's own modules there).
 */
export function startExportWorker(data: ExportWorkerData, name = DEFAULT_THREAD_NAME): Worker {
  const self = import.meta.url;
  if (!self.endsWith(".ts")) {
    return new Worker(new URL("./export-worker.js", self), { workerData: data, execArgv: [], name });
  }
  const module = new URL("./export-worker.ts", self).href;
  const tsx = import.meta.resolve("tsx/esm/api");
  const bootstrap = `import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(module)}); });`;
  return new Worker(bootstrap, { eval: true, workerData: data, execArgv: [], name });
}
