/**
 * Metrics of the Kafka event source (triggers/kafka-source.ts), read from its counters at scrape
 * time: records by topic and outcome (stored, duplicate, or the reason a record was rejected),
 * failed attempts to store, each partition's lag, and whether the source is consuming.
 */
import { Counter, Gauge, type Registry } from "@nexusflow/common/metrics";
import type { KafkaEventSource, RecordOutcome } from "../triggers/kafka-source.js";
import { REJECT_REASONS } from "../triggers/kafka-record.js";

/** Registers the source's metrics on `registry`. */
export function registerEventSourceMetrics(registry: Registry, source: KafkaEventSource): void {
  const registers = [registry];
  const { stats } = source;
  const seen = new Map<string, number>();
  /** Adds to `counter` (labels: topic, then outcome or reason) what was counted since the last scrape. */
  const sync = <L extends string>(counter: Counter<L>, outcomes: readonly RecordOutcome[]): void => {
    for (const topic of source.topics)
      for (const outcome of outcomes) {
        const key = `${topic}\u0000${outcome}`;
        const n = stats.get(topic, outcome);
        counter.labels(topic, outcome).inc(n - (seen.get(key) ?? 0));
        seen.set(key, n);
      }
  };
  new Counter({
    name: "nexusflow_event_source_records_total",
    help: "Kafka records the event source published as events: stored, or found stored already (a record delivered again).",
    labelNames: ["topic", "outcome"],
    registers,
    collect() {
      sync(this, ["stored", "duplicate"]);
    },
  });
  new Counter({
    name: "nexusflow_event_source_rejected_total",
    help: "Kafka records the event source skipped because they are no event, by reason.",
    labelNames: ["topic", "reason"],
    registers,
    collect() {
      sync(this, REJECT_REASONS);
    },
  });
  let failures = 0;
  new Counter({
    name: "nexusflow_event_source_store_errors_total",
    help: "Failed attempts to store a consumed record's event (each retried until it works).",
    registers,
    collect() {
      this.inc(stats.storeFailures - failures);
      failures = stats.storeFailures;
    },
  });
  new Gauge({
    name: "nexusflow_event_source_lag_records",
    help: "Records of a partition not yet processed, as of the last batch fetched from it.",
    labelNames: ["topic", "partition"],
    registers,
    collect() {
      this.reset();
      for (const [key, lag] of stats.lag) {
        const [topic = "", partition = ""] = key.split("\u0000");
        this.set({ topic, partition }, Math.max(0, lag));
      }
    },
  });
  new Gauge({
    name: "nexusflow_event_source_up",
    help: "1 while the event source's consumer is in its group and consuming, else 0.",
    registers,
    collect() {
      this.set(source.state === "RUNNING" ? 1 : 0);
    },
  });
}
