/**
 * The Kafka side of the outbox relay: creates the topic when missing and publishes with an
 * idempotent kafkajs producer (acks from all in-sync replicas, one request in flight, so a run's
 * events land on its partition in order). A send that fails or is abandoned discards the producer:
 * its sequence numbers are then unknown, and a fresh producer id is the only clean restart. The
 * relay resends the same rows, so the broker may hold duplicates, always with the same event id.
 * An event larger than the topic takes in one message is published truncated (./fit.ts), so that it
 * never holds the events after it.
 */
import { type Span, SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { contextFromTraceparent, tracer, tracingEnabled } from "@nexusflow/common/telemetry";
import type * as KafkaJs from "kafkajs";
import type { Admin, ConfigResourceTypes, Kafka, Producer } from "kafkajs";
import { kafkaClient } from "./kafka-client.js";
import type { Logger } from "@nexusflow/common";
import { fitEvent } from "./fit.js";
import {
  EventHeaders,
  eventMessage,
  protoEventType,
  type EventMessage,
  type EventPublisher,
  type OutboxRecord,
} from "./publisher.js";

/** Options of {@link KafkaPublisher}. */
export interface KafkaPublisherOptions {
  /** Bootstrap brokers, host:port. */
  brokers: readonly string[];
  /** Topic of lifecycle events. @default "nexusflow.events" */
  topic?: string;
  /** Partitions of the topic when the publisher creates it. @default 6 */
  partitions?: number;
  /** Replication factor of the topic when the publisher creates it. @default 1 */
  replicationFactor?: number;
  /** Kafka client id. @default "nexusflow-scheduler" */
  clientId?: string;
  /** TCP connect timeout. @default 3000 */
  connectionTimeoutMs?: number;
  /** Timeout of one request (and of the acks of a produce). @default 10000 */
  requestTimeoutMs?: number;
  /** Retries of one send inside kafkajs before it is reported as failed (at least 1). @default 5 */
  sendRetries?: number;
  /**
   * Most bytes of events one produce request carries (values, keys and headers): a batch of larger
   * ones goes out in several, one after the other. kafkajs puts a partition's messages of one send
   * in one record batch, and a broker refuses a batch over its `message.max.bytes` (1 MiB by
   * default) for good. An event larger than this still goes alone (and a broker must take it).
   * @default 524288 (512 KiB)
   */
  maxSendBytes?: number;
  /**
   * Most bytes of one event's message (value, key and headers): a larger event is published
   * truncated (`LifecycleEvent.truncated`, header `nf-truncated`). By default the topic's
   * `max.message.bytes`, read when connecting and again after a failed send, less 1 KiB for the
   * record batch around it (1 MiB less 1 KiB when it cannot be read).
   */
  maxEventBytes?: number;
  /** Logger; kafkajs' own lines go to it at debug level. */
  log: Logger;
}

type ResolvedOptions = Required<Omit<KafkaPublisherOptions, "log" | "brokers" | "maxEventBytes">> & {
  brokers: string[];
  maxEventBytes: number | undefined;
  log: Logger;
};

/** A broker's `message.max.bytes` by default (1 MiB and the batch overhead Kafka allows for). */
const DEFAULT_MAX_MESSAGE_BYTES = 1_048_588;
/**
 * kafkajs' ConfigResourceTypes.TOPIC: the enum is not among the named exports Node finds in its
 * CommonJS module, and the value is Kafka's protocol constant.
 */
const TOPIC_RESOURCE = 2 as ConfigResourceTypes.TOPIC;
/** Room for a message's key and headers that makes counting them pointless. */
const FAR_BELOW_BYTES = 64 * 1024;
/** What a record batch takes around one record, at most (its header is 61 bytes). */
const BATCH_OVERHEAD_BYTES = 1024;

/** `value` if it is a whole number of at least `min`; a RangeError naming the option otherwise. */
function atLeast(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min)
    throw new RangeError(`KafkaPublisher: ${name} must be a whole number of at least ${min}, got ${value}`);
  return value;
}

