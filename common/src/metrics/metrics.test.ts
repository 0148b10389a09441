import assert from "node:assert/strict";
import * as net from "node:net";
import { describe, it } from "node:test";
import { ConfigError, loadExecutorConfig, loadGatewayConfig, loadSchedulerConfig } from "../config.js";
import { createLogger } from "../logger.js";
import {
  Children2,
  Counter,
  Histogram,
  MetricsListenError,
  createMetricsRegistry,
  listenMetrics,
  observeWithTrace,
  sampledTraceId,
  startMetricsEndpoint,
} from "./index.js";

describe("metrics configuration", () => {
  it("gives each service its own default port, 0 for a free one, off to turn it off", () => {
    const auth = { AUTH_DISABLED: "true" };
    assert.deepEqual(loadSchedulerConfig(auth).metrics, { host: "127.0.0.1", port: 9464, explicit: false });
    assert.equal(loadExecutorConfig({}).metrics?.port, 9465);
    assert.equal(loadGatewayConfig(auth).metrics?.port, 9466);
    assert.deepEqual(loadGatewayConfig({ ...auth, METRICS_PORT: "0", METRICS_HOST: "0.0.0.0" }).metrics, {
      host: "0.0.0.0",
      port: 0,
      explicit: true,
    });
    assert.equal(loadExecutorConfig({ METRICS_PORT: "off" }).metrics, undefined);
    assert.equal(loadExecutorConfig({ METRICS_PORT: "OFF" }).metrics, undefined);
    for (const bad of ["no", "-1", "70000"]) {
      assert.throws(
        () => loadExecutorConfig({ METRICS_PORT: bad }),
        (e: unknown) => e instanceof ConfigError && e.variable === "METRICS_PORT",
      );
    }
  });
});

describe("metrics endpoint", () => {
  it("serves the registry with the default process metrics at /metrics and nothing else", async () => {
    const registry = createMetricsRegistry();
    const counter = new Counter({
      name: "nexusflow_test_total",
      help: "test",
      labelNames: ["kind"],
      registers: [registry],
    });
    new Children2(
      new Counter({
        name: "nexusflow_pairs_total",
        help: "t",
        labelNames: ["x", "y"],
        registers: [registry],
      }),
    )
      .get("x1", "y1")
      .inc(2);
    counter.labels("a").inc();
    const server = await listenMetrics({ registry, port: 0 });
    try {
      assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const res = await fetch(server.url);
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^application\/openmetrics-text; version=1\.0\.0/);
      const text = await res.text();
      assert.match(text, /^nexusflow_test_total\{kind="a"\} 1$/m);
      assert.match(text, /^nexusflow_pairs_total\{x="x1",y="y1"\} 2$/m);
      assert.match(text, /^process_cpu_user_seconds_total /m);
      assert.match(text, /^nodejs_eventloop_lag_seconds /m);
      assert.match(text, /^# EOF$/m);
      assert.equal((await fetch(server.url.replace("/metrics", "/"))).status, 404);
      assert.equal((await fetch(server.url, { method: "POST" })).status, 405);
    } finally {
      await server.close();
    }
    await assert.rejects(fetch(server.url));
  });

  it("carries the trace id of an observation made in a sampled trace as its bucket's exemplar", async () => {
    const registry = createMetricsRegistry();
    const histogram = new Histogram({
      name: "nexusflow_test_seconds",
      help: "t",
      labelNames: ["kind"],
      buckets: [0.1, 1],
      enableExemplars: true,
      registers: [registry],
    });
    const traceId = sampledTraceId("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert.equal(traceId, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert.equal(sampledTraceId("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), undefined);
    assert.equal(sampledTraceId(null), undefined);
    assert.equal(sampledTraceId("garbage"), undefined);
    observeWithTrace(histogram, { kind: "a" }, 0.5, traceId);
    histogram.labels("a").observe(0.05); // no trace: no exemplar
    const text = await registry.metrics();
    assert.match(
      text,
      /^nexusflow_test_seconds_bucket\{le="1",kind="a"\} 2 # \{trace_id="4bf92f3577b34da6a3ce929d0e0e4736"\} 0\.5 \d+(\.\d+)?$/m,
    );
    assert.match(text, /^nexusflow_test_seconds_bucket\{le="0\.1",kind="a"\} 1$/m);
  });

  it("fails on an explicit port in use, and only warns on the default port in use", async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen({ host: "127.0.0.1", port: 0 }, resolve));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const registry = createMetricsRegistry();
      const log = createLogger("test", "silent");
      await assert.rejects(
        startMetricsEndpoint({ host: "127.0.0.1", port, explicit: true }, registry, log),
        (e: unknown) =>
          e instanceof MetricsListenError &&
          e.code === "EADDRINUSE" &&
          e.message.startsWith("METRICS_PORT: "),
      );
      assert.equal(
        await startMetricsEndpoint({ host: "127.0.0.1", port, explicit: false }, registry, log),
        undefined,
      );
      assert.equal(await startMetricsEndpoint(undefined, registry, log), undefined);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});
