/**
 * The outbox relay: publishes the `outbox_events` rows that the engine's transactions wrote, in
 * commit order, and marks them published only once the broker acknowledged them. A broker outage
 * delays events (the same batch is retried with capped backoff, never skipped); a crash between
 * publish and mark republishes rows with their original event ids. One relay publishes at a time,
 * across schedulers, by a PostgreSQL advisory lock; or, `coordinated` (a cluster of replicas,
 * docs/replicas.md), between {@link OutboxRelay.lead} and {@link OutboxRelay.resign}, called as
 * its replica becomes and stops being the coordinator (cluster/coordinator.ts), each mark fenced
 * by the coordinator's epoch. A session-level lock would stay with a paused (SIGSTOPped)
 * holder whose connection stays open, and stall every event; a lease expires. Delivery stays
 * at-least-once: a coordinator paused between publishing and marking publishes its batch when it
 * wakes (its mark is refused), after its successor may have published the same rows and later
 * ones; consumers keep a run's highest sequence (events carry their run and sequence). Published
 * rows are pruned after a retention.
 */
import type pg from "pg";
import type { Logger } from "@nexusflow/common";
import { OutboxStore, OutboxStoreError } from "./outbox-store.js";
import type { CoordinatorFence } from "../cluster/coordinator.js";
import type { EventPublisher, OutboxRecord } from "./publisher.js";

/** Options of {@link OutboxRelay}. */
export interface OutboxRelayOptions {
  /** The scheduler's pool; the relay keeps one of its connections (it holds the relay lock). */
  pool: pg.Pool;
  /** Where events go (a {@link KafkaPublisher} in production). */
  publisher: EventPublisher;
  /** Logger. */
  log: Logger;
  /** Outbox rows (each the events of one group commit) read and published per batch. @default 50 */
  batchSize?: number;
  /** Wait between polls while the outbox is empty; {@link OutboxRelay.wake} cuts it short. @default 200 */
  pollIntervalMs?: number;
  /** How long published rows are kept before pruning. @default 3600000 (1 h) */
  retentionMs?: number;
  /** How often published rows are pruned. @default 60000 */
  pruneIntervalMs?: number;
  /** Rows deleted per prune statement. @default 5000 */
  pruneBatchSize?: number;
  /** Prune statements per round at most, so pruning a large backlog never stalls publishing. @default 20 */
  pruneMaxBatches?: number;
  /** First retry delay after a failure. @default 100 */
  retryInitialMs?: number;
  /** Longest retry delay. @default 5000 */
  retryMaxMs?: number;
  /** How often a standby relay tries to take the lock. @default 2000 */
  lockRetryMs?: number;
  /** Key of the PostgreSQL advisory lock that makes one relay the publisher. @default 0x4e464f5554424f58n ("NFOUTBOX") */
  lockKey?: bigint;
  /** Longest wait in stop() for an in-flight database call before its connection is closed. @default 5000 */
  stopTimeoutMs?: number;
  /**
   * Publish only between lead() and resign() (the coordinator's turns: cluster/coordinator.ts),
   * marking rows published under the coordinator's fence, instead of holding the advisory lock.
   * @default false (the lock)
   */
  coordinated?: boolean | undefined;
  /** Told of a database failure of the relay (e.g. to recognise the fence's refusal, NF001). @default none */
  refused?: ((e: unknown) => void) | undefined;
}

/** {@link OutboxRelayOptions} with every default applied. */
export type ResolvedRelayOptions = Required<OutboxRelayOptions>;

/** Applies the documented defaults; the one place they live. */
export function relayOptionsWithDefaults(o: OutboxRelayOptions): ResolvedRelayOptions {
  return {
    pool: o.pool,
    publisher: o.publisher,
    log: o.log,
    batchSize: o.batchSize ?? 50,
    pollIntervalMs: o.pollIntervalMs ?? 200,
    retentionMs: o.retentionMs ?? 3_600_000,
    pruneIntervalMs: o.pruneIntervalMs ?? 60_000,
    pruneBatchSize: o.pruneBatchSize ?? 5000,
    pruneMaxBatches: o.pruneMaxBatches ?? 20,
    retryInitialMs: o.retryInitialMs ?? 100,
    retryMaxMs: o.retryMaxMs ?? 5000,
    lockRetryMs: o.lockRetryMs ?? 2000,
    lockKey: o.lockKey ?? 0x4e464f5554424f58n,
    stopTimeoutMs: o.stopTimeoutMs ?? 5000,
    coordinated: o.coordinated ?? false,
    refused: o.refused,
  };
}

/** Relay lifecycle. */
export type RelayState = "IDLE" | "RUNNING" | "STOPPING" | "STOPPED";

