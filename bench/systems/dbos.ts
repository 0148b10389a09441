/**
 * DBOS Transact (`@dbos-inc/dbos-sdk` 5) under test: durable workflows checkpointed in PostgreSQL by a
 * library inside the application. Every job is a registered workflow of one step, started with
 * `DBOS.startWorkflow` on a database-backed queue with a per-process concurrency limit
 * (`workerConcurrency`, the form DBOS's queue tutorial recommends). DBOS's queue dispatcher polls:
 * enqueueing wakes nothing, so schedule-to-start is bounded below by the queue's polling interval.
 *
 * DBOS is a process-global singleton (`DBOS.launch()` / `DBOS.shutdown()`), so one system at a time
 * is launched; each phase gets its own system database (a fresh database in the shared cluster) and
 * re-registers its workflows, since every stop clears DBOS's registry.
 *
 * A phase launches DBOS first as a process that only enqueues (`listenQueues: []`, DBOS's setting for
 * a process that dequeues from none of the queues) and registers the queue; starting the consumers
 * relaunches it as a worker (no `listenQueues`), whose dispatcher finds the queue at launch and polls
 * it one interval later. (A queue registered after launch is found at the dispatcher's next reconcile,
 * up to a second later.) The relaunch is inside the drain's clock, as starting graphile-worker's runner is.
 *
 * The DAG section's shapes, the DBOS way: a chain is one workflow running its steps in sequence (each
 * step checkpointed before the next runs); a fan-out is a workflow that runs a root step, starts one
 * child workflow per branch on a queue, awaits their handles in order and runs a join step.
 */
import { DBOS, type DLogger, type WorkflowHandle } from "@dbos-inc/dbos-sdk";
import pg from "pg";
import { pollUntil, StartRecorder, type QueueSystem } from "./types.js";

/** The queue of every job, and of the fan-out's children. */
const QUEUE = "bench";
/** The application name DBOS records (and scopes queues by). */
const APP = "nexusflow-bench";
/** Name of the one-step no-op workflow (what the drain probe counts). */
const NOOP_WORKFLOW = "benchNoop";

/** Options of {@link DbosSystem}. */
export interface DbosOptions {
  url: string;
  database: string;
  /** Workflows of a queue running at once in this process (`workerConcurrency`). @default 1024 */
  workerConcurrency?: number;
  /** The queues' polling interval, ms (`minPollingIntervalMs`; DBOS's default is 1,000). @default 100 */
  pollingIntervalMs?: number;
  /** System database pool (`systemDatabasePoolSize`). @default 10 (DBOS's default) */
  poolSize?: number;
}

/** What the DAG section runs. */
export interface DbosShapes {
  /** Starts the fan-out workflow (root, `width` children on a queue, join); resolves once it is committed. */
  fanOut(width: number): Promise<void>;
  /** Starts the chain workflow of `length` steps; resolves once it is committed. */
  chain(length: number): Promise<void>;
}

/** The database of the system launched in this process: DBOS has one executor per process. */
let launchedFor: string | undefined;

/** DBOS's warnings and errors go to stderr, like pg-boss's; its info and debug lines are dropped. */
const logger: DLogger = {
  info: () => undefined,
  debug: () => undefined,
  warn: (entry) => void process.stderr.write(`dbos warning: ${describe(entry)}\n`),
  error: (entry) => void process.stderr.write(`dbos error: ${describe(entry)}\n`),
};

function describe(entry: unknown): string {
  return entry instanceof Error ? entry.message : typeof entry === "string" ? entry : JSON.stringify(entry);
}

/** DBOS as a {@link QueueSystem}, plus the DAG section's shapes. */
export class DbosSystem implements QueueSystem {
  readonly name = "dbos";
  readonly database: string;
  readonly recorder = new StartRecorder(0);
  readonly settings: Record<string, unknown>;
  /** Queries the harness itself ran on this database (subtracted from its cost). */
  probeQueries = 0;
  private probe: pg.Pool | undefined;
  private noop: ((i: number) => Promise<void>) | undefined;
  private shapes: DbosShapes | undefined;
  private enqueued = 0;
  /** Whether this system holds DBOS's launch (from start to stop). */
  private launched = false;

  constructor(private readonly options: DbosOptions) {
    this.database = options.database;
    this.settings = {
      queue: "one database-backed queue (DBOS.registerQueue)",
      workerConcurrency: this.workerConcurrency,
      minPollingIntervalMs: this.pollingIntervalMs,
      systemDatabasePoolSize: options.poolSize ?? 10,
      maxConcurrentQueueDispatches: "default (3)",
      workflow: "registerWorkflow: one runStep (the handler)",
      enqueue: "DBOS.startWorkflow(workflow, { queueName }) one by one, from the launched process",
      consumers: "this process's queue dispatcher: DBOS relaunched without listenQueues: []",
      other: "DBOS defaults (LISTEN/NOTIFY for events and messages, no OTLP, executor 'local')",
    };
  }

  private get workerConcurrency(): number {
    return this.options.workerConcurrency ?? 1024;
  }

  private get pollingIntervalMs(): number {
    return this.options.pollingIntervalMs ?? 100;
  }

