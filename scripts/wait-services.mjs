#!/usr/bin/env node
// Waits until the test services started by scripts/test-services.sh really answer: a KafkaJS admin
// listTopics() plus a group coordinator, and a signed minio listBuckets(). Exits 0 when both do, 1
// (with the service log tail) when one does not within WAIT_TIMEOUT_SECONDS or its process dies.
//
// Environment: KAFKA_BROKERS, S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION (as written by
// test-services.sh), optional KAFKA_PID/KAFKA_LOG and S3_PID/S3_LOG, WAIT_TIMEOUT_SECONDS (120).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { setTimeout as sleep } from "node:timers/promises";

// kafkajs and minio are dependencies of the scheduler; resolving from its package.json finds them
// whether npm hoisted them to the root node_modules or kept them in the workspace's own.
const require = createRequire(new URL("../services/scheduler/package.json", import.meta.url));
const { Kafka, logLevel } = require("kafkajs");
const { Client: MinioClient } = require("minio");

const env = process.env;
const timeoutMs = Number(env.WAIT_TIMEOUT_SECONDS ?? "120") * 1000;
const deadline = Date.now() + timeoutMs;

function alive(pid) {
  if (pid === undefined || pid === "") return true;
  try {
    process.kill(Number(pid), 0);
    return true;
  } catch {
    return false;
  }
}

function logTail(file, lines = 40) {
  if (file === undefined || file === "") return "";
  try {
    const text = readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
    return `\n---- last lines of ${file} ----\n${text}\n----`;
  } catch (err) {
    return `\n(could not read ${file}: ${String(err)})`;
  }
}

/**
 * Retries `probe` until it resolves, the deadline passes or the service process dies.
 * Resolves to undefined on success or to an error message.
 */
async function waitFor(name, pid, log, probe) {
  let lastError = "no attempt made";
  for (let attempt = 1; ; attempt++) {
    if (!alive(pid)) return `${name} exited before it became ready (last error: ${lastError})${logTail(log)}`;
    try {
      await probe();
      console.error(`wait-services: ${name} ready after ${attempt} attempt(s)`);
      return undefined;
    } catch (err) {
      lastError = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    }
    if (Date.now() >= deadline) {
      return `${name} not ready after ${timeoutMs / 1000}s (last error: ${lastError})${logTail(log)}`;
    }
    await sleep(500);
  }
}

async function probeKafka() {
  const brokers = env.KAFKA_BROKERS.split(",");
  const kafka = new Kafka({
    clientId: "nexusflow-wait-services",
    brokers,
    connectionTimeout: 2000,
    requestTimeout: 5000,
    retry: { retries: 0 },
    logLevel: logLevel.NOTHING,
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    await admin.listTopics();
    // Also wait for the group coordinator: finding it creates __consumer_offsets, so the first
    // consumer group in a test does not race that creation.
    await admin.describeGroups(["nexusflow-wait-services"]);
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

async function probeS3() {
  const url = new URL(env.S3_ENDPOINT);
  const client = new MinioClient({
    endPoint: url.hostname,
    port: Number(url.port || (url.protocol === "https:" ? 443 : 80)),
    useSSL: url.protocol === "https:",
    accessKey: env.S3_ACCESS_KEY,
    secretKey: env.S3_SECRET_KEY,
    region: env.S3_REGION ?? "us-east-1",
    pathStyle: true,
  });
  await client.listBuckets();
}

const waits = [];
if (env.KAFKA_BROKERS) waits.push(waitFor("Kafka", env.KAFKA_PID, env.KAFKA_LOG, probeKafka));
if (env.S3_ENDPOINT) waits.push(waitFor("S3Proxy", env.S3_PID, env.S3_LOG, probeS3));
if (waits.length === 0) {
  console.error("wait-services: neither KAFKA_BROKERS nor S3_ENDPOINT is set");
  process.exitCode = 2;
} else {
  const failures = (await Promise.all(waits)).filter((m) => m !== undefined);
  for (const message of failures) console.error(`wait-services: ${message}`);
  process.exitCode = failures.length > 0 ? 1 : 0;
}
