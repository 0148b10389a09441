/**
 * Helpers of the event tests: outbox rows written straight into PostgreSQL, an in-memory
 * publisher, a Kafka collector that decodes what was published, an executor that answers every
 * lease on a raw session, and the per-run check "exactly the committed events, in order".
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { jsonToValue } from "@nexusflow/common";
import {
  LifecycleEventBatchSchema,
  LifecycleEventSchema,
  type LifecycleEvent,
  type SessionResponse,
} from "@nexusflow/gen";
import { Kafka, logLevel, type Consumer } from "kafkajs";
import type pg from "pg";
import { decodeLifecycleEvent, headerStrings } from "../../src/events/decode.js";
import type { EventPublisher, OutboxRecord } from "../../src/events/publisher.js";
import { ServiceProcess } from "../e2e/processes.js";
import { RawSession, waitFor, type OutboxEventRow } from "../support.js";

// ----------------------------------------------------------------------------- relay processes

/** A scheduler with its outbox relay, as its own process (relay-process.ts). */
export const RELAY_PROCESS = fileURLToPath(new URL("./relay-process.ts", import.meta.url));

/**
 * The environment of a relay process publishing to `topic` (3 partitions) from `databaseUrl`, in
 * batches of 3: many publish-then-mark steps for a fault to land between.
 */
export function relayEnv(databaseUrl: string, brokers: string, topic: string): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    KAFKA_BROKERS: brokers,
    KAFKA_TOPIC: topic,
    KAFKA_PARTITIONS: "3",
    RELAY_BATCH_SIZE: "3",
  };
}

/** Starts a relay process named `name` and waits until its scheduler listens; its address. */
export async function startRelayProcess(
  name: string,
  env: Record<string, string>,
): Promise<{ process: ServiceProcess; address: string }> {
  const p = new ServiceProcess(name, RELAY_PROCESS, env);
  const line = await p.waitForLog('"scheduler listening"', (l) => l.msg === "scheduler listening", 60_000);
  return { process: p, address: String(line["address"]) };
}

/** Waits until `topic` exists on `kafka`'s brokers (the relay creates it). */
export async function waitForTopic(kafka: Kafka, topic: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await waitFor(`topic ${topic} to exist`, async () => (await admin.listTopics()).includes(topic), 30_000);
  } finally {
    await admin.disconnect();
  }
}

// ----------------------------------------------------------------------------- outbox rows

/**
 * Inserts `count` outbox events of `runId` with sequences from `fromSequence`, `perRow` events to a
 * row (as one commit of the engine writes a run's events); returns their event ids.
 */
export async function insertEvents(
  pool: pg.Pool,
  runId: string,
  count: number,
  fromSequence = 1,
  extra: { publishedAgoMs?: number; createdAgoMs?: number; perRow?: number } = {},
): Promise<string[]> {
  const events = Array.from({ length: count }, (_, i) => {
    const sequence = fromSequence + i;
    return create(LifecycleEventSchema, {
      eventId: randomUUID(),
      runId,
      sequence: BigInt(sequence),
      time: timestampFromDate(new Date()),
      workflowName: "outbox-test",
      workflowVersion: 1,
      event:
        sequence === 1
          ? { case: "runStarted", value: { input: jsonToValue({ n: sequence }) } }
          : { case: "taskStarted", value: { taskRunId: randomUUID(), stepId: `s${sequence}`, attempt: 1 } },
    });
  });
  const perRow = extra.perRow ?? 1;
  const rows = [];
  for (let i = 0; i < events.length; i += perRow) {
    const chunk = events.slice(i, i + perRow);
    rows.push({
      first_sequence: Number(chunk[0]?.sequence),
      event_count: chunk.length,
      payload: Buffer.from(
        toBinary(LifecycleEventBatchSchema, create(LifecycleEventBatchSchema, { events: chunk })),
      ).toString("base64"),
    });
  }
  await pool.query(
    `INSERT INTO outbox_events (run_id, first_sequence, event_count, payload, created_at, published_at)
     SELECT $2::uuid, first_sequence, event_count, decode(payload, 'base64'),
            now() - $3::double precision * interval '1 millisecond',
            CASE WHEN $4::double precision IS NULL THEN NULL ELSE now() - $4::double precision * interval '1 millisecond' END
       FROM jsonb_to_recordset($1::jsonb) AS x(first_sequence bigint, event_count int, payload text)
      ORDER BY first_sequence`,
    [JSON.stringify(rows), runId, extra.createdAgoMs ?? 0, extra.publishedAgoMs ?? null],
  );
  return events.map((e) => e.eventId);
}

