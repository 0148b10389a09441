/**
 * The OpenTelemetry SDK of a service, loaded by `startTelemetry` only when tracing is on: the
 * OTLP/HTTP (protobuf) exporter in a worker thread behind a batching processor
 * (./worker-span-processor.ts), a parent-based ratio sampler, W3C trace
 * context, and the gRPC, HTTP and pg instrumentations. Kafka publishes are traced by hand in the
 * outbox relay's publisher: each event's message carries the context of the span that caused it,
 * which the kafkajs instrumentation would replace with that of its own send span. The instrumentations patch ESM
 * imports through import-in-the-middle's loader hook, registered here for just their modules.
 */
import { register } from "node:module";
import { GrpcTracing } from "./grpc-instrumentation.js";
import { HttpInstrumentation } from "@opentelemetry/instrumentation-http";
import { PgInstrumentation } from "@opentelemetry/instrumentation-pg";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { ParentBasedSampler, TraceIdRatioBasedSampler } from "@opentelemetry/sdk-trace";
import { createAddHookMessageChannel } from "import-in-the-middle";
import { DEFAULT_EXPORT_DELAY_MS, type TelemetryConfig } from "./index.js";
import { WorkerSpanProcessor } from "./worker-span-processor.js";

/** Starts the SDK; resolves to its shutdown (flush, then stop). */
export async function startSdk(config: TelemetryConfig): Promise<() => Promise<void>> {
  const { registerOptions, waitForAllMessagesAcknowledged } = createAddHookMessageChannel();
  register("import-in-the-middle/hook.mjs", import.meta.url, registerOptions);
  const sdk = new NodeSDK({
    serviceName: config.serviceName,
    autoDetectResources: false,
    // Logs go to stdout through pino, metrics to Prometheus: the SDK exports traces only. Without
    // an explicit empty list of metric readers the SDK would add an OTLP metrics exporter
    // (OTEL_METRICS_EXPORTER defaults to otlp), and the instrumentations would record a duration
    // histogram for every call and query, traced or not.
    logRecordProcessors: [],
    metricReaders: [],
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.sampleRatio) }),
    spanProcessors: [
      // Serialized and sent in a worker thread, off the service's own threads
      // (bench/notes/14-session-twelve.md).
      new WorkerSpanProcessor({
        url: config.tracesUrl,
        headers: config.headers,
        exportDelayMs: config.exportDelayMs ?? DEFAULT_EXPORT_DELAY_MS,
        // `otlp-scheduler`, `otlp-executor`, `otlp-gateway` in `top -H` and /proc/<pid>/task.
        threadName: `otlp-${config.serviceName.replace(/^nexusflow-/, "")}`,
        // Spans dropped (the export queue full) and a failed export thread are process warnings,
        // which a service logs as JSON lines through its logger (logProcessWarnings).
        warn: (message) => process.emitWarning(message, "TraceExportWarning"),
      }),
    ],
    instrumentations: [
      // Not the executors' Session stream: it lasts as long as the executor is attached (hours), so
      // its span would never end in time to be seen, and every report it carries would run in its
      // context. A task's spans come from its lease's trace context instead (one trace per run).
      new GrpcTracing({ ignoreGrpcMethods: ["Session"] }),
      new HttpInstrumentation(),
      new PgInstrumentation({ requireParentSpan: true }),
    ],
  });
  sdk.start();
  await waitForAllMessagesAcknowledged();
  return () => sdk.shutdown();
}
