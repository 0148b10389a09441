/**
 * A Prometheus registry per service, with Node's default process metrics (CPU, memory, event loop
 * lag, GC, handles). Each service owns its registry, so that tests running several services in one
 * process never mix their metrics.
 */
import { type OpenMetricsContentType, Registry, collectDefaultMetrics } from "prom-client";

/** The `nexusflow_` prefix of every metric the project defines (the default ones keep theirs). */
export const METRIC_PREFIX = "nexusflow_";

/**
 * A new registry with the default process metrics (`process_*`, `nodejs_*`), exposed in the
 * OpenMetrics text format (`application/openmetrics-text`; Prometheus asks for it first): the
 * format that carries exemplars, the trace id a histogram observation was made in, which Grafana
 * turns into a link to the trace (see exemplars.ts). Sample names are those of the Prometheus text
 * format (counters keep `_total`).
 */
export function createMetricsRegistry(): Registry {
  const registry = new Registry();
  // prom-client types a registry by its format; every signature here takes the default one, and
  // the registry serves what `registry.contentType` says.
  (registry as unknown as Registry<OpenMetricsContentType>).setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  collectDefaultMetrics({ register: registry });
  return registry;
}
