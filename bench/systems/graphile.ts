/**
 * graphile-worker 0.17 under test, with the configuration of its own performance page (concurrency
 * 24, pool 25, local queue of 500, completion batching at 0 ms). Workers wake on LISTEN/NOTIFY when
 * a job is added, so latency is not bound by a polling interval.
 */
import { Logger, makeWorkerUtils, run, type Runner, type WorkerUtils } from "graphile-worker";
import pg from "pg";
import { pollUntil, StartRecorder, type QueueSystem } from "./types.js";

const TASK = "bench_noop";

/** Options of {@link GraphileSystem}. */
export interface GraphileOptions {
  url: string;
  database: string;
  /** Jobs run at once. @default 24 */
  concurrency?: number;
  /** Local queue size. @default 500 */
  localQueueSize?: number;
}

const silent = new Logger(() => () => undefined);

/** graphile-worker as a {@link QueueSystem}. */
export class GraphileSystem implements QueueSystem {
  readonly name = "graphile-worker";
  readonly database: string;
  readonly recorder = new StartRecorder(0);
  readonly settings: Record<string, unknown>;
  /** Queries the harness itself ran on this database (subtracted from its cost). */
  probeQueries = 0;
  private utils: WorkerUtils | undefined;
  private runner: Runner | undefined;
  private probe: pg.Pool | undefined;
  private enqueued = 0;

  constructor(private readonly options: GraphileOptions) {
    this.database = options.database;
    this.settings = {
      concurrentJobs: options.concurrency ?? 24,
      maxPoolSize: 25,
      localQueue: { size: options.localQueueSize ?? 500 },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
      enqueue: "addJob() one by one (WorkerUtils, pool of 10)",
    };
  }

  async start(): Promise<void> {
    this.utils = await makeWorkerUtils({ connectionString: this.options.url, logger: silent });
    await this.utils.migrate();
    this.probe = new pg.Pool({ connectionString: this.options.url, max: 1 });
    this.enqueued = 0;
  }

  async enqueue(i: number): Promise<void> {
    await this.requireUtils().addJob(TASK, { i });
    this.enqueued++;
  }

  async bulkEnqueue(first: number, count: number): Promise<void> {
    await this.requireUtils().addJobs(
      Array.from({ length: count }, (_, k) => ({ identifier: TASK, payload: { i: first + k } })),
    );
    this.enqueued += count;
  }

  async startConsumers(): Promise<void> {
    this.runner = await run({
      noHandleSignals: true,
      logger: silent,
      taskList: {
        [TASK]: (payload) => {
          this.recorder.start((payload as { i: number }).i);
          this.recorder.finish();
        },
      },
      preset: {
        worker: {
          connectionString: this.options.url,
          concurrentJobs: this.options.concurrency ?? 24,
          maxPoolSize: 25,
          localQueue: { size: this.options.localQueueSize ?? 500 },
          completeJobBatchDelay: 0,
          failJobBatchDelay: 0,
        },
      },
    });
  }

  async stopConsumers(): Promise<void> {
    const runner = this.runner;
    this.runner = undefined;
    await runner?.stop();
  }

  async drained(timeoutMs: number): Promise<void> {
    await this.recorder.untilFinished(this.enqueued, timeoutMs, "graphile-worker");
    const probe = this.probe;
    if (probe === undefined) return;
    // Completed jobs are deleted; batched completions land shortly after the handler returns.
    await pollUntil(
      "graphile-worker completions",
      async () => {
        this.probeQueries++;
        const r = await probe.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM graphile_worker._private_jobs",
        );
        return r.rows[0]?.n === 0;
      },
      timeoutMs,
      5,
    );
  }

  async stop(): Promise<void> {
    await this.stopConsumers();
    await this.utils?.release();
    this.utils = undefined;
    await this.probe?.end();
    this.probe = undefined;
  }

  private requireUtils(): WorkerUtils {
    if (this.utils === undefined) throw new Error("graphile-worker is not started");
    return this.utils;
  }
}
