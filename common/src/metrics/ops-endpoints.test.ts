/**
 * The probes without metrics: with HEALTH_PORT the ops endpoints serve /healthz and /readyz on a
 * port of their own (METRICS_PORT=off, or another port), on the metrics server when both name one
 * port, and a probe port in use stops the service with a message naming HEALTH_PORT.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { describe, it } from "node:test";
import { loadExecutorConfig } from "../config.js";
import { createLogger } from "../logger.js";
import { MetricsListenError, createMetricsRegistry, startOpsEndpoints } from "./index.js";

const log = createLogger("test", "silent");

async function get(url: string): Promise<[number, string]> {
  const res = await fetch(url);
  return [res.status, (await res.text()).trim()];
}

describe("ops endpoints", () => {
  it("serve /healthz and /readyz on HEALTH_PORT with METRICS_PORT=off, and no /metrics", async () => {
    const config = loadExecutorConfig({ METRICS_PORT: "off", HEALTH_PORT: "0" });
    let notReady: string | undefined = "no session with the scheduler (CONNECTING)";
    const ops = await startOpsEndpoints({
      ...config,
      registry: undefined,
      log,
      ready: () => Promise.resolve(notReady),
    });
    try {
      assert.equal(ops.metrics, undefined);
      const base = ops.probes?.url.replace(/\/metrics$/, "");
      assert.ok(base !== undefined);
      assert.deepEqual(await get(`${base}/healthz`), [200, "ok"]);
      assert.deepEqual(await get(`${base}/readyz`), [
        503,
        "not ready: no session with the scheduler (CONNECTING)",
      ]);
      notReady = undefined;
      assert.deepEqual(await get(`${base}/readyz`), [200, "ready"]);
      const [status, text] = await get(`${base}/metrics`);
      assert.equal(status, 404);
      assert.match(text, /serves \/healthz and \/readyz only/);
    } finally {
      await ops.close();
    }
  });

  it("serve the probes beside /metrics when HEALTH_PORT is another port, on one server when it is the same", async () => {
    const registry = createMetricsRegistry();
    const apart = await startOpsEndpoints({
      ...loadExecutorConfig({ METRICS_PORT: "0", HEALTH_PORT: "0" }),
      registry,
      log,
      ready: () => Promise.resolve(undefined),
    });
    try {
      // "0" and "0" name the same port: one server.
      assert.equal(apart.probes, undefined);
      assert.ok(apart.metrics !== undefined);
      assert.equal((await get(apart.metrics.url))[0], 200);
      assert.equal((await get(apart.metrics.url.replace(/metrics$/, "readyz")))[0], 200);
    } finally {
      await apart.close();
    }
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen({ host: "127.0.0.1", port: 0 }, resolve));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const two = await startOpsEndpoints({
        ...loadExecutorConfig({ METRICS_PORT: "0", HEALTH_PORT: "1" }),
        probes: { host: "127.0.0.1", port: 0, onMetricsPort: false },
        registry,
        log,
        ready: () => Promise.resolve(undefined),
      });
      try {
        assert.ok(two.metrics !== undefined && two.probes !== undefined);
        assert.notEqual(two.metrics.port, two.probes.port);
        assert.equal((await get(two.metrics.url))[0], 200);
        assert.equal((await get(two.probes.url.replace(/metrics$/, "readyz")))[0], 200);
        assert.equal((await get(two.probes.url))[0], 404);
      } finally {
        await two.close();
      }
      // The probe port taken: the service must not start without its probes; the metrics server
      // it had started is closed again.
      await assert.rejects(
        startOpsEndpoints({
          ...loadExecutorConfig({ METRICS_PORT: "0", HEALTH_PORT: String(port) }),
          registry,
          log,
        }),
        (e: unknown) =>
          e instanceof MetricsListenError && e.code === "EADDRINUSE" && e.message.startsWith("HEALTH_PORT: "),
      );
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it("serve nothing with METRICS_PORT=off and no HEALTH_PORT", async () => {
    const ops = await startOpsEndpoints({
      ...loadExecutorConfig({ METRICS_PORT: "off" }),
      registry: undefined,
      log,
    });
    assert.equal(ops.metrics, undefined);
    assert.equal(ops.probes, undefined);
    await ops.close();
  });
});
