/**
 * Tracing (OpenTelemetry) for every service: {@link startTelemetry} starts the SDK from a
 * {@link TelemetryConfig} and is a no-op without one (the default: OTEL_EXPORTER_OTLP_ENDPOINT
 * unset). This module imports only `@opentelemetry/api`; the SDK, the exporter and the
 * instrumentations are loaded by `sdk.ts` when tracing is on, so a process with tracing off loads
 * none of them, and the helpers below return before doing any work ({@link tracingEnabled}).
 *
 * A service's `main.ts` calls {@link startTelemetry} before it imports the modules the
 * instrumentations patch (gRPC, HTTP, pg), then imports the rest of the service.
 */
import {
  type Context,
  type Span,
  type SpanContext,
  type Tracer,
  INVALID_SPANID,
  INVALID_SPAN_CONTEXT,
  INVALID_TRACEID,
  ROOT_CONTEXT,
  context,
  trace,
  TraceFlags,
} from "@opentelemetry/api";

/**
 * Tracing (OpenTelemetry), read from the standard `OTEL_*` variables by every service. Off unless
 * OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; OTEL_SDK_DISABLED=true
 * turns it off even then.
 */
export interface TelemetryConfig {
  /**
   * The OTLP/HTTP (protobuf) traces URL: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given, or
   * OTEL_EXPORTER_OTLP_ENDPOINT with `/v1/traces` appended.
   */
  tracesUrl: string;
  /** OTEL_SERVICE_NAME; defaults to the service's own name (`nexusflow-scheduler`, ...). */
  serviceName: string;
  /**
   * The share of new traces recorded (OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG): `always_on`
   * and `parentbased_always_on` give 1, `traceidratio` and `parentbased_traceidratio` the ratio,
   * `always_off` and `parentbased_always_off` 0. A child always follows its parent's decision.
   * @default 1
   */
  sampleRatio: number;
  /** OTEL_EXPORTER_OTLP_HEADERS (`key=value,key=value`, values URL-decoded). */
  headers: Record<string, string>;
  /**
   * OTEL_BSP_SCHEDULE_DELAY: the longest a finished span waits in memory before it is exported, ms.
   * Shorter than OpenTelemetry's 5 s: at thousands of spans per second, spans held for seconds
   * outlive the young generation and are collected by full garbage collections (measured in the
   * benchmark's executor thread: 9 ms of collection without tracing, 182 ms with 5 s, 64 ms with
   * 200 ms, for the same 20,000 tasks at 10% sampling). @default 200
   */
  exportDelayMs?: number;
}

/** Default of {@link TelemetryConfig.exportDelayMs}. */
export const DEFAULT_EXPORT_DELAY_MS = 200;

/** The handle {@link startTelemetry} returns: `shutdown` flushes the spans still buffered. */
export interface Telemetry {
  readonly enabled: boolean;
  shutdown(): Promise<void>;
}

const OFF: Telemetry = { enabled: false, shutdown: () => Promise.resolve() };

let current: Telemetry = OFF;

/** True once {@link startTelemetry} started the SDK (and until its `shutdown`). */
export function tracingEnabled(): boolean {
  return current.enabled;
}

/**
 * Starts tracing as configured: the OTLP exporter, W3C trace-context propagation and the gRPC,
 * HTTP and pg instrumentations (Kafka publishes are traced by the relay). Without a configuration (tracing off) it does nothing.
 * Call it once per process, before the instrumented modules are imported.
 */
export async function startTelemetry(config: TelemetryConfig | undefined): Promise<Telemetry> {
  if (config === undefined || current.enabled) return current;
  const { startSdk } = await import("./sdk.js");
  return startTracingWith(() => startSdk(config));
}

/**
 * Turns tracing on with the tracer provider `start` registers (it resolves to its shutdown):
 * the SDK for a service, an in-memory exporter in tests (./testing.ts).
 */
export async function startTracingWith(start: () => Promise<() => Promise<void>>): Promise<Telemetry> {
  if (current.enabled) return current;
  const shutdown = await start();
  const started: Telemetry = {
    enabled: true,
    shutdown: async () => {
      if (current === started) current = OFF;
      await shutdown();
    },
  };
  current = started;
  return started;
}

/** Flushes and stops tracing if it was started (for a service's shutdown path). */
export function shutdownTelemetry(): Promise<void> {
  return current.shutdown();
}

/** The trace fields of a log line (see {@link activeTraceFields}). */
export interface TraceFields {
  trace_id?: string;
  span_id?: string;
  run_id?: string;
  task?: string;
}

