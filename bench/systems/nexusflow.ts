/**
 * Nexusflow under test: the scheduler on this process's main thread (gRPC on 127.0.0.1, port 0),
 * the executors in a worker thread (their own event loop, as their own processes would have in a
 * deployment) attached over gRPC. The load's StartRun calls come from a @grpc/grpc-js client in
 * its own worker thread (producer-host.ts); the DAG and session sections call StartRun through the
 * typed Connect client on this thread.
 *
 * The two worker threads outlive a system: the next phase's system takes them over, so their code
 * is as warm as in long-running processes, like the scheduler's code on this thread and the peers'
 * clients and workers (all on this thread). A fresh thread per phase measured its own JIT warm-up.
 */
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Worker } from "node:worker_threads";
import { createLogger, jsonToValue, type Logger } from "@nexusflow/common";
import { RunView, WorkflowService } from "@nexusflow/gen";
import { createMetricsRegistry } from "@nexusflow/common/metrics";
import { Scheduler } from "@nexusflow/scheduler";
import type { GcPauses } from "../lib/gc-pauses.js";
import type { AllocationSummary } from "../lib/profile.js";
import { benchTracing } from "../lib/tracing.js";
import type { ExecutorHostMessage } from "./executor-host.js";
import type { ProducerCommand } from "./producer-host.js";
import { pollUntil, StartRecorder, type QueueSystem, type WorkerHostData } from "./types.js";

/** The task type of every benchmark step. */
export const NOOP_TYPE = "bench-noop";
/** The single-step workflow of sections 1, 2 and 5. */
export const NOOP_WORKFLOW = "bench-noop";

/** The worker hosts' modules (relative to worker.mjs). */
const EXECUTOR_HOST = "./executor-host.ts";
const PRODUCER_HOST = "./producer-host.ts";

/** Options of {@link NexusflowSystem}. */
export interface NexusflowOptions {
  url: string;
  database: string;
  /** Executors attached. @default 4 */
  executors?: number;
  /** Slots of each executor. @default 256 */
  slots?: number;
  /** Size of the scheduler's hot-path pool. @default 10 (the scheduler's default) */
  poolSize?: number;
  /** The scheduler's run retention, ms (0: off). @default the scheduler's (30 days) */
  runRetentionMs?: number;
  /** Time between the scheduler's retention purges, ms. @default the scheduler's (1 minute) */
  runRetentionIntervalMs?: number;
  /**
   * More fields of the no-op workflow's one step (section 9: `concurrency`, `rateLimits`).
   * @default none
   */
  noopStep?: Record<string, unknown>;
  /**
   * Cluster mode (SCHEDULER_CLUSTER): the scheduler is one replica holding every partition, its
   * commits fenced (the `partitioning` section). @default false (the one-per-database lock)
   */
  cluster?: boolean;
  /** Record the scheduler's and executors' Prometheus metrics, scraped every 15 s. @default false */
  metrics?: boolean;
  /**
   * The pre-load's StartRun calls carry a `traceparent` sampled for every `sampledEvery`-th run
   * and not for the others (0: none), the caller's decision that the scheduler follows (the
   * `sampling` section). @default undefined (no header: the scheduler's own sampler decides)
   */
  sampledEvery?: number;
  /**
   * Profile the executors' thread (--profile): each attach writes `<prefix>-executors-<n>.cpuprofile`
   * when its executors stop. @default undefined (no profile)
   */
  executorProfilePrefix?: string;
  /** With `executorProfilePrefix`, sample the executors' thread's allocations too, and tell them here. */
  onExecutorAllocations?: (allocations: AllocationSummary) => void;
  log?: Logger;
}

/** How often a Prometheus would scrape the scheduler (its usual interval). */
const SCRAPE_INTERVAL_MS = 15_000;

/** The tracing setting of this run, for the report. */
function describeTracing(): string {
  const tracing = benchTracing();
  if (tracing === undefined) return "off";
  const percent = Math.round(tracing.config.sampleRatio * 1000) / 10;
  return `${percent}% of runs sampled; scheduler and executors export over OTLP/HTTP to a discarding sink in its own process`;
}

/** A workflow spec of `steps` (already shaped) made of bench-noop tasks. */
export function workflowSpec(name: string, steps: unknown[]): string {
  return JSON.stringify({ name, version: 1, steps });
}

/** Nexusflow as a {@link QueueSystem}, plus what the DAG section needs. */
export class NexusflowSystem implements QueueSystem {
  readonly name = "nexusflow";
  readonly database: string;
  readonly recorder = new StartRecorder(0);
  readonly settings: Record<string, unknown>;
  private readonly log: Logger;
  private schedulerValue: Scheduler | undefined;
  private clientValue: Client<typeof WorkflowService> | undefined;
  private threadGcValue: Record<string, GcPauses> = {};
  private host: Worker | undefined;
  private producer: Worker | undefined;
  private scrapeTimer: NodeJS.Timeout | undefined;