// ----------------------------------------------------------------------------- in-memory publisher

/** An {@link EventPublisher} that keeps what it is given; it can fail or hold batches on demand. */
export class MemoryPublisher implements EventPublisher {
  /** Every publish call's records, including failed ones. */
  readonly attempts: OutboxRecord[][] = [];
  /** Records of successful calls, in order. */
  readonly published: OutboxRecord[] = [];
  /** Calls still to fail. */
  failNext = 0;
  /** While set, publish waits for it (or the abort signal) before acknowledging. */
  gate: Promise<void> | undefined;
  closed = false;

  connect(): Promise<void> {
    return Promise.resolve();
  }

  async publish(records: readonly OutboxRecord[], signal: AbortSignal): Promise<void> {
    this.attempts.push([...records]);
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error("broker unavailable (simulated)");
    }
    if (this.gate !== undefined) {
      const gate = this.gate;
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => reject(signal.reason as Error);
        signal.addEventListener("abort", onAbort, { once: true });
        void gate.then(() => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        });
      });
    }
    this.published.push(...records);
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

// ----------------------------------------------------------------------------- Kafka collector

/** One event read back from Kafka. */
export interface ReceivedEvent {
  key: string | null;
  partition: number;
  offset: string;
  headers: Record<string, string>;
  event: LifecycleEvent;
}

/** Reads a topic from the beginning into memory (a fresh consumer group each time). */
export class EventCollector {
  readonly received: ReceivedEvent[] = [];
  /** Messages that did not decode (must stay empty). */
  readonly undecodable: unknown[] = [];
  private readonly consumer: Consumer;

  private constructor(kafka: Kafka) {
    this.consumer = kafka.consumer({
      groupId: `nexusflow-events-test-${randomUUID()}`,
      allowAutoTopicCreation: false,
      sessionTimeout: 10_000,
      heartbeatInterval: 1000,
      maxWaitTimeInMs: 100,
    });
  }

  /** Waits until `topic` exists (the relay creates it), then consumes it from the beginning. */
  static async start(brokers: string[], topic: string): Promise<EventCollector> {
    const kafka = new Kafka({ clientId: "nexusflow-events-test", brokers, logLevel: logLevel.NOTHING });
    await waitForTopic(kafka, topic);
    const c = new EventCollector(kafka);
    await c.consumer.connect();
    await c.consumer.subscribe({ topic, fromBeginning: true });
    await c.consumer.run({
      eachMessage: ({ partition, message }) => {
        try {
          c.received.push({
            key: message.key?.toString() ?? null,
            partition,
            offset: message.offset,
            headers: headerStrings(message.headers),
            event: decodeLifecycleEvent(message),
          });
        } catch (e) {
          c.undecodable.push(e);
        }
        return Promise.resolve();
      },
    });
    return c;
  }

  /** The events of one run, in arrival order (duplicates included). */
  ofRun(runId: string): ReceivedEvent[] {
    return this.received.filter((r) => r.event.runId === runId);
  }

  /** Distinct event ids received for `runId`. */
  distinct(runId: string): number {
    return new Set(this.ofRun(runId).map((r) => r.event.eventId)).size;
  }

  /** Waits until `count` distinct events of `runId` arrived. */
  async waitForRun(runId: string, count: number, timeoutMs = 60_000): Promise<ReceivedEvent[]> {
    await waitFor(
      `${count} events of run ${runId} on Kafka (have ${this.distinct(runId)})`,
      () => this.distinct(runId) >= count,
      timeoutMs,
    );
    return this.ofRun(runId);
  }

