/**
 * The kafkajs client both Kafka components of the scheduler use (the outbox relay's publisher and
 * the event source): their brokers and timeouts, a short retry of its own (the components retry
 * outages themselves and log them once), and kafkajs' own lines (one per refused connection while
 * a broker is down) at debug level on the component's logger; its request queue fixed first
 * (kafkajs-request-queue.ts).
 */
import type { Logger } from "@nexusflow/common";
import type * as KafkaJs from "kafkajs";
import type { LogEntry } from "kafkajs";
import { fixKafkaRequestQueue } from "./kafkajs-request-queue.js";

/** What a Kafka client is made from. */
export interface KafkaClientOptions {
  clientId: string;
  brokers: string[];
  connectionTimeoutMs: number;
  requestTimeoutMs: number;
  /** The component's logger (kafkajs' lines go there at debug). */
  log: Logger;
}

/** Whether it was logged that kafkajs' request queue was not fixed (once per process). */
let unfixedTold = false;

/** A kafkajs client (the module passed in: it is loaded on first use). */
export function kafkaClient(kafkajs: typeof KafkaJs, o: KafkaClientOptions): KafkaJs.Kafka {
  // Its idle connections would wake the process every millisecond (kafkajs-request-queue.ts).
  const fix = fixKafkaRequestQueue();
  if (fix !== "fixed" && fix !== "already fixed" && !unfixedTold) {
    unfixedTold = true;
    o.log.info({ kafkajs_request_queue: fix }, "kafkajs' request queue left as it is (not the 2.2.4 one)");
  }
  return new kafkajs.Kafka({
    clientId: o.clientId,
    brokers: o.brokers,
    connectionTimeout: o.connectionTimeoutMs,
    requestTimeout: o.requestTimeoutMs,
    retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000 },
    logLevel: kafkajs.logLevel.WARN,
    logCreator:
      () =>
      ({ namespace, log: entry }: LogEntry) => {
        const { message, ...fields } = entry;
        o.log.debug({ kafkajs: namespace, ...fields }, message);
      },
  });
}
