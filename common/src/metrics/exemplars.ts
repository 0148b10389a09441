/**
 * Exemplars: a histogram observation made inside a traced run keeps that run's `trace_id` beside
 * its bucket, and the OpenMetrics scrape (registry.ts) carries it as
 * `..._bucket{le="0.5"} 3 # {trace_id="4bf9..."} 0.31 1733400000.123`. Prometheus stores them with
 * `--enable-feature=exemplar-storage` and Grafana links each to the trace (the Prometheus data
 * source's `exemplarTraceIdDestinations`, deploy/grafana/provisioning). Only sampled traces give
 * one: an unsampled trace is in no trace store.
 */
import type { Histogram } from "prom-client";
import { traceparentSampled } from "../telemetry/index.js";

/** The trace id of a W3C `traceparent` whose trace is sampled, else undefined. */
export function sampledTraceId(traceparent: string | null | undefined): string | undefined {
  return traceparentSampled(traceparent) === true ? (traceparent as string).slice(3, 35) : undefined;
}

/**
 * Observes `value` for `labels` with `trace_id` as the exemplar; `histogram` must have been created
 * with `enableExemplars: true`.
 */
export function observeWithTrace<L extends string>(
  histogram: Histogram<L>,
  labels: Partial<Record<L, string>>,
  value: number,
  traceId: string,
): void {
  // prom-client types exemplar labels as the metric's own label names; any name is valid.
  histogram.observe({ labels, value, exemplarLabels: { trace_id: traceId } as Partial<Record<L, string>> });
}
