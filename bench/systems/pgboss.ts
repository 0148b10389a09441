/**
 * pg-boss 12 under test, at the settings its documentation gives for volume and latency: one `work()`
 * call with `localConcurrency` polling workers (pg-boss 12's form of "several workers"; pg-boss 10 took
 * one `work()` call per worker), each fetching a batch and running it concurrently
 * (`Promise.allSettled`), fetching again at once while batches come back full (`burstWhenBatchFull`),
 * and woken by LISTEN/NOTIFY when a job is created (`useListenNotify` on the instance, `notify` on the
 * queue; new in pg-boss 12). Polling stays on as the fallback, at the smallest interval accepted.
 */
import { PgBoss } from "pg-boss";
import pg from "pg";
import { pollUntil, StartRecorder, type QueueSystem } from "./types.js";

const QUEUE = "bench-noop";

/** Options of {@link PgBossSystem}. */
export interface PgBossOptions {
  url: string;
  database: string;
  /** Polling workers of the one `work()` call (`localConcurrency`). @default 8 */
  workers?: number;
  /** Jobs fetched per poll. @default 200 */
  batchSize?: number;
  /** Seconds between polls that found no full batch while NOTIFY is not active. @default 0.5 (the minimum) */
  pollingIntervalSeconds?: number;
  /** Wake workers with LISTEN/NOTIFY when a job is created. @default true */
  listenNotify?: boolean;
}

/** pg-boss as a {@link QueueSystem}. */
export class PgBossSystem implements QueueSystem {
  readonly name = "pg-boss";
  readonly database: string;
  readonly recorder = new StartRecorder(0);
  readonly settings: Record<string, unknown>;
  /** Queries the harness itself ran on this database (subtracted from its cost). */
  probeQueries = 0;
  private boss: PgBoss | undefined;
  private probe: pg.Pool | undefined;
  private working = false;
  private enqueued = 0;

  constructor(private readonly options: PgBossOptions) {
    this.database = options.database;
    this.settings = {
      localConcurrency: options.workers ?? 8,
      batchSize: options.batchSize ?? 200,
      burstWhenBatchFull: true,
      pollingIntervalSeconds: options.pollingIntervalSeconds ?? 0.5,
      useListenNotify: options.listenNotify ?? true,
      queueNotify: options.listenNotify ?? true,
      notifyPollingIntervalSeconds: "default (30: the fallback poll while NOTIFY is active)",
      handler: "the batch with Promise.allSettled",
      poolMax: 10,
      enqueue: "send() one by one",
      other: "constructor defaults (supervise, schedule, retention, instance registry)",
    };
  }

  async start(): Promise<void> {
    const notify = this.options.listenNotify ?? true;
    const boss = new PgBoss({ connectionString: this.options.url, max: 10, useListenNotify: notify });
    boss.on("error", (e) => {
      process.stderr.write(`pg-boss error: ${e.message}\n`);
    });
    await boss.start();
    if ((await boss.getQueue(QUEUE)) === null) await boss.createQueue(QUEUE, { notify });
    this.boss = boss;
    this.probe = new pg.Pool({ connectionString: this.options.url, max: 1 });
    this.enqueued = 0;
  }

  async enqueue(i: number): Promise<void> {
    await this.requireBoss().send(QUEUE, { i });
    this.enqueued++;
  }

  async bulkEnqueue(first: number, count: number): Promise<void> {
    await this.requireBoss().insert(
      QUEUE,
      Array.from({ length: count }, (_, k) => ({ data: { i: first + k } })),
    );
    this.enqueued += count;
  }

  async startConsumers(): Promise<void> {
    const boss = this.requireBoss();
    await boss.work<{ i: number }>(
      QUEUE,
      {
        localConcurrency: this.options.workers ?? 8,
        batchSize: this.options.batchSize ?? 200,
        burstWhenBatchFull: true,
        pollingIntervalSeconds: this.options.pollingIntervalSeconds ?? 0.5,
      },
      async (jobs) =>
        Promise.allSettled(
          jobs.map(async (job) => {
            this.recorder.start(job.data.i);
            this.recorder.finish();
            return Promise.resolve(null);
          }),
        ),
    );
    this.working = true;
  }

  async stopConsumers(): Promise<void> {
    const boss = this.boss;
    if (boss === undefined || !this.working) return;
    // By queue name: every worker the one work() call spawned, waiting for jobs in hand.
    await boss.offWork(QUEUE, { wait: true });
    this.working = false;
  }

  async drained(timeoutMs: number): Promise<void> {
    await this.recorder.untilFinished(this.enqueued, timeoutMs, "pg-boss");
    // pg-boss 12 awaits complete() before the worker fetches again, but the handler's return comes
    // first: wait for the committed state in the table.
    const probe = this.probe;
    if (probe === undefined) return;
    await pollUntil(
      "pg-boss completions",
      async () => {
        this.probeQueries++;
        const r = await probe.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state < 'completed'",
          [QUEUE],
        );
        return r.rows[0]?.n === 0;
      },
      timeoutMs,
      5,
    );
  }

  async stop(): Promise<void> {
    await this.stopConsumers();
    await this.boss?.stop({ graceful: true, close: true, timeout: 5000 });
    this.boss = undefined;
    await this.probe?.end();
    this.probe = undefined;
  }

  private requireBoss(): PgBoss {
    if (this.boss === undefined) throw new Error("pg-boss is not started");
    return this.boss;
  }
}