  /** Executor-thread profiles written so far (--profile). */
  private profiles = 0;

  constructor(private readonly options: NexusflowOptions) {
    this.database = options.database;
    this.log = options.log ?? createLogger("bench", "warn");
    this.settings = {
      executors: options.executors ?? 4,
      slotsPerExecutor: options.slots ?? 256,
      schedulerPoolSize: options.poolSize ?? 10,
      enqueue:
        "StartRun one by one over gRPC (no bulk API), with a @grpc/grpc-js client in its own worker thread",
      producerYoungGenerationMb: PRODUCER_YOUNG_GENERATION_MB,
      metrics:
        options.metrics === true
          ? `scheduler and executors, each scraped every ${SCRAPE_INTERVAL_MS / 1000} s`
          : "off",
      tracing: describeTracing(),
      transport:
        "gRPC over loopback; the scheduler on the bench process's main thread, the executors in a worker thread",
    };
  }

  /** The running scheduler. */
  get scheduler(): Scheduler {
    if (this.schedulerValue === undefined) throw new Error("nexusflow is not started");
    return this.schedulerValue;
  }

  /** The WorkflowService client. */
  get client(): Client<typeof WorkflowService> {
    if (this.clientValue === undefined) throw new Error("nexusflow is not started");
    return this.clientValue;
  }

  async start(): Promise<void> {
    const registry = this.options.metrics === true ? createMetricsRegistry() : undefined;
    const scheduler = new Scheduler({
      port: 0,
      ...(registry === undefined ? {} : { metrics: registry }),
      databaseUrl: this.options.url,
      log: this.log,
      ...(this.options.poolSize === undefined ? {} : { poolSize: this.options.poolSize }),
      ...(this.options.cluster === true ? { cluster: true } : {}),
      ...(this.options.runRetentionMs === undefined ? {} : { runRetentionMs: this.options.runRetentionMs }),
      ...(this.options.runRetentionIntervalMs === undefined
        ? {}
        : { runRetentionIntervalMs: this.options.runRetentionIntervalMs }),
    });
    await scheduler.start();
    this.schedulerValue = scheduler;
    if (registry !== undefined) {
      // What a Prometheus costs the scheduler: a whole exposition every interval.
      this.scrapeTimer = setInterval(() => {
        registry.metrics().catch((e: unknown) => this.log.warn({ err: e }, "metrics scrape failed"));
      }, SCRAPE_INTERVAL_MS);
    }
    this.host = await acquireWorker(EXECUTOR_HOST);
    this.producer = await acquireWorker(PRODUCER_HOST);
    const connect: ProducerCommand = {
      kind: "connect",
      schedulerAddress: scheduler.address,
      workflowName: NOOP_WORKFLOW,
    };
    await command(this.producer, connect, "started");
    this.clientValue = createClient(
      WorkflowService,
      createGrpcTransport({ baseUrl: `http://${scheduler.address}` }),
    );
    await this.register(
      workflowSpec(NOOP_WORKFLOW, [
        { id: "only", type: NOOP_TYPE, input: { i: "{{ input.i }}" }, ...this.options.noopStep },
      ]),
    );
  }

  /** Registers a workflow definition (idempotent for identical content). */
  async register(specJson: string): Promise<void> {
    await this.client.registerWorkflow({ definition: { case: "specJson", value: specJson } });
  }

  async enqueue(i: number): Promise<void> {
    await this.client.startRun({
      workflowName: NOOP_WORKFLOW,
      input: jsonToValue({ i }),
      view: RunView.BASIC,
    });
  }

  async bulkEnqueue(first: number, count: number): Promise<void> {
    const { results } = await this.client.startRuns({
      runs: Array.from({ length: count }, (_, k) => ({
        workflowName: NOOP_WORKFLOW,
        input: jsonToValue({ i: first + k }),
      })),
    });
    const failed = results.find((r) => r.result.case !== "started");
    if (failed !== undefined || results.length !== count)
      throw new Error(
        `StartRuns: ${failed?.result.case === "error" ? failed.result.value.message : `${results.length} of ${count} results`}`,
      );
  }

  /** Starts a run of any workflow; returns its id. */
  async startRun(workflowName: string, input: unknown): Promise<string> {
    const { run } = await this.client.startRun({
      workflowName,
      input: jsonToValue(input),
      view: RunView.BASIC,
    });
    if (run === undefined) throw new Error("StartRun returned no run");
    return run.id;
  }

