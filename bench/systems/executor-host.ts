/**
 * Worker-thread entry: Nexusflow executors running outside the scheduler's event loop, as they do
 * in a deployment (executors are their own processes). The handler records its start time into the
 * recorder's shared arrays, on the main thread's clock.
 *
 * The thread is spawned (and its modules loaded) before any clock runs and serves phase after
 * phase (nexusflow.ts keeps it between phases), so its code is as warm as a long-running
 * executor's: `start` attaches a fresh set of executors to the phase's scheduler, `stop` detaches
 * them. Messages from the parent: {@link ExecutorHostMessage}. Messages to the parent: `ready`,
 * `started`, `stopped`, `{ kind: "error", message }`.
 */
import { parentPort, workerData } from "node:worker_threads";
import { createLogger } from "@nexusflow/common";
import { createMetricsRegistry, grpcClientMetrics, type Registry } from "@nexusflow/common/metrics";
import { Executor, registerExecutorMetrics } from "@nexusflow/executor";
import { watchGcPauses } from "../lib/gc-pauses.js";
import { type AllocationSummary, type Profiling, startProfile } from "../lib/profile.js";
import { recordStart, type WorkerHostData } from "./types.js";

/** What a phase's executors are: where they attach, what they run, where they record. */
export interface ExecutorHostStart {
  kind: "start";
  schedulerAddress: string;
  taskType: string;
  executors: number;
  slots: number;
  starts: Float64Array;
  counts: Int32Array;
  /**
   * Each executor records its Prometheus metrics (its own registry, as its own process would) and
   * is scraped every `scrapeIntervalMs`; undefined: no metrics.
   */
  metrics?: { scrapeIntervalMs: number };
  /** Profile this thread while its executors are attached, into this file (--profile). */
  profileFile?: string;
  /** With `profileFile`, sample its allocations too (--allocations). */
  allocations?: boolean;
}

export type ExecutorHostMessage =
  | ExecutorHostStart
  | { kind: "recorder"; starts: Float64Array; counts: Int32Array }
  | { kind: "stop"; reason: string };

const port = parentPort;
if (port === null) throw new Error("executor-host.ts runs as a worker thread");
const data = workerData as WorkerHostData;
const offset = performance.timeOrigin - data.parentTimeOrigin;
const logger = createLogger("executor", "warn");
let starts: Float64Array = new Float64Array(0);
let counts: Int32Array = new Int32Array(2);
let executors: Executor[] = [];
let scrapeTimer: NodeJS.Timeout | undefined;

function attach(config: ExecutorHostStart): Promise<void> {
  starts = config.starts;
  counts = config.counts;
  const registries: Registry[] = [];
  executors = Array.from({ length: config.executors }, (_, e) => {
    const registry = config.metrics === undefined ? undefined : createMetricsRegistry();
    const executor = new Executor({
      schedulerAddress: config.schedulerAddress,
      executorId: `bench-executor-${e}`,
      slots: config.slots,
      logger,
      builtins: false,
      // As services/executor/src/serve.ts does with METRICS_PORT set.
      ...(registry === undefined ? {} : { channelOptions: { interceptors: [grpcClientMetrics(registry)] } }),
    }).register(config.taskType, (input: { i: number }) => {
      recordStart(starts, counts, input.i, offset + performance.now());
      Atomics.add(counts, 1, 1);
      return null;
    });
    if (registry !== undefined) {
      registerExecutorMetrics(registry, executor, config.slots);
      registries.push(registry);
    }
    return executor;
  });
  if (config.metrics !== undefined) {
    // What a Prometheus costs each executor: a whole exposition every interval.
    scrapeTimer = setInterval(() => {
      for (const registry of registries)
        registry.metrics().catch((e: unknown) => logger.warn({ err: e }, "metrics scrape failed"));
    }, config.metrics.scrapeIntervalMs);
  }
  return Promise.all(executors.map((e) => e.start())).then(() => undefined);
}

// This thread's collections while its executors are attached (they delay handler starts).
let gc: ReturnType<typeof watchGcPauses> | undefined;
// This thread's CPU profile while its executors are attached (--profile).
let profiling: Promise<Profiling> | undefined;

port.on("message", (message: ExecutorHostMessage) => {
  if (message.kind === "recorder") {
    starts = message.starts;
    counts = message.counts;
    return;
  }
  if (message.kind === "start") {
    gc = watchGcPauses();
    if (message.profileFile !== undefined)
      profiling = startProfile(message.profileFile, { allocations: message.allocations === true });
  }
  let allocations: AllocationSummary | undefined;
  const done =
    message.kind === "start"
      ? attach(message)
      : detach(message.reason).then(async () => {
          const current = profiling;
          profiling = undefined;
          if (current !== undefined) allocations = (await (await current).stop()).allocations;
        });
  done.then(
    () =>
      port.postMessage(
        message.kind === "start"
          ? { kind: "started" }
          : { kind: "stopped", gc: gc?.stop(), ...(allocations === undefined ? {} : { allocations }) },
      ),
    (e: unknown) => port.postMessage({ kind: "error", message: String(e) }),
  );
});

function detach(reason: string): Promise<void> {
  clearInterval(scrapeTimer);
  scrapeTimer = undefined;
  const current = executors;
  executors = [];
  return Promise.all(current.map((e) => e.stop(reason))).then(() => undefined);
}

port.postMessage({ kind: "ready" });