/** The abort reason of the relay's work when it stops. */
export class RelayStoppedError extends Error {
  override name = "RelayStoppedError";
}

/** Counters, for tests and metrics. */
export interface RelayStats {
  /** Events acknowledged by the broker and marked published. */
  published: number;
  /** Batches published. */
  batches: number;
  /** Failed attempts (broker or database). */
  failures: number;
  /** Failed attempts that the publisher (the broker) caused, not the database. */
  publishFailures: number;
  /** Published rows deleted by pruning. */
  pruned: number;
  /** Prune rounds completed. */
  pruneRounds: number;
  /** Polls that found the outbox empty (each followed by an idle wait). */
  emptyPolls: number;
}

/** Publishes the transactional outbox. */
export class OutboxRelay {
  private readonly options: ResolvedRelayOptions;
  private readonly log: Logger;
  private readonly store: OutboxStore;
  private readonly abort = new AbortController();
  private stateValue: RelayState = "IDLE";
  private loop: Promise<void> = Promise.resolve();
  private stopping: Promise<void> | undefined;
  private woken = false;
  private sleeper: (() => void) | undefined;
  private pruneDueAt = 0;
  /** Coordinated: the fence of the coordinator's current turn (marks carry it). */
  private term: CoordinatorFence | undefined;
  /** Coordinated: a new batch may start (between lead() and resign()). */
  private leading = false;
  /** The batch in progress (fetch, publish, mark), settled. */
  private busy: Promise<void> = Promise.resolve();
  /** Counters since start. */
  readonly stats: RelayStats = {
    published: 0,
    batches: 0,
    failures: 0,
    publishFailures: 0,
    pruned: 0,
    pruneRounds: 0,
    emptyPolls: 0,
  };

  constructor(options: OutboxRelayOptions) {
    this.options = relayOptionsWithDefaults(options);
    this.log = this.options.log.child({ component: "outbox-relay" });
    this.store = new OutboxStore(this.options.pool, this.options.lockKey, this.options.coordinated === true);
  }

  /** Current state. */
  get state(): RelayState {
    return this.stateValue;
  }

  /** Whether this relay holds the lock, i.e. is the one publishing. */
  get active(): boolean {
    return this.store.locked;
  }

  /** Starts publishing in the background; returns at once (the broker may be down). */
  start(): void {
    if (this.stateValue !== "IDLE")
      throw new Error(`cannot start an outbox relay that is ${this.stateValue}`);
    this.stateValue = "RUNNING";
    this.loop = this.run().catch((e: unknown) => {
      this.log.error({ err: e }, "outbox relay loop failed");
    });
  }

  /** Asks for a poll now: call after a commit that wrote events. Cheap; safe in any state. */
  wake(): void {
    if (this.stateValue !== "RUNNING") return;
    const sleeper = this.sleeper;
    if (sleeper !== undefined) sleeper();
    else this.woken = true;
  }

  /**
   * Coordinated: this replica is the coordinator with `fence` (cluster/coordinator.ts): publish
   * from now on, marking under that fence.
   */
  lead(fence: CoordinatorFence): void {
    this.term = fence;
    this.leading = true;
    this.wake();
  }

  /**
   * Coordinated: this replica stops being the coordinator: no new batch starts, and this resolves
   * once the batch in progress is published and marked (or failed), so that the next coordinator
   * does not publish it again after a clean hand-over.
   */
  async resign(): Promise<void> {
    this.leading = false;
    this.wake();
    await this.busy;
    if (!this.leading) this.term = undefined;
  }

  /**
   * Stops publishing, gives the lock back and closes the publisher. Unmarked events stay in the
   * outbox for the next relay. Call before the pool is closed. Safe to call more than once.
   */
  stop(): Promise<void> {
    if (this.stateValue === "IDLE") this.stateValue = "STOPPED";
    if (this.stateValue === "STOPPED") return this.stopping ?? this.options.publisher.close();
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.stateValue = "STOPPING";
    this.abort.abort(new RelayStoppedError("the outbox relay is stopping"));
    const finished = await this.settles(this.loop);
    // Stuck in a database call: closing its connection fails the call and frees the lock.
    if (!finished) this.log.warn("outbox relay did not stop in time; closing its database connection");
    await this.store.close(!finished);
    if (!finished) await this.settles(this.loop);
    await this.options.publisher.close().catch((e: unknown) => {
      this.log.warn({ err: e }, "closing the event publisher failed");
    });
    this.stateValue = "STOPPED";
  }

  /** True when `p` settles within stopTimeoutMs. */
  private async settles(p: Promise<void>): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        p.then(() => true),
        new Promise<boolean>(
          (resolve) => (timer = setTimeout(() => resolve(false), this.options.stopTimeoutMs)),
        ),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  private get signal(): AbortSignal {
    return this.abort.signal;
  }