function withDefaults(o: KafkaPublisherOptions): ResolvedOptions {
  // kafkajs' idempotent producer refuses fewer than one retry, and only when it first connects.
  atLeast("sendRetries", o.sendRetries ?? 5, 1);
  for (const [name, value, min] of [
    ["partitions", o.partitions, 1],
    ["replicationFactor", o.replicationFactor, 1],
    ["connectionTimeoutMs", o.connectionTimeoutMs, 1],
    ["requestTimeoutMs", o.requestTimeoutMs, 1],
    ["maxSendBytes", o.maxSendBytes, 1024],
    ["maxEventBytes", o.maxEventBytes, 1024],
  ] as const)
    if (value !== undefined) atLeast(name, value, min);
  return {
    brokers: [...o.brokers],
    topic: o.topic ?? "nexusflow.events",
    partitions: o.partitions ?? 6,
    replicationFactor: o.replicationFactor ?? 1,
    clientId: o.clientId ?? "nexusflow-scheduler",
    connectionTimeoutMs: o.connectionTimeoutMs ?? 3000,
    requestTimeoutMs: o.requestTimeoutMs ?? 10_000,
    sendRetries: o.sendRetries ?? 5,
    maxSendBytes: o.maxSendBytes ?? 512 * 1024,
    maxEventBytes: o.maxEventBytes,
    log: o.log,
  };
}

/** Raised by {@link KafkaPublisher.publish}; `cause` is the kafkajs error. */
export class PublishError extends Error {
  override name = "PublishError";
}

/** Settles like `promise`, or rejects with the signal's reason once it aborts. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  // The abandoned promise may still reject later; that must not become an unhandled rejection.
  promise.catch(() => undefined);
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
    void promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** The bytes of a message a record batch carries, roughly: its value, key and headers. */
function messageBytes(m: EventMessage): number {
  let n = m.value.byteLength + Buffer.byteLength(m.key) + 32;
  for (const [name, value] of Object.entries(m.headers))
    n += Buffer.byteLength(name) + Buffer.byteLength(value);
  return n;
}

/**
 * `messages` in order, cut into sends of at most `maxBytes` each (a message larger than that is a
 * send of its own).
 */
export function sendsOf(messages: readonly EventMessage[], maxBytes: number): EventMessage[][] {
  const sends: EventMessage[][] = [];
  let current: EventMessage[] = [];
  let bytes = 0;
  for (const m of messages) {
    const size = messageBytes(m);
    if (current.length > 0 && bytes + size > maxBytes) {
      sends.push(current);
      current = [];
      bytes = 0;
    }
    current.push(m);
    bytes += size;
  }
  if (current.length > 0) sends.push(current);
  return sends;
}

/** Publishes outbox records to one Kafka topic. */
export class KafkaPublisher implements EventPublisher {
  private readonly options: ResolvedOptions;
  /** The client, created (and kafkajs imported, ~1.5 MiB of heap) when first connecting. */
  private kafka: Promise<{ kafka: Kafka; kafkajs: typeof KafkaJs }> | undefined;
  private producer: Producer | undefined;
  private preparing: Promise<Producer> | undefined;
  private admin: Admin | undefined;
  private topicReady = false;
  /** The topic's `max.message.bytes`, as last read. */
  private topicMaxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;
  private closed = false;
  private readonly disconnecting = new Set<Promise<void>>();

  constructor(options: KafkaPublisherOptions) {
    this.options = withDefaults(options);
  }

  /** The kafkajs client, created on first use. */
  private client(): Promise<{ kafka: Kafka; kafkajs: typeof KafkaJs }> {
    this.kafka ??= import("kafkajs").then((kafkajs) => ({ kafka: this.createClient(kafkajs), kafkajs }));
    return this.kafka;
  }

  private createClient(kafkajs: typeof KafkaJs): Kafka {
    // The relay logs an outage once itself: kafkajs' lines are debug detail.
    return kafkaClient(kafkajs, { ...this.options, log: this.options.log.child({ component: "kafka" }) });
  }

