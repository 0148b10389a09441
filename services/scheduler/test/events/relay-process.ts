/**
 * A scheduler and its outbox relay as one OS process, so a crash test can SIGKILL both at once.
 * This is a test entry point (like a main.ts): it reads its environment here and nowhere else.
 *
 * Environment: DATABASE_URL, KAFKA_BROKERS, KAFKA_TOPIC, RELAY_BATCH_SIZE (default 500),
 * KAFKA_PARTITIONS (default 3), LOG_LEVEL.
 */
import { createLogger, logProcessWarnings, type LogLevel } from "@nexusflow/common";
import pg from "pg";
import { createOutboxRelay } from "../../src/events/setup.js";
import { Scheduler } from "../../src/scheduler.js";

const env = process.env;
const required = (name: string): string => {
  const v = env[name];
  if (v === undefined || v === "") throw new Error(`${name} is required`);
  return v;
};
const databaseUrl = required("DATABASE_URL");
const log = createLogger("scheduler", (env["LOG_LEVEL"] as LogLevel | undefined) ?? "info");
// As the scheduler's main does: warnings are log lines (kafkajs 2.2.4 sets a negative timeout on Node 24).
logProcessWarnings(log);

const scheduler = new Scheduler({
  port: 0,
  databaseUrl,
  log,
  heartbeatIntervalMs: 200,
  sessionTimeoutMs: 1500,
});
await scheduler.start();
const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
pool.on("error", (e) => log.warn({ err: e }, "idle relay connection lost"));
// What the scheduler's own hook does, on a separate pool.
const relay = createOutboxRelay(pool, log, {
  brokers: required("KAFKA_BROKERS").split(","),
  topic: required("KAFKA_TOPIC"),
  partitions: Number(env["KAFKA_PARTITIONS"] ?? "3"),
  batchSize: Number(env["RELAY_BATCH_SIZE"] ?? "500"),
  pollIntervalMs: 20,
});
relay.start();

const stop = async (): Promise<void> => {
  await relay.stop();
  await pool.end();
  await scheduler.stop();
};
process.once("SIGTERM", () => void stop());
