/**
 * The Kafka event source: records of the topics a user names become published events, each
 * matched and stored once (triggers/publish.ts), as if sent with PublishEvent. What a record
 * becomes is kafka-record.ts: a record that is no event (no key, not JSON, too large) is logged,
 * counted and skipped, never retried and never holding its partition up.
 *
 * Delivery: at least once from Kafka, exactly one match per record. A record's offset is resolved
 * only once its event is stored (the store's statement committed); kafkajs commits resolved
 * offsets every `commitIntervalMs` or `commitThreshold` records, after each batch, and when the
 * source stops, so a crash redelivers at most the records stored since the last commit, and
 * their idempotency keys (topic, partition, offset, timestamp) find the events already stored.
 * While the database is away, the record in hand is retried with a doubling pause (its
 * partition waits, heartbeats go on); records of one partition are stored in their order.
 *
 * Backpressure: kafkajs fetches again only when the batches of its last fetch are processed, at
 * most `maxBytes` per fetch, so the records held in memory are bounded by it (per broker).
 *
 * States: IDLE -> CONNECTING -> RUNNING (in the group, consuming) -> RETRYING (the consumer
 * crashed, or could not connect or subscribe: a new one after a pause, doubling up to
 * `retryMaxMs`, logged once per outage) -> CONNECTING ...; stop() from any of them: STOPPING (the
 * batch in progress ends after its record, its offsets are committed, the group is left) ->
 * STOPPED.
 */
import type * as KafkaJs from "kafkajs";
import type { Consumer, EachBatchPayload } from "kafkajs";
import { endedWithin } from "../background/grace.js";
import { kafkaClient } from "../events/kafka-client.js";
import type { Logger } from "@nexusflow/common";
import type { EventRow } from "./event-store.js";
import { decodeRecord, type RejectReason, type SourceRecord } from "./kafka-record.js";
import type { EventDraft } from "./publish.js";

/** Where the source's events go (triggers/publish.ts in the scheduler). */
export interface SourceEventSink {
  /** Stores the event, or finds the one its idempotency key stored; durable once resolved. */
  store(draft: EventDraft): Promise<{ event: EventRow; created: boolean }>;
  /** Starts the stored event's matches (a failure leaves them to the match loop). */
  start(event: EventRow): Promise<unknown>;
}

/** Options of {@link KafkaEventSource}. */
export interface KafkaEventSourceOptions {
  /** Bootstrap brokers, host:port. */
  brokers: readonly string[];
  /** Topics consumed. */
  topics: readonly string[];
  /** Consumer group. @default "nexusflow-event-source" */
  groupId?: string | undefined;
  /** Header whose value is the event key; undefined takes the record key. @default undefined */
  keyHeader?: string | undefined;
  /** Where a group with no committed offset starts in a partition. @default "latest" */
  startFrom?: "latest" | "earliest" | undefined;
  /** Kafka client id. @default "nexusflow-scheduler" */
  clientId?: string | undefined;
  /** Partitions processed at once. @default 4 */
  concurrency?: number | undefined;
  /** Most bytes one fetch brings (the bound on records held in memory, per broker). @default 4194304 */
  maxBytes?: number | undefined;
  /** Most bytes one fetch brings of one partition. @default 1048576 */
  maxBytesPerPartition?: number | undefined;
  /** Longest wait of a fetch for new records (stop() may wait that long for one). @default 1000 */
  maxWaitMs?: number | undefined;
  /** Stored records' offsets are committed at least this often... @default 1000 */
  commitIntervalMs?: number | undefined;
  /** ...and after this many stored records. @default 100 */
  commitThreshold?: number | undefined;
  /** Silence after which the group gives a member's partitions to the others. @default 10000 */
  sessionTimeoutMs?: number | undefined;
  /** TCP connect timeout. @default 3000 */
  connectionTimeoutMs?: number | undefined;
  /** Timeout of one request. @default 10000 */
  requestTimeoutMs?: number | undefined;
  /** First pause before a new consumer or a store retried (doubling). @default 200 */
  retryInitialMs?: number | undefined;
  /** Longest such pause. @default 5000 */
  retryMaxMs?: number | undefined;
  sink: SourceEventSink;
  /** Logger; kafkajs' own lines go to it at debug level. */
  log: Logger;
}