  /** The topic published to. */
  get topic(): string {
    return this.options.topic;
  }

  async connect(signal: AbortSignal): Promise<void> {
    if (this.closed) throw new PublishError("the Kafka publisher is closed");
    if (this.producer !== undefined) return;
    try {
      await abortable(this.readyProducer(), signal);
    } catch (e) {
      if (signal.aborted) throw e;
      throw new PublishError(`connecting to Kafka (topic ${this.options.topic}) failed`, { cause: e });
    }
  }

  async publish(records: readonly OutboxRecord[], signal: AbortSignal): Promise<void> {
    if (this.closed) throw new PublishError("the Kafka publisher is closed");
    if (records.length === 0) return;
    const spans = tracingEnabled() ? publishSpans(this.options.topic, records) : undefined;
    try {
      await this.send(records, signal);
    } catch (e) {
      if (spans !== undefined) endPublishSpans(spans, e);
      throw e;
    }
    if (spans !== undefined) endPublishSpans(spans);
  }

  private async send(records: readonly OutboxRecord[], signal: AbortSignal): Promise<void> {
    try {
      const producer = await abortable(this.readyProducer(), signal);
      // One after the other: a run's events keep their order across the sends.
      const maxEventBytes =
        this.options.maxEventBytes ?? Math.max(1024, this.topicMaxMessageBytes - BATCH_OVERHEAD_BYTES);
      const fitted = records.map((r) => this.fitted(r, maxEventBytes));
      // A partition's messages of one send are one record batch, which the topic's limit bounds
      // as a whole: a send is at most what one event may be.
      for (const messages of sendsOf(fitted, Math.min(this.options.maxSendBytes, maxEventBytes)))
        await abortable(
          producer.send({
            topic: this.options.topic,
            acks: -1,
            timeout: this.options.requestTimeoutMs,
            messages,
          }),
          signal,
        );
    } catch (e) {
      this.discardProducer();
      // The topic's limit may have been lowered: read it again before the next send.
      this.topicReady = false;
      if (signal.aborted) throw e;
      throw new PublishError(`publishing to Kafka topic ${this.options.topic} failed`, { cause: e });
    }
  }