  private async produce(
    order: ProducerCommand,
  ): Promise<{ errors: number; firstError?: string; gc?: GcPauses }> {
    const worker = this.producer;
    if (worker === undefined) throw new Error("nexusflow is not started");
    const done = await command(worker, order, "done");
    const errors = done.errors ?? 0;
    if (errors < 0) throw new Error(`producer: ${done.firstError ?? "failed"}`);
    return {
      errors,
      ...(done.firstError === undefined ? {} : { firstError: done.firstError }),
      ...(done.gc === undefined ? {} : { gc: done.gc }),
    };
  }

  /**
   * Pre-loads runs 0..n-1 from the producer thread, `concurrency` calls in flight, with the
   * `traceparent` headers of {@link NexusflowOptions.sampledEvery}.
   */
  async preload(n: number, concurrency: number): Promise<void> {
    const { sampledEvery } = this.options;
    const { errors, firstError } = await this.produce({
      kind: "closed",
      n,
      concurrency,
      ...(sampledEvery === undefined ? {} : { sampledEvery }),
    });
    if (errors > 0) throw new Error(`${errors} StartRun calls failed: ${firstError ?? ""}`);
  }

  /** Sends run i at intended[i] (this thread's clock) from the producer thread. */
  async openLoop(
    intended: Float64Array,
    rate: number,
  ): Promise<{ sentAt: Float64Array; errors: number; firstError?: string }> {
    const sentAt = new Float64Array(new SharedArrayBuffer(intended.length * 8));
    const t0 = intended[0] ?? performance.now();
    const { gc, ...result } = await this.produce({ kind: "open", n: intended.length, rate, t0, sentAt });
    if (gc !== undefined) this.threadGcValue.client = gc;
    return { sentAt, ...result };
  }

  /** The worker threads' collections in the last open loop (client) and consumer run (executors). */
  threadGc(): Record<string, GcPauses> {
    return { ...this.threadGcValue };
  }

  async startConsumers(): Promise<void> {
    const worker = this.host ?? (await acquireWorker(EXECUTOR_HOST));
    this.host = worker;
    const start: ExecutorHostMessage = {
      kind: "start",
      schedulerAddress: this.scheduler.address,
      taskType: NOOP_TYPE,
      executors: this.options.executors ?? 4,
      slots: this.options.slots ?? 256,
      starts: this.recorder.starts,
      counts: this.recorder.counts,
      ...(this.options.metrics === true ? { metrics: { scrapeIntervalMs: SCRAPE_INTERVAL_MS } } : {}),
      ...(this.options.executorProfilePrefix === undefined
        ? {}
        : {
            profileFile: `${this.options.executorProfilePrefix}-executors-${++this.profiles}.cpuprofile`,
            allocations: this.options.onExecutorAllocations !== undefined,
          }),
    };
    await command(worker, start, "started");
    this.recorder.onReset = (starts, counts) => {
      const message: ExecutorHostMessage = { kind: "recorder", starts, counts };
      worker.postMessage(message);
    };
  }

  async stopConsumers(): Promise<void> {
    const worker = this.host;
    this.host = undefined;
    this.recorder.onReset = undefined;
    if (worker === undefined) return;
    const stop: ExecutorHostMessage = { kind: "stop", reason: "bench done" };
    const stopped = command(worker, stop, "stopped");
    await releaseWorker(EXECUTOR_HOST, worker, stopped);
    const { gc, allocations } = await stopped;
    if (gc !== undefined) this.threadGcValue.executors = gc;
    if (allocations !== undefined) this.options.onExecutorAllocations?.(allocations);
  }

  /** Runs still active in the engine (runs leave memory once their completion is committed). */
  activeRuns(): number {
    return this.scheduler.engine.stats().activeRuns;
  }

  async drained(timeoutMs: number): Promise<void> {
    await pollUntil("every run to complete", () => this.activeRuns() === 0, timeoutMs, 1);
  }

  /** Resolves when `runId` has left the engine (its completion is committed). */
  async finished(runId: string, timeoutMs: number): Promise<void> {
    await pollUntil(`run ${runId}`, () => !this.scheduler.engine.isActive(runId), timeoutMs, 1);
  }

  /** Group-commit statistics of the engine. */
  writerStats(): { commits: number; failedCommits: number; rows: number } {
    return { ...this.scheduler.writerStats };
  }

  async stop(): Promise<void> {
    clearInterval(this.scrapeTimer);
    this.scrapeTimer = undefined;
    await this.stopConsumers();
    const producer = this.producer;
    this.producer = undefined;
    if (producer !== undefined) {
      const disconnect: ProducerCommand = { kind: "disconnect" };
      await releaseWorker(PRODUCER_HOST, producer, command(producer, disconnect, "stopped"));
    }
    await this.schedulerValue?.stop();
    this.schedulerValue = undefined;
    this.clientValue = undefined;
  }
}

