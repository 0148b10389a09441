/**
 * Building the outbox relay from the scheduler's options: Kafka when brokers are configured,
 * otherwise a relay that marks events published unsent (so pruning keeps the outbox bounded).
 */
import type pg from "pg";
import type { Logger } from "@nexusflow/common";
import { KafkaPublisher } from "./kafka-publisher.js";
import { DiscardPublisher } from "./publisher.js";
import { OutboxRelay, type OutboxRelayOptions } from "./relay.js";

/** Event publishing options of the scheduler (defaults: {@link KafkaPublisherOptions}, {@link OutboxRelayOptions}). */
export interface EventsOptions extends Partial<
  Pick<
    OutboxRelayOptions,
    "batchSize" | "pollIntervalMs" | "retentionMs" | "pruneIntervalMs" | "retryMaxMs" | "lockRetryMs"
  >
> {
  /** Kafka bootstrap brokers; undefined turns publishing off. */
  brokers: readonly string[] | undefined;
  /** Topic of lifecycle events. @default "nexusflow.events" */
  topic?: string;
  /** Partitions of the topic when created. @default 6 */
  partitions?: number;
  /** Replication factor of the topic when created. @default 1 */
  replicationFactor?: number;
  /** Kafka client id. @default "nexusflow-scheduler" */
  clientId?: string;
}

/**
 * Creates (does not start) the relay for `options`, using a connection of `pool`; `cluster` makes it
 * the coordinator's (relay.ts `coordinated`).
 */
export function createOutboxRelay(
  pool: pg.Pool,
  log: Logger,
  options: EventsOptions,
  cluster: Pick<OutboxRelayOptions, "coordinated" | "refused"> = {},
): OutboxRelay {
  const { brokers, topic, partitions, replicationFactor, clientId, ...relay } = options;
  const publisher =
    brokers === undefined || brokers.length === 0
      ? new DiscardPublisher()
      : new KafkaPublisher({
          brokers,
          log,
          ...(topic === undefined ? {} : { topic }),
          ...(partitions === undefined ? {} : { partitions }),
          ...(replicationFactor === undefined ? {} : { replicationFactor }),
          ...(clientId === undefined ? {} : { clientId }),
        });
  if (publisher instanceof DiscardPublisher)
    log.info("KAFKA_BROKERS is not set: lifecycle events are not published (the outbox is only pruned)");
  return new OutboxRelay({ ...relay, ...cluster, pool, log, publisher });
}