type Resolved = {
  [K in Exclude<keyof KafkaEventSourceOptions, "keyHeader" | "brokers" | "topics">]-?: Exclude<
    KafkaEventSourceOptions[K],
    undefined
  >;
} & { keyHeader: string | undefined; brokers: string[]; topics: string[] };

function withDefaults(o: KafkaEventSourceOptions): Resolved {
  return {
    brokers: [...o.brokers],
    topics: [...o.topics],
    groupId: o.groupId ?? "nexusflow-event-source",
    keyHeader: o.keyHeader,
    startFrom: o.startFrom ?? "latest",
    clientId: o.clientId ?? "nexusflow-scheduler",
    concurrency: o.concurrency ?? 4,
    maxBytes: o.maxBytes ?? 4 * 1024 * 1024,
    maxBytesPerPartition: o.maxBytesPerPartition ?? 1024 * 1024,
    maxWaitMs: o.maxWaitMs ?? 1000,
    commitIntervalMs: o.commitIntervalMs ?? 1000,
    commitThreshold: o.commitThreshold ?? 100,
    sessionTimeoutMs: o.sessionTimeoutMs ?? 10_000,
    connectionTimeoutMs: o.connectionTimeoutMs ?? 3000,
    requestTimeoutMs: o.requestTimeoutMs ?? 10_000,
    retryInitialMs: o.retryInitialMs ?? 200,
    retryMaxMs: o.retryMaxMs ?? 5000,
    sink: o.sink,
    log: o.log,
  };
}

/** The consumer's side of a started source. */
export type SourceConnection =
  | { kind: "CONNECTING"; attempt: number }
  | { kind: "RUNNING"; since: Date; partitions: number }
  | { kind: "RETRYING"; failures: number; error: unknown; retryMs: number };

/** The source's state; a started one carries what stop() needs and its connection. */
export type KafkaEventSourceState =
  | { kind: "IDLE" }
  | { kind: "STARTED"; controller: AbortController; done: Promise<void>; connection: SourceConnection }
  | { kind: "STOPPING"; done: Promise<void> }
  | { kind: "STOPPED" };

/** What a record became, counted per topic. */
export type RecordOutcome = "stored" | "duplicate" | RejectReason;

/** Counters and gauges of the source (read by metrics at scrape time). */
export class KafkaEventSourceStats {
  /** Records by topic and outcome: `${topic}\u0000${outcome}` -> count. */
  readonly records = new Map<string, number>();
  /** Records behind the partition's end after the last one processed: `${topic}\u0000${partition}`. */
  readonly lag = new Map<string, number>();
  /** Failed attempts to store an event (each retried until it works). */
  storeFailures = 0;

  count(topic: string, outcome: RecordOutcome): void {
    const key = `${topic}\u0000${outcome}`;
    this.records.set(key, (this.records.get(key) ?? 0) + 1);
  }

  /** Records of `topic` with `outcome` so far. */
  get(topic: string, outcome: RecordOutcome): number {
    return this.records.get(`${topic}\u0000${outcome}`) ?? 0;
  }
}

/** Settles like `promise`, or resolves undefined once `signal` aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = (): void => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** Sleeps `ms`, or less when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** A PostgreSQL data exception (SQLSTATE class 22): the database refuses this value for good. */
function isDataException(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("22");
}

/** See the module comment. */
export class KafkaEventSource {
  private readonly options: Resolved;
  private stateValue: KafkaEventSourceState = { kind: "IDLE" };
  /** Counters of the source. */
  readonly stats = new KafkaEventSourceStats();

  constructor(options: KafkaEventSourceOptions) {
    this.options = withDefaults(options);
  }

  /** The state's kind, with the connection's while started. */
  get state(): "IDLE" | SourceConnection["kind"] | "STOPPING" | "STOPPED" {
    return this.stateValue.kind === "STARTED" ? this.stateValue.connection.kind : this.stateValue.kind;
  }

  /** The topics consumed. */
  get topics(): readonly string[] {
    return this.options.topics;
  }

  /** The consumer group. */
  get groupId(): string {
    return this.options.groupId;
  }

