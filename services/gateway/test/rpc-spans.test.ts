/**
 * The gateway's span per RPC (src/tracing.ts), in process with tracing on (an in-memory exporter):
 * gRPC and Connect calls over HTTP/2, which no instrumentation sees, and a REST call each get a
 * SERVER span after the RPC conventions, the child of the caller's `traceparent`, and the call
 * reaches the upstream (a router transport standing for the scheduler) with that span's
 * `traceparent`, so the scheduler's span is its child. The whole path through real processes is
 * checked against Jaeger in the scheduler's tracing-jaeger test.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { type TestTracing, startTestTracing } from "@nexusflow/common/telemetry/testing";
import { WorkflowService } from "@nexusflow/gen";
import { type Gateway, createGateway } from "../src/server.js";

type Span = ReturnType<TestTracing["spans"]>[number];

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN = "00f067aa0ba902b7";
const TRACEPARENT = `00-${TRACE_ID}-${CALLER_SPAN}-01`;

describe("the gateway's RPC spans", () => {
  let tracing: TestTracing;
  let gateway: Gateway;
  let url = "";
  /** The traceparent each upstream StartRun received, by the workflow name it was called with. */
  const upstream = new Map<string, string | null>();

  before(async () => {
    tracing = await startTestTracing();
    gateway = createGateway({
      schedulerAddress: "127.0.0.1:1",
      port: 0,
      drainTimeoutMs: 2000,
      transport: createRouterTransport(({ service }) => {
        service(WorkflowService, {
          startRun(req, ctx) {
            upstream.set(req.workflowName, ctx.requestHeader.get("traceparent"));
            if (req.workflowName === "unavailable") throw new ConnectError("down", Code.Unavailable);
            if (req.workflowName === "missing") throw new ConnectError("no such workflow", Code.NotFound);
            return { run: { id: `run-of-${req.workflowName}`, workflowName: req.workflowName } };
          },
        });
      }),
    });
    ({ url } = await gateway.listen());
  });

  after(async () => {
    await gateway?.close();
    await tracing?.stop();
  });

  const headers = { traceparent: TRACEPARENT };
  const spanOf = (workflow: string): Span => {
    const traceparent = upstream.get(workflow);
    assert.ok(traceparent, `the upstream call of ${workflow} carries a traceparent`);
    const [, traceId, spanId] = traceparent.split("-");
    assert.equal(traceId, TRACE_ID, "the caller's trace");
    const span = tracing.spans().find((s) => s.spanContext().spanId === spanId);
    assert.ok(span, `the upstream call's parent is a gateway span (${workflow})`);
    assert.equal(span.name, "nexusflow.v1.WorkflowService/StartRun");
    assert.equal(span.kind, 1 /* SERVER */);
    assert.equal(span.parentSpanContext?.spanId, CALLER_SPAN, "the caller's span is its parent");
    assert.equal(span.attributes["rpc.service"], "nexusflow.v1.WorkflowService");
    assert.equal(span.attributes["rpc.method"], "StartRun");
    return span;
  };

  it("gRPC over HTTP/2: a SERVER span with the gRPC status, parent of the upstream call", async () => {
    const client = createClient(WorkflowService, createGrpcTransport({ baseUrl: url }));
    await client.startRun({ workflowName: "over-grpc" }, { headers });
    const span = spanOf("over-grpc");
    assert.equal(span.attributes["rpc.system"], "grpc");
    assert.equal(span.attributes["rpc.grpc.status_code"], 0);
    assert.equal(span.attributes["nexusflow.gateway.protocol"], "grpc");
    assert.equal(span.status.code, 0 /* UNSET */);

    await assert.rejects(client.startRun({ workflowName: "unavailable" }, { headers }));
    const failed = spanOf("unavailable");
    assert.equal(failed.attributes["rpc.grpc.status_code"], Code.Unavailable);
    assert.equal(failed.status.code, 2 /* ERROR */, "UNAVAILABLE is a server error");
  });

  it("Connect over HTTP/2: a SERVER span with Connect's error code", async () => {
    const client = createClient(WorkflowService, createConnectTransport({ baseUrl: url, httpVersion: "2" }));
    await client.startRun({ workflowName: "over-connect" }, { headers });
    const span = spanOf("over-connect");
    assert.equal(span.attributes["rpc.system"], "connect_rpc");
    assert.equal(span.attributes["rpc.connect_rpc.error_code"], undefined);

    await assert.rejects(client.startRun({ workflowName: "missing" }, { headers }));
    const failed = spanOf("missing");
    assert.equal(failed.attributes["rpc.connect_rpc.error_code"], "not_found");
    assert.equal(failed.status.code, 0, "NOT_FOUND is the caller's error, not the server's");
  });

  it("REST: the routed call's span, parent of the upstream call", async () => {
    const res = await fetch(`${url}/v1/workflows/over-rest/runs`, {
      method: "POST",
      headers: { ...headers, "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(res.status, 200, await res.text());
    const span = spanOf("over-rest");
    assert.equal(span.attributes["nexusflow.gateway.protocol"], "rest");
  });
});