/** Idle worker hosts by module, kept between phases (unreferenced: they never hold the process open). */
const idleWorkers = new Map<string, Worker[]>();

/** An idle host of `module`, or a new one (spawned and loaded before any clock runs). */
async function acquireWorker(module: string): Promise<Worker> {
  const worker = idleWorkers.get(module)?.pop() ?? (await spawnWorker(module));
  worker.ref();
  return worker;
}

/** Keeps `worker` for the next phase once `detached` settles; a host that failed is ended instead. */
async function releaseWorker(module: string, worker: Worker, detached: Promise<unknown>): Promise<void> {
  try {
    await detached;
  } catch (e) {
    await worker.terminate();
    throw e;
  }
  worker.unref();
  const idle = idleWorkers.get(module) ?? [];
  idle.push(worker);
  idleWorkers.set(module, idle);
}

/** Sends `message` to a host and waits for its reply of `kind`. */
function command(worker: Worker, message: unknown, kind: "started" | "stopped" | "done"): Promise<HostReply> {
  const reply = hostReply(worker, kind);
  worker.postMessage(message);
  return reply;
}

/**
 * Young generation of the StartRun client's thread, MiB. Each call through Node's HTTP/2 client
 * leaves objects that survive a scavenge or two (about a quarter of what the thread allocates at
 * 1,000 calls/s is promoted), so with V8's default (~16 MiB semi-spaces) each scavenge copied
 * ~3 MB and paused the sender 8-10 ms on average: send lag the harness added to every latency. A
 * small young generation scavenges four times as often, ~2 ms each (send lag p99 7-10 -> 3-6 ms in
 * interleaved runs). The executors' thread and the scheduler keep V8's defaults.
 */
const PRODUCER_YOUNG_GENERATION_MB = 6;

/** Starts a worker thread on `module` and waits until its modules are loaded. */
async function spawnWorker(module: string): Promise<Worker> {
  // The executors trace as an executor process would; the StartRun client is the user's, untraced.
  const tracing = module === EXECUTOR_HOST ? benchTracing()?.config : undefined;
  const data: WorkerHostData = {
    module,
    parentTimeOrigin: performance.timeOrigin,
    ...(tracing === undefined ? {} : { tracing: { ...tracing, serviceName: "nexusflow-executor" } }),
  };
  const worker = new Worker(new URL("./worker.mjs", import.meta.url), {
    workerData: data,
    // The thread's name in /proc: the CPU of each thread is reported by it (lib/cpu.ts).
    name: module === EXECUTOR_HOST ? "executor-host" : module === PRODUCER_HOST ? "producer-host" : "host",
    ...(module === PRODUCER_HOST
      ? { resourceLimits: { maxYoungGenerationSizeMb: PRODUCER_YOUNG_GENERATION_MB } }
      : {}),
  });
  try {
    await hostReply(worker, "ready");
  } catch (e) {
    await worker.terminate();
    throw e;
  }
  // A host that dies while idle is never handed out again (a command to it would go unanswered).
  worker.once("exit", () => {
    const idle = idleWorkers.get(module) ?? [];
    if (idle.includes(worker)) idle.splice(idle.indexOf(worker), 1);
  });
  return worker;
}

/** A message of a worker host. */
interface HostReply {
  kind: string;
  message?: string;
  errors?: number;
  firstError?: string;
  /** The host thread's collections (open loop: the producer's; stopped: the executors'). */
  gc?: GcPauses;
  /** What the executors' thread allocated while profiled (stopped, --allocations). */
  allocations?: AllocationSummary;
}

/** Waits for the host's next message, which must be `kind`; its `error` message or exit rejects. */
function hostReply(worker: Worker, kind: "ready" | "started" | "stopped" | "done"): Promise<HostReply> {
  return new Promise<HostReply>((resolve, reject) => {
    const cleanup = (): void => {
      worker.off("message", onMessage);
      worker.off("error", onError);
      worker.off("exit", onExit);
    };
    const onMessage = (m: HostReply): void => {
      cleanup();
      if (m.kind === kind) resolve(m);
      else reject(new Error(`worker host: ${m.message ?? m.kind}`));
    };
    const onError = (e: Error): void => {
      cleanup();
      reject(e);
    };
    const onExit = (code: number): void => {
      cleanup();
      reject(new Error(`worker host exited with code ${code}`));
    };
    worker.on("message", onMessage);
    worker.on("error", onError);
    worker.on("exit", onExit);
  });
}