  private async run(): Promise<void> {
    const o = this.options;
    let delay = o.retryInitialMs;
    let failures = 0;
    let failingSince = 0;
    let lastWarnAt = 0;
    let standby = false;
    const succeeded = (): void => {
      if (failures > 0)
        this.log.info({ failures, after_ms: Date.now() - failingSince }, "outbox relay publishing again");
      failures = 0;
      delay = o.retryInitialMs;
    };
    try {
      while (!this.signal.aborted) {
        try {
          // No longer the coordinator: another replica's relay publishes.
          if (this.store.locked && o.coordinated === true && !this.leading) await this.store.unlock();
          if (!this.store.locked) {
            if ((o.coordinated === true && !this.leading) || !(await this.store.tryLock())) {
              if (!standby)
                this.log.info(
                  o.coordinated
                    ? "this replica is not the coordinator: its outbox relay stands by"
                    : "another relay holds the outbox lock; standing by",
                );
              standby = true;
              // lead() wakes a coordinated relay when its replica becomes the coordinator.
              await this.sleep(o.lockRetryMs, o.coordinated === true);
              continue;
            }
            if (this.signal.aborted) break;
            standby = false;
            this.pruneDueAt = 0;
            this.log.info({ backlog: await this.store.backlog() }, "outbox relay publishing");
          }
          // The whole turn is the batch in progress that resign() waits for, from before its prune
          // and connect (either may wait): a resign meanwhile stops it before it fetches anything.
          const turn = (async (): Promise<boolean | undefined> => {
            if (Date.now() >= this.pruneDueAt) await this.prune();
            await o.publisher.connect(this.signal);
            if (o.coordinated === true && !this.leading) return undefined;
            return this.step();
          })();
          this.busy = turn.then(
            () => undefined,
            () => undefined,
          );
          const stepped = await turn;
          if (stepped === undefined) continue;
          if (!stepped) {
            succeeded();
            this.stats.emptyPolls++;
            await this.sleep(o.pollIntervalMs, true);
            continue;
          }
          succeeded();
        } catch (e) {
          if (this.signal.aborted) break;
          this.stats.failures++;
          if (!(e instanceof OutboxStoreError)) this.stats.publishFailures++;
          else o.refused?.(e.cause);
          const now = Date.now();
          if (failures === 0) failingSince = now;
          failures++;
          const what =
            e instanceof OutboxStoreError
              ? "outbox relay lost its database connection; retrying"
              : "cannot publish events; they are delayed, not lost; retrying";
          // A warning when an outage starts and once a minute while it lasts; retries are detail.
          const fields = { err: e, failures, failingForMs: now - failingSince, retryInMs: delay };
          if (failures === 1 || now - lastWarnAt >= 60_000) {
            lastWarnAt = now;
            this.log.warn(fields, what);
          } else this.log.debug(fields, what);
          await this.sleep(delay, false);
          delay = Math.min(delay * 2, o.retryMaxMs);
        }
      }
    } finally {
      this.sleeper = undefined;
      await this.store.unlock();
    }
  }

  /** Fetches and publishes one batch; false when the outbox had nothing to publish. */
  private async step(): Promise<boolean> {
    const batch = await this.store.fetch(this.options.batchSize);
    if (batch.length === 0) return false;
    await this.publish(batch);
    return true;
  }

  /** Publishes one batch, then marks it; a failure leaves it unmarked for the retry. */
  private async publish(batch: readonly OutboxRecord[]): Promise<void> {
    await this.options.publisher.publish(batch, this.signal);
    await this.store.markPublished(
      batch.map((r) => r.id),
      this.term,
    );
    this.stats.batches++;
    this.stats.published += batch.length;
  }

  private async prune(): Promise<void> {
    const o = this.options;
    let deleted = 0;
    for (let i = 0; i < o.pruneMaxBatches && !this.signal.aborted; i++) {
      const n = await this.store.prune(o.retentionMs, o.pruneBatchSize);
      deleted += n;
      if (n < o.pruneBatchSize) break;
    }
    this.pruneDueAt = Date.now() + o.pruneIntervalMs;
    this.stats.pruned += deleted;
    this.stats.pruneRounds++;
    if (deleted > 0) this.log.debug({ deleted }, "pruned published outbox events");
  }

  /** Waits `ms`, or less when stopped or (if `wakeable`) woken. */
  private sleep(ms: number, wakeable: boolean): Promise<void> {
    if (this.signal.aborted) return Promise.resolve();
    if (wakeable && this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.signal.removeEventListener("abort", done);
        if (this.sleeper === done) this.sleeper = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.signal.addEventListener("abort", done, { once: true });
      if (wakeable) this.sleeper = done;
    });
  }
}