/**
 * The trace fields of a log line: `trace_id` and `span_id` of the active span, if any, and
 * `run_id` and `task` (the step id) when that span is a run's (its `nexusflow.run_id` and
 * `nexusflow.step_id` attributes: a handler's span on the executor, an attempt's), unless
 * `withRun` is false (a logger that has them bound already, see `runLogger`).
 */
export function activeTraceFields(withRun = true): TraceFields {
  const span = trace.getActiveSpan();
  if (span === undefined) return {};
  const { traceId, spanId } = span.spanContext();
  const fields: TraceFields = { trace_id: traceId, span_id: spanId };
  if (!withRun) return fields;
  // The SDK's spans expose their attributes; the API's interface does not promise them.
  const attributes = (span as { attributes?: Record<string, unknown> }).attributes;
  const runId = attributes?.["nexusflow.run_id"];
  const stepId = attributes?.["nexusflow.step_id"];
  if (typeof runId === "string") fields.run_id = runId;
  if (typeof stepId === "string") fields.task = stepId;
  return fields;
}

/** A W3C `traceparent` of version 00: `00-<32 hex>-<16 hex>-<2 hex>`, lower case. */
const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** Whether `traceparent` has the shape of {@link TRACEPARENT} (its length tested first, cheaply). */
function wellFormed(traceparent: string | null | undefined): traceparent is string {
  return typeof traceparent === "string" && traceparent.length === 55 && TRACEPARENT.test(traceparent);
}

/**
 * The W3C `traceparent` of a span (or of the span active in `ctx`): `00-<trace id>-<span id>-<flags>`.
 * Undefined for no span or an invalid one.
 */
export function traceparentOf(spanOrContext: Span | Context | undefined): string | undefined {
  if (spanOrContext === undefined) return undefined;
  const span = "spanContext" in spanOrContext ? spanOrContext : trace.getSpan(spanOrContext);
  if (span === undefined) return undefined;
  const sc = span.spanContext();
  if (!trace.isSpanContextValid(sc)) return undefined;
  return `00-${sc.traceId}-${sc.spanId}-0${(sc.traceFlags & TraceFlags.SAMPLED).toString(16)}`;
}

/** The `traceparent` of the active span, or undefined (always undefined with tracing off). */
export function activeTraceparent(): string | undefined {
  return current.enabled ? traceparentOf(context.active()) : undefined;
}

/**
 * The remote span context a `traceparent` names; undefined for none, a malformed one, or one whose
 * trace or span id is all zeros (invalid). One test of its shape and three slices: it runs for every
 * lease an executor gets with tracing on, sampled or not.
 */
export function spanContextFromTraceparent(traceparent: string | null | undefined): SpanContext | undefined {
  if (!wellFormed(traceparent)) return undefined;
  const traceId = traceparent.slice(3, 35);
  const spanId = traceparent.slice(36, 52);
  if (traceId === INVALID_TRACEID || spanId === INVALID_SPANID) return undefined;
  return { traceId, spanId, traceFlags: parseInt(traceparent.slice(53), 16), isRemote: true };
}

/**
 * A context whose parent is the remote span a `traceparent` names (the root context for an
 * undefined or malformed one), for starting a child span in another process or after a restart.
 */
export function contextFromTraceparent(
  traceparent: string | undefined,
  base: Context = ROOT_CONTEXT,
): Context {
  const sc = spanContextFromTraceparent(traceparent);
  return sc === undefined ? base : trace.setSpanContext(base, sc);
}

/**
 * Whether a `traceparent` says its trace is recorded (its sampled flag); undefined for none or an
 * invalid one. A child of an unsampled parent records nothing under the parent-based sampler, so
 * callers skip making its span at all.
 */
export function traceparentSampled(traceparent: string | null | undefined): boolean | undefined {
  if (!wellFormed(traceparent)) return undefined;
  return (parseInt(traceparent.slice(53), 16) & TraceFlags.SAMPLED) !== 0;
}

/** The span handed out where tracing is off: records nothing, costs one shared object. */
export const NON_RECORDING_SPAN: Span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/** The tracers handed out by {@link tracer}, by name, while `tracersOf` is the current telemetry. */
let tracers = new Map<string, Tracer>();
let tracersOf: Telemetry | undefined;

/**
 * The tracer of a Nexusflow component (the global provider's; a no-op one with tracing off). Kept
 * by name until tracing starts or stops: `trace.getTracer` builds a key string and looks the tracer
 * up in the provider on every call, and spans are made per run and attempt.
 */
export function tracer(name: string): Tracer {
  if (tracersOf !== current) {
    tracers = new Map();
    tracersOf = current;
  }
  let found = tracers.get(name);
  if (found === undefined) {
    found = trace.getTracer(name);
    tracers.set(name, found);
  }
  return found;
}

export * from "./rpc.js";