  /** Leaves the group and disconnects. */
  async stop(): Promise<void> {
    await this.consumer.disconnect();
  }
}

/**
 * Asserts that what Kafka holds for a run is exactly what the run committed: every committed
 * event, keyed by the run id, on one partition, first occurrences in sequence order 1..N with the
 * committed ids and types, and duplicates only as exact repeats of an event id.
 */
export function assertRunEvents(
  runId: string,
  received: readonly ReceivedEvent[],
  committed: readonly OutboxEventRow[],
): void {
  const label = `run ${runId}`;
  assert.ok(committed.length > 0, `${label}: no committed events`);
  assert.deepEqual(
    committed.map((c) => c.sequence),
    committed.map((_, i) => i + 1),
    `${label}: committed sequences are not 1..N`,
  );
  for (const r of received) {
    assert.equal(r.key, runId, `${label}: message key`);
    assert.equal(r.headers["content-type"], "application/x-protobuf");
    assert.equal(r.headers["nf-event-id"], r.event.eventId);
    assert.equal(r.headers["nf-sequence"], String(r.event.sequence));
    assert.equal(
      r.headers["nf-event-type"],
      r.event.event.case?.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`),
    );
  }
  assert.equal(
    new Set(received.map((r) => r.partition)).size,
    1,
    `${label}: events on more than one partition`,
  );
  const firsts: ReceivedEvent[] = [];
  const byId = new Map<string, ReceivedEvent>();
  for (const r of received) {
    const seen = byId.get(r.event.eventId);
    if (seen === undefined) {
      byId.set(r.event.eventId, r);
      firsts.push(r);
    } else {
      assert.equal(
        r.event.sequence,
        seen.event.sequence,
        `${label}: event id ${r.event.eventId} reused with another sequence`,
      );
      assert.equal(
        r.event.event.case,
        seen.event.event.case,
        `${label}: event id ${r.event.eventId} reused with another type`,
      );
    }
  }
  assert.deepEqual(
    firsts.map((r) => [Number(r.event.sequence), r.event.eventId, r.event.event.case]),
    committed.map((c) => [c.sequence, c.eventId, c.type]),
    `${label}: Kafka does not hold exactly the committed events in order`,
  );
}

// ----------------------------------------------------------------------------- executor

/** Answers every lease on a raw session: started, then completed (or failed, when `fail` says so). */
export class AutoExecutor {
  readonly session: RawSession;
  /** Leases handled. */
  leases = 0;

  constructor(
    address: string,
    private readonly options: {
      executorId: string;
      taskTypes: string[];
      slots?: number;
      /** Whether to fail this lease (retryable). */
      fail?: (lease: Extract<SessionResponse["message"], { case: "lease" }>["value"]) => boolean;
    },
  ) {
    this.session = new RawSession(address);
  }

  /** Attaches and grants credit. */
  async start(): Promise<void> {
    const s = this.session;
    s.stream.on("data", (m: SessionResponse) => {
      if (m.message.case !== "lease") return;
      const lease = m.message.value;
      this.leases++;
      s.send({ case: "started", value: { key: lease.key } });
      if (this.options.fail?.(lease) === true)
        s.send({
          case: "failed",
          value: { key: lease.key, error: { type: "FLAKY", message: "try again", retryable: true } },
        });
      else
        s.send({ case: "completed", value: { key: lease.key, output: jsonToValue({ ok: lease.stepId }) } });
      s.send({ case: "credit", value: { n: 1 } });
    });
    // A dead scheduler ends the stream with an error; the test notices through its own waits.
    s.stream.on("error", () => undefined);
    s.send({
      case: "attach",
      value: {
        executorId: this.options.executorId,
        taskTypes: this.options.taskTypes,
        slots: this.options.slots ?? 8,
      },
    });
    await s.next("attachAck");
    s.send({ case: "credit", value: { n: this.options.slots ?? 8 } });
  }

  /** Ends the session. */
  close(): void {
    this.session.close();
  }
}
