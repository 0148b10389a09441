/**
 * A Prometheus registry per service, with Node's default process metrics (CPU, memory, event loop
 * lag, GC, handles). Each service owns its registry, so that tests running several services in one
 * process never mix their metrics.
 */
import { Registry, collectDefaultMetrics } from "prom-client";

/** The `nexusflow_` prefix of every metric the project defines (the default ones keep theirs). */
export const METRIC_PREFIX = "nexusflow_";

/** A new registry with the default process metrics (`process_*`, `nodejs_*`). */
export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}
