/**
 * Traces as an operator sees them: Jaeger all-in-one (OTLP in, query API out) receives the spans
 * of real scheduler, executor and gateway processes (their main.ts, tracing on through the OTEL_*
 * variables) and Kafka publishes. A run of a diamond workflow started through the REST API with a
 * `traceparent` is one trace holding the REST call, the gateway's span of the RPC it is routed to,
 * the scheduler's run and attempt spans, each step's handler span on the executor, a user
 * handler's own child span and the Kafka publishes; runs started with gRPC and Connect over HTTP/2
 * are one trace each, from the gateway's span of the call (the HTTP instrumentation sees only
 * HTTP/1.1); a run that survives a scheduler restart (SIGKILL) is still one trace.
 *
 * Needs Jaeger (scripts/build-tools.sh builds it into .cache/tools/bin) and Kafka (KAFKA_BROKERS):
 * under CI=true a missing one fails the test, locally it skips.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it, type TestContext } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { freePort, jsonToValue } from "@nexusflow/common";
import { requireService } from "@nexusflow/common/testing";
import { RunStatus, TaskStatus, WorkflowService } from "@nexusflow/gen";
import pg from "pg";
import { startTestDatabase, waitFor, waitForRun, workflowClient } from "../support.js";
import { TRACED_DIAMOND, registerSpec } from "./harness.js";
import {
  REPO_ROOT,
  ServiceProcess,
  killAll,
  startExecutorProcess,
  startSchedulerProcess,
} from "./processes.js";

const JAEGER = join(REPO_ROOT, ".cache/tools/bin/jaeger");
const GATEWAY_MAIN = join(REPO_ROOT, "services/gateway/src/main.ts");

interface JaegerSpan {
  spanID: string;
  operationName: string;
  processID: string;
  references: { refType: string; spanID: string }[];
  tags: { key: string; value: unknown }[];
}
interface JaegerTrace {
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string }>;
}

function requireJaeger(t: TestContext): boolean {
  if (existsSync(JAEGER)) return true;
  const message = `${JAEGER} is missing: run scripts/build-tools.sh`;
  if (process.env["CI"] === "true") throw new Error(`${message} (required under CI=true)`);
  t.skip(message);
  return false;
}

/** Jaeger v2 all-in-one on free ports, in-memory storage. */
async function startJaeger(dir: string): Promise<{ child: ChildProcess; otlp: string; query: string }> {
  const [otlp, http, grpc] = [await freePort(), await freePort(), await freePort()];
  const config = join(dir, "jaeger.yaml");
  await writeFile(
    config,
    `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:${http}
    grpc:
      endpoint: 127.0.0.1:${grpc}
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:${otlp}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`,
  );
  const child = spawn(JAEGER, ["--config", config], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const query = `http://127.0.0.1:${http}`;
  await waitFor(
    "Jaeger's query API",
    async () => {
      if (child.exitCode !== null) throw new Error(`jaeger exited: ${stderr}`);
      return (await fetch(`${query}/api/services`)).ok ? true : undefined;
    },
    60_000,
  );
  return { child, otlp: `http://127.0.0.1:${otlp}`, query };
}

async function jaegerTrace(query: string, traceId: string): Promise<JaegerTrace | undefined> {
  const res = await fetch(`${query}/api/traces/${traceId}`);
  if (!res.ok) return undefined;
  const body = (await res.json()) as { data?: JaegerTrace[] };
  return body.data?.[0];
}

const tag = (s: JaegerSpan, key: string): unknown => s.tags.find((x) => x.key === key)?.value;
const service = (tr: JaegerTrace, s: JaegerSpan): string | undefined =>
  tr.processes[s.processID]?.serviceName;
const parentOf = (s: JaegerSpan): string | undefined =>
  s.references.find((r) => r.refType === "CHILD_OF")?.spanID;

const HANDLERS = `
import { existsSync } from "node:fs";
import { setTimeout as delay } from "node:timers/promises";
export const handlers = {
  "traced.step": async (input, ctx) => {
    const span = ctx.startSpan("user work", { "user.step": ctx.stepId });
    span.end();
    return { x: input.x + 1 };
  },
  // Runs until the file named by the input exists (the test creates it after the restart).
  "traced.gate": async (input, ctx) => {
    while (!existsSync(input.file)) await delay(25, undefined, { signal: ctx.signal });
    return { x: 1 };
  },
};
`;

describe("traces in Jaeger", () => {
  const cleanup: (() => Promise<void>)[] = [];
  after(async () => {
    await killAll();
    for (const c of cleanup.reverse()) await c();
  });

  it("a REST-started diamond run is one trace, across processes, Kafka and a scheduler restart", async (t) => {
    if (!requireJaeger(t)) return;
    const brokers = requireService(t, "KAFKA_BROKERS");
    if (brokers === undefined) return;
    const dir = await mkdtemp(join(tmpdir(), "nf-jaeger-"));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const jaeger = await startJaeger(dir);
    cleanup.push(async () => {
      jaeger.child.kill("SIGKILL");
      await new Promise((r) => (jaeger.child.exitCode === null ? jaeger.child.once("exit", r) : r(null)));
    });
    const db = await startTestDatabase();
    cleanup.push(() => db.close());
    const handlers = join(dir, "handlers.mjs");
    await writeFile(handlers, HANDLERS);
    const topic = `nexusflow.tracing.${Date.now()}`;
    const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: jaeger.otlp };
    const schedulerEnv = { ...otel, KAFKA_BROKERS: brokers, KAFKA_TOPIC: topic, METRICS_PORT: "off" };
    const port = await freePort();
    let scheduler = await startSchedulerProcess("scheduler-1", db.url, port, schedulerEnv);
    await startExecutorProcess("traced-executor", scheduler.address, {
      ...otel,
      EXECUTOR_HANDLERS: handlers,
      METRICS_PORT: "off",
    });
    const gatewayPort = await freePort();
    const gateway = new ServiceProcess("gateway", GATEWAY_MAIN, {
      ...otel,
      GATEWAY_PORT: String(gatewayPort),
      SCHEDULER_ADDRESS: scheduler.address,
      METRICS_PORT: "off",
    });
    await gateway.waitForLog('"gateway listening"', (l) => l.msg === "gateway listening", 60_000);

    const client = workflowClient(scheduler.address);
    await registerSpec(client, TRACED_DIAMOND);
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const res = await fetch(`http://127.0.0.1:${gatewayPort}/v1/workflows/traced-diamond/runs`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
      body: JSON.stringify({ input: { x: 1 } }),
    });
    const body = (await res.json()) as { run?: { id?: string } };
    assert.equal(res.status, 200, JSON.stringify(body));
    const runId = body.run?.id;
    assert.ok(runId);
    assert.equal((await waitForRun(client, runId)).status, RunStatus.SUCCEEDED);

    const trace = await waitFor(
      "the run's whole trace in Jaeger",
      async () => {
        const tr = await jaegerTrace(jaeger.query, traceId);
        if (tr === undefined) return undefined;
        const names = tr.spans.map((s) => s.operationName);
        const count = (p: (n: string) => boolean): number => names.filter(p).length;
        // Each process exports on its own (batches of up to 200 ms): every one's spans, waited for.
        const services = new Set(tr.spans.map((s) => service(tr, s)));
        return ["nexusflow-gateway", "nexusflow-scheduler", "nexusflow-executor"].every((n) =>
          services.has(n),
        ) &&
          count((n) => n === "user work") === 4 &&
          count((n) => n.startsWith("attempt ")) === 4 &&
          count((n) => n === "handler traced.step") === 4 &&
          count((n) => n.startsWith("send ")) >= 10
          ? tr
          : undefined;
      },
      60_000,
    );
    const services = new Set(trace.spans.map((s) => service(trace, s)));
    for (const s of ["nexusflow-gateway", "nexusflow-scheduler", "nexusflow-executor"])
      assert.ok(services.has(s), `no span of ${s} in the trace (has ${[...services].join(", ")})`);
    const byId = new Map(trace.spans.map((s) => [s.spanID, s]));
    // The REST call: the gateway's HTTP server span is the client's span's child.
    const rest = trace.spans.find(
      (s) => service(trace, s) === "nexusflow-gateway" && tag(s, "http.request.method") === "POST",
    );
    assert.ok(rest, "the REST call's span");
    assert.equal(parentOf(rest), "00f067aa0ba902b7");
    // The scheduler's StartRun server span (RPC conventions), then the run span under it.
    const rpc = trace.spans.find(
      (s) => tag(s, "rpc.method") === "StartRun" && service(trace, s) === "nexusflow-scheduler",
    );
    assert.ok(rpc, "the scheduler's StartRun span");
    // Between them, the gateway's span of the RPC the REST call was routed to.
    const routed = byId.get(parentOf(rpc) ?? "");
    assert.equal(routed?.operationName, "nexusflow.v1.WorkflowService/StartRun");
    assert.equal(service(trace, routed), "nexusflow-gateway");
    assert.equal(tag(routed, "nexusflow.gateway.protocol"), "rest");
    assert.equal(parentOf(routed), rest.spanID, "the routed call's span is the REST call's child");
    const run = trace.spans.find((s) => s.operationName === "run traced-diamond");
    assert.ok(run);
    assert.equal(parentOf(run), rpc.spanID);
    for (const s of trace.spans.filter((x) => x.operationName.startsWith("attempt ")))
      assert.equal(parentOf(s), run.spanID, `${s.operationName} under the run span`);
    for (const s of trace.spans.filter((x) => x.operationName === "handler traced.step")) {
      assert.equal(service(trace, s), "nexusflow-executor");
      assert.ok(
        byId.get(parentOf(s) ?? "")?.operationName.startsWith("attempt "),
        "handler under its attempt",
      );
    }
    for (const s of trace.spans.filter((x) => x.operationName === "user work"))
      assert.equal(byId.get(parentOf(s) ?? "")?.operationName, "handler traced.step");
    for (const s of trace.spans.filter((x) => x.operationName.startsWith("send "))) {
      assert.equal(tag(s, "messaging.system"), "kafka");
      assert.equal(tag(s, "messaging.destination.name"), topic);
    }
    // PostgreSQL spans (database conventions) ride along under the calls that made them.
    assert.ok(
      trace.spans.some(
        (s) => tag(s, "db.system.name") === "postgresql" || tag(s, "db.system") === "postgresql",
      ),
    );

    // gRPC and Connect over HTTP/2, which the HTTP instrumentation does not see: the gateway's
    // span of the call (RPC conventions) is the caller's span's child and the scheduler's parent.
    const h2Clients = [
      ["grpc", createGrpcTransport({ baseUrl: `http://127.0.0.1:${gatewayPort}` })],
      [
        "connect_rpc",
        createConnectTransport({ baseUrl: `http://127.0.0.1:${gatewayPort}`, httpVersion: "2" }),
      ],
    ] as const;
    for (const [i, [system, transport]] of h2Clients.entries()) {
      const h2Trace = `5bf92f3577b34da6a3ce929d0e0e473${i}`;
      const callerSpan = `10f067aa0ba902b${i}`;
      const { run: h2Run } = await createClient(WorkflowService, transport).startRun(
        { workflowName: "traced-diamond", input: jsonToValue({ x: 1 }) },
        { headers: { traceparent: `00-${h2Trace}-${callerSpan}-01` } },
      );
      assert.ok(h2Run);
      assert.equal((await waitForRun(client, h2Run.id)).status, RunStatus.SUCCEEDED);
      // Each process exports its spans in its own batches: wait for the gateway's too.
      const gatewaySpanOf = (t: NonNullable<Awaited<ReturnType<typeof jaegerTrace>>>) =>
        t.spans.find((x) => service(t, x) === "nexusflow-gateway" && tag(x, "rpc.method") === "StartRun");
      const tr = await waitFor(
        `the ${system} call's trace in Jaeger`,
        async () => {
          const t = await jaegerTrace(jaeger.query, h2Trace);
          return t !== undefined &&
            t.spans.filter((x) => x.operationName === "handler traced.step").length === 4 &&
            gatewaySpanOf(t) !== undefined
            ? t
            : undefined;
        },
        60_000,
      ).catch(async (e: unknown) => {
        // Fails below with what arrived.
        const t = await jaegerTrace(jaeger.query, h2Trace);
        if (t === undefined) throw e;
        return t;
      });
      const gatewaySpan = gatewaySpanOf(tr);
      assert.ok(gatewaySpan, `the gateway's span of the ${system} call`);
      assert.equal(tag(gatewaySpan, "rpc.system"), system);
      assert.equal(tag(gatewaySpan, "rpc.service"), "nexusflow.v1.WorkflowService");
      assert.equal(tag(gatewaySpan, "span.kind"), "server");
      if (system === "grpc") assert.equal(tag(gatewaySpan, "rpc.grpc.status_code"), 0);
      assert.equal(parentOf(gatewaySpan), callerSpan, "the caller's span is its parent");
      const schedulerSpan = tr.spans.find(
        (x) => service(tr, x) === "nexusflow-scheduler" && tag(x, "rpc.method") === "StartRun",
      );
      assert.ok(schedulerSpan);
      assert.equal(
        parentOf(schedulerSpan),
        gatewaySpan.spanID,
        "the scheduler's span is the gateway's child",
      );
      const runSpan = tr.spans.find((x) => x.operationName === "run traced-diamond");
      assert.equal(parentOf(runSpan as JaegerSpan), schedulerSpan.spanID);
    }

    // A run that survives a scheduler restart is still one trace.
    await registerSpec(client, {
      name: "traced-restart",
      version: 1,
      steps: [
        { id: "gate", type: "traced.gate", input: { file: "{{ input.file }}" } },
        { id: "after", type: "traced.step", dependsOn: ["gate"], input: { x: "{{ steps.gate.output.x }}" } },
      ],
    });
    const gateFile = join(dir, "open");
    const { run: second } = await client.startRun({
      workflowName: "traced-restart",
      input: jsonToValue({ file: gateFile }),
    });
    assert.ok(second);
    await waitFor("the gate step running", async () => {
      const { run: r } = await client.getRun({ runId: second.id });
      return r?.tasks.find((x) => x.stepId === "gate")?.status === TaskStatus.RUNNING ? true : undefined;
    });
    // The run's stored context, and its span in Jaeger before the SIGKILL (spans the killed
    // process had not exported yet are lost with it).
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    const { rows } = await pool
      .query<{ trace_parent: string | null }>("SELECT trace_parent FROM workflow_runs WHERE id = $1", [
        second.id,
      ])
      .finally(() => pool.end());
    const [, secondTrace, runSpanId] = rows[0]?.trace_parent?.split("-") ?? [];
    assert.ok(secondTrace !== undefined && runSpanId !== undefined, "the run stores its trace context");
    await waitFor("the second run's span in Jaeger", async () =>
      (await jaegerTrace(jaeger.query, secondTrace))?.spans.some((x) => x.spanID === runSpanId)
        ? true
        : undefined,
    );
    await scheduler.process.kill();
    scheduler = await startSchedulerProcess("scheduler-2", db.url, port, schedulerEnv);
    await writeFile(gateFile, "");
    const client2 = workflowClient(scheduler.address);
    assert.equal((await waitForRun(client2, second.id, 60_000)).status, RunStatus.SUCCEEDED);
    // The new scheduler's attempt spans join the stored trace under the run span, and the
    // executor's handler span of the step leased after the restart is under its attempt.
    const restarted = await waitFor(
      "the restarted run's attempts in its trace",
      async () => {
        const tr = await jaegerTrace(jaeger.query, secondTrace);
        const names = tr?.spans.map((x) => x.operationName) ?? [];
        return names.includes("attempt gate") &&
          names.includes("attempt after") &&
          names.includes("handler traced.step")
          ? tr
          : undefined;
      },
      60_000,
    );
    const after = restarted.spans.find((x) => x.operationName === "attempt after");
    assert.ok(after);
    assert.equal(parentOf(after), runSpanId, "the attempt after the restart is under the stored run span");
    assert.equal(
      parentOf(restarted.spans.find((x) => x.operationName === "attempt gate") as JaegerSpan),
      runSpanId,
    );
    const handler = restarted.spans.find((x) => x.operationName === "handler traced.step");
    assert.equal(parentOf(handler as JaegerSpan), after.spanID);
  });
});