  /** Starts consuming in the background; a broker that cannot be reached is retried, not thrown. */
  start(): void {
    if (this.stateValue.kind !== "IDLE")
      throw new Error(`cannot start a Kafka event source that is ${this.stateValue.kind}`);
    const controller = new AbortController();
    // run() reads the state only after its first await.
    const done = this.run(controller.signal).catch((e: unknown) => {
      this.options.log.error({ err: e }, "the Kafka event source stopped on an unexpected error");
    });
    this.stateValue = { kind: "STARTED", controller, done, connection: { kind: "CONNECTING", attempt: 1 } };
  }

  /**
   * Stops: the batch in progress ends after its current record, the offsets of stored records
   * are committed and the group is left; waits at most `graceMs` (a broker that does not answer
   * must not hold the scheduler's stop).
   */
  async stop(graceMs = 10_000): Promise<void> {
    const state = this.stateValue;
    if (state.kind === "IDLE") {
      this.stateValue = { kind: "STOPPED" };
      return;
    }
    if (state.kind === "STOPPED") return;
    if (state.kind === "STOPPING") return state.done;
    state.controller.abort();
    const done = (async () => {
      if (!(await endedWithin(state.done, graceMs)))
        this.options.log.warn({ grace_ms: graceMs }, "the Kafka event source did not stop in time");
      this.stateValue = { kind: "STOPPED" };
    })();
    this.stateValue = { kind: "STOPPING", done };
    return done;
  }

  private setConnection(connection: SourceConnection): void {
    if (this.stateValue.kind === "STARTED") this.stateValue.connection = connection;
  }

  /** Consumer after consumer until stopped (see the module comment). */
  private async run(signal: AbortSignal): Promise<void> {
    const { log, retryInitialMs, retryMaxMs, topics, groupId } = this.options;
    // Loaded when a source is configured only (kafkajs is ~1.5 MiB of heap).
    const kafkajs = await import("kafkajs");
    const kafka = this.createClient(kafkajs);
    let failures = 0;
    while (!signal.aborted) {
      this.setConnection({ kind: "CONNECTING", attempt: failures + 1 });
      const consumer = this.createConsumer(kafka);
      const crashed = new Promise<unknown>((resolve) =>
        consumer.on(consumer.events.CRASH, (e) => resolve(e.payload.error)),
      );
      consumer.on(consumer.events.GROUP_JOIN, (e) => {
        const assigned = Object.entries(e.payload.memberAssignment).flatMap(([topic, ps]) =>
          ps.map((p) => `${topic}\u0000${p}`),
        );
        const partitions = assigned.length;
        // The lag of partitions now consumed elsewhere is no longer known here.
        for (const key of this.stats.lag.keys()) if (!assigned.includes(key)) this.stats.lag.delete(key);
        this.setConnection({ kind: "RUNNING", since: new Date(), partitions });
        if (failures > 0) log.info({ failures }, "the Kafka event source consumes again");
        else log.info({ topics, group_id: groupId, partitions }, "Kafka event source joined its group");
        failures = 0;
      });
      let error: unknown;
      try {
        await untilAborted(consumer.connect(), signal);
        if (!signal.aborted)
          await untilAborted(
            consumer.subscribe({ topics: [...topics], fromBeginning: this.options.startFrom === "earliest" }),
            signal,
          );
        if (!signal.aborted)
          await untilAborted(
            consumer.run({
              autoCommit: true,
              autoCommitInterval: this.options.commitIntervalMs,
              autoCommitThreshold: this.options.commitThreshold,
              eachBatchAutoResolve: false,
              partitionsConsumedConcurrently: this.options.concurrency,
              eachBatch: (payload) => this.batch(payload, signal),
            }),
            signal,
          );
        error = await untilAborted(crashed, signal);
      } catch (e) {
        error = e;
      }
      // Waits for the batch in progress (it sees the abort), commits what was stored, leaves the group.
      await consumer
        .disconnect()
        .catch((e: unknown) => log.debug({ err: e }, "Kafka consumer disconnect failed"));
      if (signal.aborted) break;
      failures++;
      const retryMs = Math.min(retryInitialMs * 2 ** (failures - 1), retryMaxMs);
      this.setConnection({ kind: "RETRYING", failures, error, retryMs });
      if (failures === 1)
        log.error(
          { err: error, topics, group_id: groupId, retry_ms: retryMs },
          "the Kafka event source cannot consume; retrying",
        );
      else
        log.debug({ err: error, retry_ms: retryMs, failures }, "the Kafka event source cannot consume yet");
      await sleep(retryMs, signal);
    }
  }

