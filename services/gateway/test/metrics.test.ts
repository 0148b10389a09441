/**
 * The gateway's metrics over the wire: calls over gRPC, Connect and REST are counted by route,
 * protocol and status with their durations, refused tokens by reason, and the calls forwarded to
 * the upstream (a real HTTP/2 gRPC server here) by method and code; scraped from the metrics
 * endpoint as Prometheus would.
 */
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, type ConnectRouter, createClient } from "@connectrpc/connect";
import {
  Http2SessionManager,
  connectNodeAdapter,
  createConnectTransport,
  createGrpcTransport,
} from "@connectrpc/connect-node";
import { createTokenVerifier } from "@nexusflow/common";
import { type MetricsServer, createMetricsRegistry, listenMetrics } from "@nexusflow/common/metrics";
import { RunStatus, WorkflowService } from "@nexusflow/gen";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";

function fakeScheduler(router: ConnectRouter): void {
  router.service(WorkflowService, {
    getRun(req) {
      if (req.runId === "missing") throw new ConnectError("no such run", Code.NotFound);
      return { run: { id: req.runId, status: RunStatus.RUNNING } };
    },
    startRun(req) {
      return { run: { id: `run-of-${req.workflowName}` }, created: true };
    },
  });
}

/** The value of the sample `name{labels}` in a scrape, 0 when absent. */
function sample(text: string, name: string, labels: Record<string, string>): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const inside = line.slice(name.length + 1, line.indexOf("}"));
    const have = inside.split(",");
    if (want.every((w) => have.includes(w))) return Number(line.slice(line.indexOf("} ") + 2));
  }
  return 0;
}

describe("gateway metrics", () => {
  let keys: TestKeys;
  let upstream: http2.Http2Server;
  let gateway: Gateway;
  let metrics: MetricsServer;
  let url: string;
  let sessions: Http2SessionManager;

  before(async () => {
    keys = await createTestKeys();
    upstream = http2.createServer(connectNodeAdapter({ routes: fakeScheduler }));
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    const registry = createMetricsRegistry();
    gateway = createGateway({
      schedulerAddress: `127.0.0.1:${(upstream.address() as AddressInfo).port}`,
      port: 0,
      verifier: await createTokenVerifier({
        publicKeyFiles: [keys.keys.EdDSA.jwkFile],
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
      metrics: registry,
      drainTimeoutMs: 2000,
    });
    ({ url } = await gateway.listen());
    metrics = await listenMetrics({ registry, port: 0 });
    sessions = new Http2SessionManager(url);
  });

  after(async () => {
    sessions.abort();
    await gateway.close();
    await metrics.close();
    await new Promise((resolve) => upstream.close(resolve));
    await keys.close();
  });

  it("counts requests by route, protocol and status, token rejections by reason, and upstream calls", async () => {
    const good = await keys.sign(keys.keys.EdDSA, { scope: "runs:read runs:write" });
    const readOnly = await keys.sign(keys.keys.EdDSA, { scope: "runs:read" });
    const expired = await keys.sign(keys.keys.EdDSA, { scope: "runs:write", expIn: -3600 });
    const elsewhere = await keys.sign(keys.keys.EdDSA, { scope: "runs:write", aud: "another-api" });
    const untrusted = await keys.sign(keys.stranger, { scope: "runs:write" });
    const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
    const grpc = createClient(
      WorkflowService,
      createGrpcTransport({ baseUrl: url, sessionManager: sessions }),
    );
    const connect = createClient(
      WorkflowService,
      createConnectTransport({ baseUrl: url, httpVersion: "1.1" }),
    );

    await grpc.startRun({ workflowName: "a" }, auth(good));
    await grpc.startRun({ workflowName: "b" }, auth(good));
    await connect.getRun({ runId: "r1" }, auth(good));
    await assert.rejects(
      connect.getRun({ runId: "missing" }, auth(good)),
      (e) => e instanceof ConnectError && e.code === Code.NotFound,
    );
    const rest = await fetch(`${url}/v1/workflows/c/runs`, { method: "POST", body: "{}", ...auth(good) });
    assert.equal(rest.status, 200);
    const refused = [
      () => grpc.startRun({ workflowName: "a" }),
      () => grpc.startRun({ workflowName: "a" }, { headers: { authorization: "Basic abc" } }),
      () => grpc.startRun({ workflowName: "a" }, auth(expired)),
      () => grpc.startRun({ workflowName: "a" }, auth(elsewhere)),
      () => grpc.startRun({ workflowName: "a" }, auth(untrusted)),
      () => grpc.startRun({ workflowName: "a" }, auth(readOnly)),
    ];
    for (const call of refused) await assert.rejects(call(), ConnectError);
    const restRefused = await fetch(`${url}/v1/workflows/c/runs`, { method: "POST", body: "{}" });
    assert.equal(restRefused.status, 401);

    const text = await (await fetch(metrics.url)).text();
    const requests = "nexusflow_gateway_requests_total";
    const startRun = "nexusflow.v1.WorkflowService/StartRun";
    const getRun = "nexusflow.v1.WorkflowService/GetRun";
    assert.equal(sample(text, requests, { route: startRun, protocol: "grpc", status: "OK" }), 2);
    assert.equal(sample(text, requests, { route: getRun, protocol: "connect", status: "OK" }), 1);
    assert.equal(sample(text, requests, { route: getRun, protocol: "connect", status: "NOT_FOUND" }), 1);
    assert.equal(sample(text, requests, { route: startRun, protocol: "rest", status: "OK" }), 1);
    assert.equal(sample(text, requests, { route: startRun, protocol: "grpc", status: "UNAUTHENTICATED" }), 5);
    assert.equal(
      sample(text, requests, { route: startRun, protocol: "grpc", status: "PERMISSION_DENIED" }),
      1,
    );
    assert.equal(sample(text, requests, { route: startRun, protocol: "rest", status: "UNAUTHENTICATED" }), 1);
    assert.equal(
      sample(text, "nexusflow_gateway_request_duration_seconds_count", { route: startRun, protocol: "grpc" }),
      2,
    );
    const rejections = "nexusflow_gateway_jwt_rejections_total";
    assert.equal(sample(text, rejections, { reason: "missing_token" }), 2);
    assert.equal(sample(text, rejections, { reason: "malformed_header" }), 1);
    assert.equal(sample(text, rejections, { reason: "expired" }), 1);
    assert.equal(sample(text, rejections, { reason: "audience" }), 1);
    assert.equal(sample(text, rejections, { reason: "unknown_key" }), 1);
    assert.equal(sample(text, rejections, { reason: "missing_scope" }), 1);
    const upstreamCalls = "nexusflow_grpc_client_duration_seconds_count";
    assert.equal(sample(text, upstreamCalls, { method: startRun, code: "OK" }), 3);
    assert.equal(sample(text, upstreamCalls, { method: getRun, code: "NOT_FOUND" }), 1);
    // Node's default process metrics are there too.
    assert.match(text, /^process_resident_memory_bytes \d+/m);
  });
});
