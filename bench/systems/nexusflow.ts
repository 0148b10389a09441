/**
 * Nexusflow under test: the scheduler on this process's main thread (gRPC on 127.0.0.1, port 0),
 * the executors in a worker thread (their own event loop, as their own processes would have in a
 * deployment) attached over gRPC. The load's StartRun calls come from a @grpc/grpc-js client in
 * its own worker thread (producer-host.ts); the DAG and session sections call StartRun through the
 * typed Connect client on this thread.
 */
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Worker } from "node:worker_threads";
import { createLogger, jsonToValue, type Logger } from "@nexusflow/common";
import { RunView, WorkflowService } from "@nexusflow/gen";
import { Scheduler } from "@nexusflow/scheduler";
import type { ExecutorHostData, ExecutorHostMessage } from "./executor-host.js";
import type { ProducerCommand, ProducerHostData } from "./producer-host.js";
import { pollUntil, StartRecorder, type QueueSystem } from "./types.js";

/** The task type of every benchmark step. */
export const NOOP_TYPE = "bench-noop";
/** The single-step workflow of sections 1, 2 and 5. */
export const NOOP_WORKFLOW = "bench-noop";

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
  log?: Logger;
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
  private host: Worker | undefined;
  private producer: Worker | undefined;

  constructor(private readonly options: NexusflowOptions) {
    this.database = options.database;
    this.log = options.log ?? createLogger("bench", "warn");
    this.settings = {
      executors: options.executors ?? 4,
      slotsPerExecutor: options.slots ?? 256,
      schedulerPoolSize: options.poolSize ?? 10,
      enqueue:
        "StartRun one by one over gRPC (no bulk API), with a @grpc/grpc-js client in its own worker thread",
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
    const scheduler = new Scheduler({
      port: 0,
      databaseUrl: this.options.url,
      log: this.log,
      ...(this.options.poolSize === undefined ? {} : { poolSize: this.options.poolSize }),
    });
    await scheduler.start();
    this.schedulerValue = scheduler;
    this.host = await this.spawnHost();
    this.producer = await this.spawnProducer();
    this.clientValue = createClient(
      WorkflowService,
      createGrpcTransport({ baseUrl: `http://${scheduler.address}` }),
    );
    await this.register(
      workflowSpec(NOOP_WORKFLOW, [{ id: "only", type: NOOP_TYPE, input: { i: "{{ input.i }}" } }]),
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

  /** Spawns the executors' worker thread and loads its modules (before any clock runs). */
  private async spawnHost(): Promise<Worker> {
    const data: ExecutorHostData = {
      module: "./executor-host.ts",
      schedulerAddress: this.scheduler.address,
      taskType: NOOP_TYPE,
      executors: this.options.executors ?? 4,
      slots: this.options.slots ?? 256,
      parentTimeOrigin: performance.timeOrigin,
      starts: this.recorder.starts,
      counts: this.recorder.counts,
    };
    const worker = await spawnWorker(data);
    this.recorder.onReset = (starts, counts) => {
      const message: ExecutorHostMessage = { kind: "recorder", starts, counts };
      worker.postMessage(message);
    };
    return worker;
  }

  /** Spawns the StartRun client's worker thread. */
  private spawnProducer(): Promise<Worker> {
    const data: ProducerHostData = {
      module: "./producer-host.ts",
      schedulerAddress: this.scheduler.address,
      workflowName: NOOP_WORKFLOW,
      parentTimeOrigin: performance.timeOrigin,
    };
    return spawnWorker(data);
  }

  private async produce(command: ProducerCommand): Promise<{ errors: number; firstError?: string }> {
    const worker = this.producer;
    if (worker === undefined) throw new Error("nexusflow is not started");
    const reply = hostReply(worker, "done");
    worker.postMessage(command);
    const done = await reply;
    const errors = done.errors ?? 0;
    if (errors < 0) throw new Error(`producer: ${done.firstError ?? "failed"}`);
    return { errors, ...(done.firstError === undefined ? {} : { firstError: done.firstError }) };
  }

  /** Pre-loads runs 0..n-1 from the producer thread, `concurrency` calls in flight. */
  async preload(n: number, concurrency: number): Promise<void> {
    const { errors, firstError } = await this.produce({ kind: "closed", n, concurrency });
    if (errors > 0) throw new Error(`${errors} StartRun calls failed: ${firstError ?? ""}`);
  }

  /** Sends run i at intended[i] (this thread's clock) from the producer thread. */
  async openLoop(
    intended: Float64Array,
    rate: number,
  ): Promise<{ sentAt: Float64Array; errors: number; firstError?: string }> {
    const sentAt = new Float64Array(new SharedArrayBuffer(intended.length * 8));
    const t0 = intended[0] ?? performance.now();
    return { sentAt, ...(await this.produce({ kind: "open", n: intended.length, rate, t0, sentAt })) };
  }

  async startConsumers(): Promise<void> {
    const worker = this.host ?? (await this.spawnHost());
    this.host = worker;
    const message: ExecutorHostMessage = { kind: "start" };
    worker.postMessage(message);
    await hostReply(worker, "started");
  }

  async stopConsumers(): Promise<void> {
    const worker = this.host;
    this.host = undefined;
    this.recorder.onReset = undefined;
    if (worker === undefined) return;
    const message: ExecutorHostMessage = { kind: "stop", reason: "bench done" };
    worker.postMessage(message);
    try {
      await hostReply(worker, "stopped");
    } finally {
      await worker.terminate();
    }
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
    return { ...this.scheduler.engine.writer.stats };
  }

  async stop(): Promise<void> {
    await this.stopConsumers();
    const producer = this.producer;
    this.producer = undefined;
    await producer?.terminate();
    await this.schedulerValue?.stop();
    this.schedulerValue = undefined;
    this.clientValue = undefined;
  }
}

/** Starts a worker thread on `data.module` and waits until its modules are loaded. */
async function spawnWorker(data: { module: string }): Promise<Worker> {
  const worker = new Worker(new URL("./worker.mjs", import.meta.url), { workerData: data });
  try {
    await hostReply(worker, "ready");
  } catch (e) {
    await worker.terminate();
    throw e;
  }
  return worker;
}

/** A message of a worker host. */
interface HostReply {
  kind: string;
  message?: string;
  errors?: number;
  firstError?: string;
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
