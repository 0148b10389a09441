/**
 * `nexusflow events tail`: follows the lifecycle-event topic and prints each event as one JSON
 * line (proto3 JSON of the LifecycleEvent plus topic, partition, offset, key and headers). Without
 * brokers it reads the same events from the scheduler's outbox table instead (outbox-tail.ts).
 * `eventsCommand` reads arguments and environment defaults (main.ts wires it like the other
 * operator commands); `tailEvents` does the work and takes everything as options.
 */
import { randomUUID } from "node:crypto";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { Kafka, logLevel, type Consumer } from "kafkajs";
import { EventDecodeError, decodeEventMessage } from "@nexusflow/scheduler/events";
import { readDevState } from "./dev-state.js";
import { type CommandIo, UsageError, parseArgsErrorText } from "./command.js";

/** Help of `nexusflow events`. */
export const EVENTS_USAGE = `Usage: nexusflow events publish KEY [--payload JSON|@file] [--idempotency-key K]
       nexusflow events get EVENT-ID
       nexusflow events list [--prefix P] [--limit N] [--page-token T]
       nexusflow events tail [options]

publish stores an event (through the gateway, as the runs commands) and starts a run of each
workflow whose triggers match it, with the payload as input; get shows an event with the run each
matching workflow started (or why it did not); list shows stored events, newest first.

tail prints lifecycle events as JSON lines until Ctrl-C: from Kafka when brokers are given, else
from the scheduler's outbox table in PostgreSQL (DATABASE_URL, else the embedded database of
NEXUSFLOW_DATA_DIR or of the running dev stack), polled every 200 ms.

Options of tail:
  --brokers host:port[,host:port]   Kafka brokers (default: KAFKA_BROKERS)
  --topic name                      topic (default: KAFKA_TOPIC, else nexusflow.events)
  --from-beginning                  start at the oldest retained event (or outbox row), not at new ones
  --run id                          only the events of this run
`;

/** Options of {@link tailEvents}. */
export interface TailOptions {
  /** Bootstrap brokers, host:port. */
  brokers: string[];
  /** Topic of lifecycle events. */
  topic: string;
  /** Read from the oldest retained message instead of only new ones. */
  fromBeginning: boolean;
  /** Only this run's events (the message key). */
  runId: string | undefined;
  /** Stops tailing (Ctrl-C). */
  signal: AbortSignal;
  /** Receives one JSON line per event (without the newline). */
  write: (line: string) => void;
  /** Receives diagnostics (without the newline). */
  warn: (line: string) => void;
}

/** Raised when the topic does not exist or the consumer fails for good. */
export class TailError extends Error {
  override name = "TailError";
}

/** Tails the topic until `signal` aborts; disconnects before resolving. */
export async function tailEvents(o: TailOptions): Promise<void> {
  const kafka = new Kafka({
    clientId: "nexusflow-cli",
    brokers: o.brokers,
    connectionTimeout: 3000,
    retry: { retries: 3 },
    logLevel: logLevel.NOTHING,
  });
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(o.topic))
      throw new TailError(
        `topic ${o.topic} does not exist (the scheduler creates it when KAFKA_BROKERS is set)`,
      );
  } finally {
    await admin.disconnect();
  }
  if (o.signal.aborted) return;

  // A throwaway group: every tail reads independently and commits nothing.
  const consumer: Consumer = kafka.consumer({
    groupId: `nexusflow-cli-tail-${randomUUID()}`,
    allowAutoTopicCreation: false,
    maxWaitTimeInMs: 250,
  });
  let failed: ((e: Error) => void) | undefined;
  const crashed = new Promise<never>((_, reject) => (failed = reject));
  crashed.catch(() => undefined);
  consumer.on(consumer.events.CRASH, (e) => {
    if (!e.payload.restart) failed?.(new TailError(`the Kafka consumer stopped: ${e.payload.error.message}`));
  });
  try {
    await consumer.connect();
    await consumer.subscribe({ topic: o.topic, fromBeginning: o.fromBeginning });
    await consumer.run({
      autoCommit: false,
      eachMessage: ({ topic, partition, message }) => {
        if (o.runId !== undefined && message.key?.toString() !== o.runId) return Promise.resolve();
        try {
          o.write(JSON.stringify(decodeEventMessage(topic, partition, message)));
        } catch (e) {
          if (!(e instanceof EventDecodeError)) throw e;
          o.warn(`skipping ${topic}/${partition}@${message.offset}: ${e.message}`);
        }
        return Promise.resolve();
      },
    });
    await Promise.race([
      crashed,
      new Promise<void>((resolve) => {
        if (o.signal.aborted) resolve();
        else o.signal.addEventListener("abort", () => resolve(), { once: true });
      }),
    ]);
  } finally {
    await consumer.disconnect();
  }
}