  /** The message of `record`, truncated when larger than `maxBytes`. */
  private fitted(record: OutboxRecord, maxBytes: number): EventMessage {
    const message = eventMessage(record);
    // Nearly every event is far below the limit: its headers and key are not counted then.
    if (record.payload.byteLength + FAR_BELOW_BYTES <= maxBytes) return message;
    // With the header a truncated event gets.
    const overhead =
      messageBytes(message) -
      message.value.byteLength +
      Buffer.byteLength(EventHeaders.truncated) +
      Buffer.byteLength("true");
    const { payload, truncated } = fitEvent(record.payload, overhead, maxBytes);
    if (!truncated) return message;
    this.options.log.warn(
      {
        run_id: record.runId,
        sequence: record.sequence,
        event_type: protoEventType(record.type),
        bytes: record.payload.byteLength + overhead,
        published_bytes: payload.byteLength + overhead,
        max_bytes: maxBytes,
      },
      "event larger than the Kafka topic takes in one message: published truncated",
    );
    return {
      ...message,
      value: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength),
      headers: { ...message.headers, [EventHeaders.truncated]: "true" },
    };
  }

  /** The connected producer, preparing it once for concurrent callers. */
  private readyProducer(): Promise<Producer> {
    if (this.producer !== undefined) return Promise.resolve(this.producer);
    this.preparing ??= this.prepare().finally(() => {
      this.preparing = undefined;
    });
    return this.preparing;
  }

  /** Creates the topic if needed and connects a producer. */
  private async prepare(): Promise<Producer> {
    if (!this.topicReady) {
      await this.ensureTopic();
      this.topicReady = true;
    }
    const { kafka, kafkajs } = await this.client();
    const producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
      retry: { retries: this.options.sendRetries, initialRetryTime: 100, maxRetryTime: 2000 },
    });
    try {
      await producer.connect();
    } catch (e) {
      this.track(producer.disconnect());
      throw e;
    }
    if (this.closed) {
      this.track(producer.disconnect());
      throw new PublishError("the Kafka publisher is closed");
    }
    this.producer = producer;
    return producer;
  }

  private async ensureTopic(): Promise<void> {
    const { topic, partitions, replicationFactor, log } = this.options;
    const admin = (await this.client()).kafka.admin();
    this.admin = admin;
    try {
      await admin.connect();
      const created = await admin.createTopics({
        topics: [{ topic, numPartitions: partitions, replicationFactor }],
        waitForLeaders: true,
        timeout: this.options.requestTimeoutMs,
      });
      if (created)
        log.info({ topic, partitions, replication_factor: replicationFactor }, "created Kafka topic");
      else {
        const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
        const actual = metadata.topics[0]?.partitions.length;
        // Adding partitions would move runs to other partitions and break their order: report only.
        if (actual !== partitions)
          log.warn(
            { topic, partitions: actual, configured: partitions },
            "Kafka topic exists with a different partition count; keeping it",
          );
      }
      await this.readMaxMessageBytes(admin);
    } finally {
      this.admin = undefined;
      await admin.disconnect().catch(() => undefined);
    }
  }

  /** Reads the topic's `max.message.bytes` (kept as it was when the broker does not say). */
  private async readMaxMessageBytes(admin: Admin): Promise<void> {
    const { topic, log } = this.options;
    try {
      const described = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: TOPIC_RESOURCE, name: topic, configNames: ["max.message.bytes"] }],
      });
      const value = described.resources[0]?.configEntries.find(
        (e) => e.configName === "max.message.bytes",
      )?.configValue;
      const bytes = Number(value);
      if (Number.isSafeInteger(bytes) && bytes > 0) this.topicMaxMessageBytes = bytes;
    } catch (e) {
      log.warn(
        { topic, err: e, assumed_bytes: this.topicMaxMessageBytes },
        "could not read the Kafka topic's max.message.bytes",
      );
    }
  }

  private discardProducer(): void {
    const producer = this.producer;
    this.producer = undefined;
    if (producer !== undefined) this.track(producer.disconnect());
  }

  private track(disconnect: Promise<void>): void {
    const p = disconnect.catch(() => undefined).finally(() => this.disconnecting.delete(p));
    this.disconnecting.add(p);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.admin !== undefined) this.track(this.admin.disconnect());
    await this.preparing?.catch(() => undefined);
    this.discardProducer();
    await Promise.all([...this.disconnecting]);
  }
}

/**
 * A PRODUCER span per event that has a trace context (tracing on), a child of the span that
 * caused the event (the `traceparent` the message carries), named and described by the
 * OpenTelemetry messaging conventions.
 */
function publishSpans(topic: string, records: readonly OutboxRecord[]): Span[] {
  const spans: Span[] = [];
  for (const r of records) {
    const traceparent = r.traceContext?.["traceparent"];
    if (typeof traceparent !== "string") continue;
    spans.push(
      tracer("nexusflow-scheduler").startSpan(
        `send ${topic}`,
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            "messaging.system": "kafka",
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": records.length,
            "messaging.message.id": r.eventId,
            "messaging.kafka.message.key": r.runId,
            "nexusflow.run_id": r.runId,
            "nexusflow.event_type": r.type,
            "nexusflow.event_sequence": r.sequence,
          },
        },
        contextFromTraceparent(traceparent),
      ),
    );
  }
  return spans;
}

function endPublishSpans(spans: readonly Span[], error?: unknown): void {
  for (const span of spans) {
    if (error !== undefined) {
      span.setAttribute("error.type", error instanceof Error ? error.name : "Error");
      span.setStatus({
        code: SpanStatusCode.ERROR,
        message: error instanceof Error ? error.message : "publish failed",
      });
    }
    span.end();
  }
}
