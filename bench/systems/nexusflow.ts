/**
 * Nexusflow under test: the scheduler in this process (gRPC on 127.0.0.1, port 0), executors in
 * this process attached over gRPC, StartRun through the typed Connect client, like a user would.
 */
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createLogger, jsonToValue, type Logger } from "@nexusflow/common";
import { Executor } from "@nexusflow/executor";
import { WorkflowService } from "@nexusflow/gen";
import { Scheduler } from "@nexusflow/scheduler";
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
  private executors: Executor[] = [];
  /** Called at handler start with the task's input (the DAG section keys by step). */
  onHandler: ((input: { i: number }) => void) | undefined;

  constructor(private readonly options: NexusflowOptions) {
    this.database = options.database;
    this.log = options.log ?? createLogger("bench", "warn");
    this.settings = {
      executors: options.executors ?? 4,
      slotsPerExecutor: options.slots ?? 256,
      schedulerPoolSize: options.poolSize ?? 10,
      enqueue: "StartRun one by one over gRPC (no bulk API)",
      transport: "gRPC over loopback, scheduler and executors in the bench process",
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
    this.schedulerValue = new Scheduler({
      port: 0,
      databaseUrl: this.options.url,
      log: this.log,
      ...(this.options.poolSize === undefined ? {} : { poolSize: this.options.poolSize }),
    });
    await this.schedulerValue.start();
    this.clientValue = createClient(
      WorkflowService,
      createGrpcTransport({ baseUrl: `http://${this.schedulerValue.address}` }),
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
    await this.client.startRun({ workflowName: NOOP_WORKFLOW, input: jsonToValue({ i }) });
  }

  /** Starts a run of any workflow; returns its id. */
  async startRun(workflowName: string, input: unknown): Promise<string> {
    const { run } = await this.client.startRun({ workflowName, input: jsonToValue(input) });
    if (run === undefined) throw new Error("StartRun returned no run");
    return run.id;
  }

  async startConsumers(): Promise<void> {
    const n = this.options.executors ?? 4;
    const slots = this.options.slots ?? 256;
    const logger = createLogger("executor", "warn");
    for (let e = 0; e < n; e++) {
      const executor = new Executor({
        schedulerAddress: this.scheduler.address,
        executorId: `bench-executor-${e}`,
        slots,
        logger,
        builtins: false,
      });
      executor.register(NOOP_TYPE, (input: { i: number }) => {
        this.recorder.start(input.i);
        this.onHandler?.(input);
        this.recorder.finish();
        return null;
      });
      this.executors.push(executor);
    }
    await Promise.all(this.executors.map((e) => e.start()));
  }

  async stopConsumers(): Promise<void> {
    const executors = this.executors;
    this.executors = [];
    await Promise.all(executors.map((e) => e.stop("bench done")));
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
    await this.schedulerValue?.stop();
    this.schedulerValue = undefined;
    this.clientValue = undefined;
  }
}
