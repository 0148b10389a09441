/**
 * pg-boss 10 under test, with the settings its maintainer recommends for volume: several `work()`
 * polling workers, each fetching a batch and running it concurrently (`Promise.allSettled`), at the
 * smallest polling interval it accepts (0.5 s). pg-boss 10 has no LISTEN/NOTIFY wake-up: a worker
 * that found nothing sleeps until its next poll.
 */
import PgBoss from "pg-boss";
import pg from "pg";
import { pollUntil, StartRecorder, type QueueSystem } from "./types.js";

const QUEUE = "bench-noop";

/** Options of {@link PgBossSystem}. */
export interface PgBossOptions {
  url: string;
  database: string;
  /** `work()` calls (polling workers). @default 8 */
  workers?: number;
  /** Jobs fetched per poll. @default 200 */
  batchSize?: number;
  /** Seconds between polls that found no full batch. @default 0.5 (the minimum) */
  pollingIntervalSeconds?: number;
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
  private workerIds: string[] = [];
  private enqueued = 0;

  constructor(private readonly options: PgBossOptions) {
    this.database = options.database;
    this.settings = {
      workers: options.workers ?? 8,
      batchSize: options.batchSize ?? 200,
      pollingIntervalSeconds: options.pollingIntervalSeconds ?? 0.5,
      poolMax: 10,
      enqueue: "send() one by one",
      other: "constructor defaults (supervise, schedule, retention)",
    };
  }

  async start(): Promise<void> {
    const boss = new PgBoss({ connectionString: this.options.url, max: 10 });
    boss.on("error", (e) => {
      process.stderr.write(`pg-boss error: ${e instanceof Error ? e.message : String(e)}\n`);
    });
    await boss.start();
    await boss.createQueue(QUEUE).catch(() => undefined);
    this.boss = boss;
    this.probe = new pg.Pool({ connectionString: this.options.url, max: 1 });
    this.enqueued = 0;
  }

  async enqueue(i: number): Promise<void> {
    await this.requireBoss().send(QUEUE, { i });
    this.enqueued++;
  }

  async startConsumers(): Promise<void> {
    const boss = this.requireBoss();
    const n = this.options.workers ?? 8;
    for (let w = 0; w < n; w++) {
      this.workerIds.push(
        await boss.work<{ i: number }>(
          QUEUE,
          {
            batchSize: this.options.batchSize ?? 200,
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
        ),
      );
    }
  }

  async stopConsumers(): Promise<void> {
    const boss = this.boss;
    if (boss === undefined) return;
    for (const id of this.workerIds) await boss.offWork({ id });
    this.workerIds = [];
  }

  async drained(timeoutMs: number): Promise<void> {
    await this.recorder.untilFinished(this.enqueued, timeoutMs, "pg-boss");
    // Completion is written after the handler returns (not awaited by the worker): wait for it.
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
    await this.boss?.stop({ graceful: true, wait: true, timeout: 5000 });
    this.boss = undefined;
    await this.probe?.end();
    this.probe = undefined;
  }

  private requireBoss(): PgBoss {
    if (this.boss === undefined) throw new Error("pg-boss is not started");
    return this.boss;
  }
}
