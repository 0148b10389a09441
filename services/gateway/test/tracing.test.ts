/**
 * Tracing on in a real gateway process (its main.ts under tsx): the REST call's span joins the
 * caller's trace (incoming `traceparent`) and reaches the OTLP endpoint, flushed when the gateway
 * stops. The endpoint is a plain HTTP server here that keeps what it is sent (OTLP/HTTP protobuf);
 * the whole run's trace is checked against Jaeger in the scheduler's tracing test.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { type AddressInfo } from "node:net";
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { after, describe, it } from "node:test";
import { freePort } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const MAIN = fileURLToPath(new URL("../src/main.ts", import.meta.url));
const TRACE_ID = "0af7651916cd43dd8448eb211c80319c";

describe("gateway tracing", () => {
  const exports: Buffer[] = [];
  const sink = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.url === "/v1/traces") exports.push(Buffer.concat(chunks));
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  after(() => sink.close());

  it("exports the REST call's span in the caller's trace, its log lines staying JSON", async () => {
    sink.listen(0, "127.0.0.1");
    await once(sink, "listening");
    const sinkPort = (sink.address() as AddressInfo).port;
    const port = await freePort();
    const env: Record<string, string | undefined> = { ...process.env };
    delete env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];
    const child = spawn(process.execPath, ["--import", "tsx", MAIN], {
      cwd: ROOT,
      env: {
        ...env,
        AUTH_DISABLED: "true",
        GATEWAY_PORT: String(port),
        METRICS_PORT: "off",
        SCHEDULER_ADDRESS: "127.0.0.1:1",
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${sinkPort}`,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    const exited = once(child, "exit");
    try {
      const status = await waitFor("the gateway answers", async () => {
        try {
          const res = await fetch(`http://127.0.0.1:${port}/v1/runs`, {
            headers: { traceparent: `00-${TRACE_ID}-b7ad6b7169203331-01` },
          });
          await res.arrayBuffer();
          return res.status;
        } catch {
          return undefined;
        }
      });
      assert.ok(status >= 400, `no scheduler behind the gateway, got ${status}`);
    } finally {
      child.kill("SIGTERM");
      await exited;
    }
    // Flushed on SIGTERM: the span of the REST call, in the caller's trace, from this service.
    const all = Buffer.concat(exports);
    assert.ok(all.includes(Buffer.from(TRACE_ID, "hex")), "no span of the caller's trace was exported");
    assert.ok(all.includes("nexusflow-gateway"), "spans do not name the service");
    assert.ok(all.includes("/v1/runs"), "the REST call's span is missing");
    for (const line of stdout.split("\n").filter((l) => l !== "")) JSON.parse(line);
  });
});