function brokerList(value: string, source: string): string[] {
  const brokers = value
    .split(",")
    .map((b) => b.trim())
    .filter((b) => b !== "");
  const bad = brokers.find((b) => !/^[^:\s]+:\d{1,5}$/.test(b));
  if (brokers.length === 0 || bad !== undefined)
    throw new UsageError(`${source}: expected host:port[,host:port], got ${JSON.stringify(value)}`);
  return brokers;
}

/**
 * The database to read the outbox from when there is no Kafka: DATABASE_URL; else the embedded
 * PostgreSQL of NEXUSFLOW_DATA_DIR, of the running dev stack (npm start) or of ./.nexusflow, while
 * it runs. Undefined when there is none.
 */
async function findDatabaseUrl(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const fromEnv = env["DATABASE_URL"]?.trim();
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  const { embeddedDatabaseUrl } = await import("./outbox-tail.js");
  const dirs: string[] = [];
  const dataDir = env["NEXUSFLOW_DATA_DIR"]?.trim();
  if (dataDir !== undefined && dataDir !== "") dirs.push(resolve(dataDir));
  const running = await readDevState(env);
  if (running !== undefined) dirs.push(running.dataDir);
  dirs.push(resolve(".nexusflow"));
  for (const dir of dirs) {
    const url = await embeddedDatabaseUrl(dir);
    if (url !== undefined) return url;
  }
  return undefined;
}

/**
 * `nexusflow events <subcommand>`: parses `args`, takes defaults from the environment
 * (KAFKA_BROKERS, KAFKA_TOPIC) and tails until `io.signal` aborts (Ctrl-C). Returns the exit code;
 * throws {@link UsageError} for bad usage.
 */
export async function eventsCommand(args: string[], io: CommandIo): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === "help" || sub === "--help" || sub === "-h") {
    io.stdout(EVENTS_USAGE);
    return 0;
  }
  if (sub === "publish" || sub === "get" || sub === "list")
    return (await import("./event-publish-command.js")).publishedEventsCommand(sub, rest, io);
  if (sub !== "tail")
    throw new UsageError(
      sub === undefined
        ? "events: missing subcommand (publish, get, list, tail)"
        : `events: unknown subcommand "${sub}" (publish, get, list, tail)`,
    );
  let values;
  try {
    ({ values } = parseArgs({
      args: rest,
      options: {
        brokers: { type: "string" },
        topic: { type: "string" },
        "from-beginning": { type: "boolean" },
        run: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    throw new UsageError(`events tail: ${parseArgsErrorText(e, rest)}`);
  }
  if (values.help === true) {
    io.stdout(EVENTS_USAGE);
    return 0;
  }
  const brokers = values.brokers ?? io.env["KAFKA_BROKERS"];
  const fromBeginning = values["from-beginning"] === true;
  const write = (line: string): void => io.stdout(`${line}\n`);
  const warn = (line: string): void => io.stderr(`nexusflow events: ${line}\n`);
  if (brokers === undefined || brokers.trim() === "") {
    // The embedded default: no Kafka, the events stay in the scheduler's outbox table.
    const databaseUrl = await findDatabaseUrl(io.env);
    if (databaseUrl === undefined) {
      io.stderr(
        "nexusflow events: no Kafka and no database: set KAFKA_BROKERS (or pass --brokers host:port), " +
          "set DATABASE_URL, or start the dev stack (npm start)\n",
      );
      return 1;
    }
    try {
      const { tailOutbox } = await import("./outbox-tail.js");
      await tailOutbox({ databaseUrl, fromBeginning, runId: values.run, signal: io.signal, write, warn });
      return 0;
    } catch (e) {
      io.stderr(`nexusflow events: ${e instanceof Error ? e.message : String(e)}\n`);
      return 1;
    }
  }
  try {
    await tailEvents({
      brokers: brokerList(brokers, values.brokers === undefined ? "KAFKA_BROKERS" : "--brokers"),
      topic: values.topic ?? (io.env["KAFKA_TOPIC"]?.trim() || "nexusflow.events"),
      fromBeginning,
      runId: values.run,
      signal: io.signal,
      write,
      warn,
    });
    return 0;
  } catch (e) {
    if (e instanceof UsageError) throw e;
    io.stderr(`nexusflow events: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