  /**
   * Registers the workflows, launches DBOS on this system's database as a process that dispatches no
   * queue, and registers the queue.
   */
  async start(): Promise<void> {
    if (launchedFor !== undefined) throw new Error(`DBOS is already launched for ${launchedFor}`);
    launchedFor = this.database;
    this.launched = true;
    try {
      this.registerWorkflows();
      await this.launch([]);
      await DBOS.registerQueue(QUEUE, {
        workerConcurrency: this.workerConcurrency,
        minPollingIntervalMs: this.pollingIntervalMs,
        onConflict: "always_update",
      });
    } catch (e) {
      await this.stop().catch(() => undefined);
      throw e;
    }
    this.probe = new pg.Pool({ connectionString: this.options.url, max: 1 });
    this.enqueued = 0;
  }

  /** Launches DBOS; `listenQueues` [] dispatches no queue, undefined every queue of the application. */
  private async launch(listenQueues: string[] | undefined): Promise<void> {
    DBOS.setConfig({
      name: APP,
      systemDatabaseUrl: this.options.url,
      systemDatabasePoolSize: this.options.poolSize ?? 10,
      logger,
      ...(listenQueues === undefined ? {} : { listenQueues }),
    });
    await DBOS.launch();
  }

  /** Fresh wrappers of the workflows: every stop clears DBOS's registry. */
  private registerWorkflows(): void {
    this.noop = DBOS.registerWorkflow(
      async (i: number): Promise<void> => {
        await DBOS.runStep(
          () => {
            this.recorder.start(i);
            this.recorder.finish();
            return Promise.resolve();
          },
          { name: "noop" },
        );
      },
      { name: NOOP_WORKFLOW },
    );
    const child = DBOS.registerWorkflow(
      async (k: number): Promise<void> => {
        await DBOS.runStep(() => this.record(k), { name: "branch" });
      },
      { name: "benchFanChild" },
    );
    const fanOut = DBOS.registerWorkflow(
      async (width: number): Promise<void> => {
        await DBOS.runStep(() => this.record(0), { name: "root" });
        const handles: WorkflowHandle<void>[] = [];
        for (let k = 1; k <= width; k++)
          handles.push(await DBOS.startWorkflow(child, { queueName: QUEUE })(k));
        for (const h of handles) await h.getResult();
        await DBOS.runStep(() => this.record(width + 1), { name: "join" });
      },
      { name: "benchFanOut" },
    );
    const chain = DBOS.registerWorkflow(
      async (length: number): Promise<void> => {
        for (let k = 0; k < length; k++) await DBOS.runStep(() => this.record(k), { name: "step" });
      },
      { name: "benchChain" },
    );
    // Started directly (not queued), as a StartRun starts a run: DBOS runs them in this process at once.
    this.shapes = {
      fanOut: async (width) => (await DBOS.startWorkflow(fanOut)(width)).getResult(),
      chain: async (length) => (await DBOS.startWorkflow(chain)(length)).getResult(),
    };
  }

  /** A DAG step's body: its start, on the harness's clock. */
  private record(i: number): Promise<void> {
    this.recorder.start(i);
    return Promise.resolve();
  }

  async enqueue(i: number): Promise<void> {
    const noop = this.noop;
    if (noop === undefined || !this.launched) throw new Error("dbos is not started");
    await DBOS.startWorkflow(noop, { queueName: QUEUE })(i);
    this.enqueued++;
  }

  /** Relaunches DBOS as a worker: its dispatcher polls the queue from launch on. */
  async startConsumers(): Promise<void> {
    if (!this.launched) throw new Error("dbos is not started");
    // Registrations survive a shutdown without `deregister`.
    await DBOS.shutdown();
    await this.launch(undefined);
  }

  /** The DAG section's shapes (after {@link startConsumers}). */
  get dagShapes(): DbosShapes {
    if (this.shapes === undefined) throw new Error("dbos is not started");
    return this.shapes;
  }

  /**
   * Shuts DBOS down (waiting up to 5 s for workflows still running here) and clears its registry:
   * the queue dispatcher stops only with the executor.
   */
  async stopConsumers(): Promise<void> {
    if (!this.launched) return;
    try {
      await DBOS.shutdown({ deregister: true, workflowCompletionTimeoutMS: 5000 });
    } finally {
      launchedFor = undefined;
      this.launched = false;
      this.noop = undefined;
      this.shapes = undefined;
    }
  }

  /** Resolves once every enqueued workflow's SUCCESS is committed in DBOS's `workflow_status`. */
  async drained(timeoutMs: number): Promise<void> {
    await this.recorder.untilFinished(this.enqueued, timeoutMs, "dbos");
    const probe = this.probe;
    if (probe === undefined) return;
    await pollUntil(
      "dbos completions",
      async () => {
        this.probeQueries++;
        const r = await probe.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM dbos.workflow_status WHERE name = $1 AND status <> 'SUCCESS'",
          [NOOP_WORKFLOW],
        );
        return r.rows[0]?.n === 0;
      },
      timeoutMs,
      5,
    );
  }

  async stop(): Promise<void> {
    await this.stopConsumers();
    await this.probe?.end();
    this.probe = undefined;
  }
}