  private createClient(kafkajs: typeof KafkaJs): KafkaJs.Kafka {
    // The source logs an outage once itself: kafkajs' lines are debug detail.
    return kafkaClient(kafkajs, {
      ...this.options,
      log: this.options.log.child({ component: "kafka-event-source" }),
    });
  }

  private createConsumer(kafka: KafkaJs.Kafka): Consumer {
    const o = this.options;
    return kafka.consumer({
      groupId: o.groupId,
      sessionTimeout: o.sessionTimeoutMs,
      heartbeatInterval: Math.max(100, Math.floor(o.sessionTimeoutMs / 3)),
      maxBytes: o.maxBytes,
      maxBytesPerPartition: o.maxBytesPerPartition,
      maxWaitTimeInMs: o.maxWaitMs,
      allowAutoTopicCreation: false,
      // The source makes a new consumer itself (RETRYING), so kafkajs never restarts one.
      retry: { retries: 5, restartOnFailure: () => Promise.resolve(false) },
    });
  }

  /** One fetched batch of one partition, record by record in order. */
  private async batch(payload: EachBatchPayload, signal: AbortSignal): Promise<void> {
    const { batch } = payload;
    const active = (): boolean => !signal.aborted && payload.isRunning() && !payload.isStale();
    const heartbeat = (): Promise<void> => payload.heartbeat();
    const lagKey = `${batch.topic}\u0000${batch.partition}`;
    const high = BigInt(batch.highWatermark);
    for (const message of batch.messages) {
      if (!active()) return;
      this.stats.lag.set(lagKey, Number(high - BigInt(message.offset)));
      const record: SourceRecord = {
        topic: batch.topic,
        partition: batch.partition,
        offset: message.offset,
        timestamp: message.timestamp,
        key: message.key ?? null,
        value: message.value,
        headers: message.headers,
      };
      // False: stopping while the database is away; the record is fetched again later.
      if (!(await this.take(record, active, heartbeat, signal))) return;
      payload.resolveOffset(message.offset);
      this.stats.lag.set(lagKey, Number(high - BigInt(message.offset) - 1n));
      await payload.commitOffsetsIfNecessary();
      await heartbeat();
    }
  }

  /** Publishes one record (or rejects it); false when it gave up because the source is stopping. */
  private async take(
    record: SourceRecord,
    active: () => boolean,
    heartbeat: () => Promise<void>,
    signal: AbortSignal,
  ): Promise<boolean> {
    const decoded = decodeRecord(record, this.options.keyHeader);
    if (!decoded.ok) {
      this.reject(record, decoded.reason, decoded.detail);
      return true;
    }
    const { log, sink, retryInitialMs, retryMaxMs } = this.options;
    let failures = 0;
    for (;;) {
      let stored: { event: EventRow; created: boolean };
      try {
        stored = await sink.store(decoded.event);
      } catch (e) {
        if (isDataException(e)) {
          this.reject(record, "not_storable", e instanceof Error ? e.message : String(e));
          return true;
        }
        this.stats.storeFailures++;
        failures++;
        const retryMs = Math.min(retryInitialMs * 2 ** (failures - 1), retryMaxMs);
        if (failures === 1)
          log.error(
            {
              err: e,
              topic: record.topic,
              partition: record.partition,
              offset: record.offset,
              retry_ms: retryMs,
            },
            "the Kafka event source could not store an event; retrying",
          );
        await sleep(retryMs, signal);
        if (!active()) return false;
        await heartbeat();
        continue;
      }
      if (failures > 0)
        log.info({ failures, topic: record.topic }, "the Kafka event source stores events again");
      this.stats.count(record.topic, stored.created ? "stored" : "duplicate");
      try {
        await sink.start(stored.event);
      } catch (e) {
        // Stored with its matches: the match loop starts what is left.
        log.debug({ err: e, event_id: stored.event.eventId }, "an event's runs are left to the match loop");
      }
      return true;
    }
  }

  private reject(record: SourceRecord, reason: RejectReason, detail: string): void {
    this.stats.count(record.topic, reason);
    this.options.log.warn(
      { topic: record.topic, partition: record.partition, offset: record.offset, reason, detail },
      "Kafka record rejected: it is not an event; skipped",
    );
  }
}
