/**
 * Tracing on in a test process, with the finished spans kept in memory (no SDK, no exporter) and
 * W3C trace context propagation, as the SDK sets it up:
 * `const tracing = await startTestTracing(); ...; tracing.spans()`; `stop()` turns it off again.
 */
import { context, propagation, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import {
  InMemorySpanExporter,
  type ReadableSpan,
  type Sampler,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { startTracingWith } from "./index.js";

/** Tracing in a test: the spans finished so far, and how to stop. */
export interface TestTracing {
  spans(): readonly ReadableSpan[];
  stop(): Promise<void>;
}

/**
 * Turns tracing on for this process with an in-memory exporter; `sampler` decides what is
 * recorded (default: every span, the SDK's parent-based always-on).
 */
export async function startTestTracing(options: { sampler?: Sampler } = {}): Promise<TestTracing> {
  const exporter = new InMemorySpanExporter();
  const provider = new TracerProvider({
    spanProcessors: [new SimpleSpanProcessor({ exporter })],
    ...(options.sampler === undefined ? {} : { sampler: options.sampler }),
  });
  const manager = new AsyncLocalStorageContextManager().enable();
  const telemetry = await startTracingWith(() => {
    context.setGlobalContextManager(manager);
    trace.setGlobalTracerProvider(provider);
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    return Promise.resolve(async () => {
      await provider.shutdown();
      trace.disable();
      propagation.disable();
      context.disable();
    });
  });
  return { spans: () => exporter.getFinishedSpans(), stop: () => telemetry.shutdown() };
}
