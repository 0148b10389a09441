import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { ROOT_CONTEXT, context, trace } from "@opentelemetry/api";
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  StackContextManager,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { ConfigError, loadTelemetryConfig } from "../config.js";
import { createLogger, runLogger } from "../logger.js";
import {
  activeTraceFields,
  activeTraceparent,
  contextFromTraceparent,
  spanContextFromTraceparent,
  startTelemetry,
  traceparentOf,
  traceparentSampled,
  tracer,
  tracingEnabled,
} from "./index.js";
import { startTestTracing } from "./testing.js";

const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

function refuses(env: Record<string, string>, variable: string): void {
  assert.throws(
    () => loadTelemetryConfig("svc", env),
    (e: unknown) => e instanceof ConfigError && e.variable === variable,
  );
}

describe("tracing configuration (OTEL_*)", () => {
  it("is off unless an OTLP endpoint is set", () => {
    assert.equal(loadTelemetryConfig("svc", {}), undefined);
    assert.equal(loadTelemetryConfig("svc", { OTEL_SERVICE_NAME: "x" }), undefined);
  });

  it("sends to <endpoint>/v1/traces as the service, every trace, by default", () => {
    assert.deepEqual(
      loadTelemetryConfig("nexusflow-scheduler", { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318/" }),
      {
        tracesUrl: "http://c:4318/v1/traces",
        serviceName: "nexusflow-scheduler",
        sampleRatio: 1,
        headers: {},
        exportDelayMs: 200,
      },
    );
  });

  it("takes the traces endpoint as given, the service name, the sampler ratio and headers", () => {
    assert.deepEqual(
      loadTelemetryConfig("svc", {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://t:443/traces",
        OTEL_SERVICE_NAME: "mine",
        OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG: "0.1",
        OTEL_EXPORTER_OTLP_HEADERS: "api-key=a%20b, x=1",
        OTEL_BSP_SCHEDULE_DELAY: "5000",
      }),
      {
        tracesUrl: "https://t:443/traces",
        serviceName: "mine",
        sampleRatio: 0.1,
        headers: { "api-key": "a b", x: "1" },
        exportDelayMs: 5000,
      },
    );
    assert.equal(
      loadTelemetryConfig("svc", {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://c",
        OTEL_TRACES_SAMPLER: "always_off",
      })?.sampleRatio,
      0,
    );
  });

  it("is off with OTEL_SDK_DISABLED=true", () => {
    assert.equal(
      loadTelemetryConfig("svc", { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c", OTEL_SDK_DISABLED: "true" }),
      undefined,
    );
  });

  it("refuses bad values, naming the variable", () => {
    for (const bad of ["0", "-1", "1.5", "soon", "3600001"])
      refuses(
        { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c", OTEL_BSP_SCHEDULE_DELAY: bad },
        "OTEL_BSP_SCHEDULE_DELAY",
      );
    refuses({ OTEL_EXPORTER_OTLP_ENDPOINT: "grpc://c:4317" }, "OTEL_EXPORTER_OTLP_ENDPOINT");
    refuses(
      { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c", OTEL_TRACES_SAMPLER: "sometimes" },
      "OTEL_TRACES_SAMPLER",
    );
    refuses(
      {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://c",
        OTEL_TRACES_SAMPLER: "traceidratio",
        OTEL_TRACES_SAMPLER_ARG: "2",
      },
      "OTEL_TRACES_SAMPLER_ARG",
    );
    refuses(
      { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c", OTEL_EXPORTER_OTLP_HEADERS: "novalue" },
      "OTEL_EXPORTER_OTLP_HEADERS",
    );
  });
});

describe("tracing off", () => {
  it("starts nothing: no SDK, no recording spans, no trace context", async () => {
    const telemetry = await startTelemetry(undefined);
    assert.equal(telemetry.enabled, false);
    assert.equal(tracingEnabled(), false);
    assert.equal(trace.getTracer("t").startSpan("s").isRecording(), false);
    assert.equal(activeTraceparent(), undefined);
    await telemetry.shutdown();
  });
});

describe("tracer", () => {
  it("is kept by name while tracing is off, and the provider's once tracing starts, until it stops", async () => {
    const off = tracer("component");
    assert.equal(tracer("component"), off);
    assert.equal(off.startSpan("s").isRecording(), false);
    const tracing = await startTestTracing();
    try {
      const on = tracer("component");
      assert.equal(tracer("component"), on);
      assert.notEqual(tracer("other"), on);
      const span = on.startSpan("recorded");
      assert.equal(span.isRecording(), true);
      span.end();
      assert.deepEqual(
        tracing.spans().map((s) => s.name),
        ["recorded"],
      );
    } finally {
      await tracing.stop();
    }
    assert.equal(tracer("component").startSpan("s").isRecording(), false);
  });
});

describe("traceparent", () => {
  it("round-trips through a context", () => {
    const ctx = contextFromTraceparent(TRACEPARENT);
    assert.equal(traceparentOf(ctx), TRACEPARENT);
    assert.equal(trace.getSpanContext(ctx)?.isRemote, true);
  });

  it("names the remote span context of a valid value only", () => {
    assert.deepEqual(spanContextFromTraceparent(TRACEPARENT), {
      traceId: "0af7651916cd43dd8448eb211c80319c",
      spanId: "b7ad6b7169203331",
      traceFlags: 1,
      isRemote: true,
    });
    assert.equal(spanContextFromTraceparent(TRACEPARENT.replace(/-01$/, "-00"))?.traceFlags, 0);
    for (const bad of [
      undefined,
      null,
      "",
      TRACEPARENT.toUpperCase().replace(/^00/, "00"),
      `${TRACEPARENT}0`,
      TRACEPARENT.replace(/^00/, "01"),
      TRACEPARENT.replace("-b7ad", "_b7ad"),
      TRACEPARENT.replace("0af7", "0ag7"),
      `00-${"0".repeat(32)}-b7ad6b7169203331-01`,
      `00-0af7651916cd43dd8448eb211c80319c-${"0".repeat(16)}-01`,
    ])
      assert.equal(spanContextFromTraceparent(bad), undefined, String(bad));
  });

  it("gives the root context for a missing or malformed value", () => {
    for (const bad of [
      undefined,
      "",
      "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "00-0-0-01",
    ]) {
      assert.equal(contextFromTraceparent(bad), ROOT_CONTEXT);
    }
    assert.equal(contextFromTraceparent(`00-${"0".repeat(32)}-b7ad6b7169203331-01`), ROOT_CONTEXT);
    assert.equal(traceparentOf(undefined), undefined);
    assert.equal(traceparentOf(ROOT_CONTEXT), undefined);
  });
});

describe("log lines inside a span", () => {
  it("carry trace_id, span_id, run_id and task when the logger is asked to", () => {
    const exporter = new InMemorySpanExporter();
    const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
    const manager = new StackContextManager().enable();
    const lines: Record<string, unknown>[] = [];
    const raw: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        raw.push(chunk.toString());
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    const traced = createLogger("svc", "info", { traceContext: true, destination: sink });
    const plain = createLogger("svc", "info", { destination: sink });
    const span = provider
      .getTracer("t")
      .startSpan(
        "work",
        { attributes: { "nexusflow.run_id": "r1", "nexusflow.step_id": "charge" } },
        contextFromTraceparent(TRACEPARENT),
      );
    const { traceId, spanId } = span.spanContext();
    context.setGlobalContextManager(manager);
    try {
      context.with(trace.setSpan(context.active(), span), () => {
        assert.deepEqual(activeTraceFields(), {
          trace_id: traceId,
          span_id: spanId,
          run_id: "r1",
          task: "charge",
        });
        traced.info("inside");
        plain.info("inside, plain");
        // A logger bound to the run (the executor's per-attempt one) and its children: the run's
        // fields once, the span's ids from the span.
        runLogger(traced, { run_id: "r1", task: "charge", task_run_id: "t1" })
          .child({ part: 1 })
          .info("bound");
      });
      traced.info("outside");
    } finally {
      context.disable();
      span.end();
    }
    assert.equal(traceId, "0af7651916cd43dd8448eb211c80319c");
    assert.equal(lines[0]?.["trace_id"], traceId);
    assert.equal(lines[0]?.["span_id"], spanId);
    assert.equal(lines[0]?.["run_id"], "r1");
    assert.equal(lines[0]?.["task"], "charge");
    assert.equal(lines[1]?.["trace_id"], undefined);
    assert.equal(lines[2]?.["span_id"], spanId);
    assert.equal(lines[2]?.["task_run_id"], "t1");
    assert.equal(raw[2]?.match(/"run_id"/g)?.length, 1, raw[2]);
    assert.equal(raw[2]?.match(/"task"/g)?.length, 1, raw[2]);
    assert.equal(lines[3]?.["trace_id"], undefined);
  });

  it("says whether its trace is sampled, and nothing for a missing or malformed one", () => {
    assert.equal(traceparentSampled(TRACEPARENT), true);
    assert.equal(traceparentSampled(TRACEPARENT.replace(/-01$/, "-00")), false);
    assert.equal(traceparentSampled(TRACEPARENT.replace(/-01$/, "-03")), true);
    for (const bad of [
      undefined,
      null,
      "",
      "00-0-0-01",
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
    ])
      assert.equal(traceparentSampled(bad), undefined, String(bad));
  });
});
