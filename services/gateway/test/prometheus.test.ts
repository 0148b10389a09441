/**
 * Metrics as Prometheus sees them: Debian's `prometheus` binary (run here on 127.0.0.1 and a free
 * port with a configuration this test writes, loading the shipped deploy/prometheus/alerts.yml)
 * scrapes a running scheduler, executor and gateway; runs started through the gateway move the
 * metrics, which the test reads back from Prometheus's HTTP API with their labels. `promtool`
 * checks the shipped configuration and rules, and every metric the rules name must be one the
 * scrape showed. Without the binaries the test skips locally and fails under CI=true (.ci/run
 * installs them).
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it, type TestContext } from "node:test";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createLogger, createTokenVerifier, freePort, jsonToValue } from "@nexusflow/common";
import {
  type MetricsServer,
  createMetricsRegistry,
  grpcClientMetrics,
  listenMetrics,
} from "@nexusflow/common/metrics";
import { waitFor } from "@nexusflow/common/testing";
import { type TestTracing, startTestTracing } from "@nexusflow/common/telemetry/testing";
import { Executor, TaskError } from "@nexusflow/executor";
import { WorkflowService } from "@nexusflow/gen";
import type { Scheduler } from "@nexusflow/scheduler";
import { parse } from "yaml";
import { startMeteredTestScheduler, startTestDatabase } from "../../scheduler/test/support.js";
import { registerExecutorMetrics } from "../../executor/src/metrics.js";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";

const run = promisify(execFile);
const DEPLOY = join(dirname(fileURLToPath(import.meta.url)), "../../../deploy/prometheus");
const DASHBOARDS = join(dirname(fileURLToPath(import.meta.url)), "../../../deploy/grafana/dashboards");

/** Every PromQL expression of a Grafana dashboard: its panels' targets and its query variables. */
function dashboardExprs(dashboard: unknown): { where: string; expr: string }[] {
  const found: { where: string; expr: string }[] = [];
  const visit = (node: unknown, where: string): void => {
    if (Array.isArray(node)) node.forEach((n, i) => visit(n, `${where}[${i}]`));
    else if (typeof node === "object" && node !== null) {
      const o = node as Record<string, unknown>;
      const title = typeof o["title"] === "string" ? `${where} "${o["title"]}"` : where;
      const prometheus = (o["datasource"] as { type?: string } | undefined)?.type === "prometheus";
      if (prometheus && typeof o["expr"] === "string") found.push({ where: title, expr: o["expr"] });
      if (prometheus && o["type"] === "query") {
        const q = o["query"];
        const expr = typeof q === "string" ? q : (q as { query?: string } | undefined)?.query;
        if (expr !== undefined) found.push({ where: title, expr });
      }
      for (const [k, v] of Object.entries(o)) visit(v, `${title}.${k}`);
    }
  };
  visit(dashboard, "");
  return found;
}

/** The path of `name` on PATH or in /usr/bin, if installed. */
function findBinary(name: string): string | undefined {
  for (const dir of [...(process.env["PATH"] ?? "").split(":"), "/usr/bin", "/usr/sbin"]) {
    if (dir !== "" && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/** The path of `name`; skips the test locally, and fails it under CI=true, when it is missing. */
function requireBinary(t: TestContext, name: string): string | undefined {
  const found = findBinary(name);
  if (found !== undefined) return found;
  const message = `${name} is not installed: apt-get install -y prometheus (.ci/run does)`;
  if (process.env["CI"] === "true") throw new Error(`${message} (required under CI=true)`);
  t.skip(message);
  return undefined;
}

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

describe("metrics scraped by Prometheus", () => {
  let prometheusBin: string | undefined;
  let promtoolBin: string | undefined;
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let executor: Executor;
  let gateway: Gateway;
  let keys: TestKeys;
  let executorMetrics: MetricsServer;
  let gatewayMetrics: MetricsServer;
  let prometheus: ChildProcess | undefined;
  let tracing: TestTracing | undefined;
  let prometheusUrl = "";
  let dir = "";
  let gatewayUrl = "";

  const query = async (promql: string): Promise<Sample[]> => {
    const res = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.json()) as { status: string; data: { result: Sample[] }; error?: string };
    assert.equal(body.status, "success", body.error);
    return body.data.result;
  };
  /** The single value of `promql`, undefined while there is none. */
  const value = async (promql: string): Promise<number | undefined> => {
    const result = await query(promql);
    return result.length === 1 ? Number(result[0]?.value[1]) : undefined;
  };

  before(async () => {
    prometheusBin = findBinary("prometheus");
    promtoolBin = findBinary("promtool");
    if (prometheusBin === undefined || promtoolBin === undefined) return;
    dir = await mkdtemp(join(tmpdir(), "nf-prometheus-"));
    // Tracing on (spans kept in memory): runs store their trace context, and their durations
    // carry its trace id as an exemplar.
    tracing = await startTestTracing();
    keys = await createTestKeys();
    db = await startTestDatabase();
    // Metrics served, and the relay with no Kafka: its outbox gauges are there.
    scheduler = await startMeteredTestScheduler(db.url);
    const executorRegistry = createMetricsRegistry();
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "prometheus-1",
      slots: 8,
      logger: createLogger("executor", "warn"),
      channelOptions: { interceptors: [grpcClientMetrics(executorRegistry)] },
    })
      .register("prom.work", (input: { n: number }) => ({ doubled: input.n * 2 }))
      .register("prom.fail", () => {
        throw TaskError.terminal("DECLINED", "fails by design");
      })
      .register("prom.flaky", (_input: unknown, ctx: { attempt: number }) => {
        if (ctx.attempt === 1) throw TaskError.retryable("FLAKY", "fails once", { retryAfterMs: 10 });
        return {};
      });
    registerExecutorMetrics(executorRegistry, executor, 8);
    await executor.start();
    executorMetrics = await listenMetrics({ registry: executorRegistry, port: 0 });
    const gatewayRegistry = createMetricsRegistry();
    gateway = createGateway({
      schedulerAddress: scheduler.address,
      port: 0,
      verifier: await createTokenVerifier({
        publicKeyFiles: [keys.keys.EdDSA.jwkFile],
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
      metrics: gatewayRegistry,
      drainTimeoutMs: 2000,
    });
    ({ url: gatewayUrl } = await gateway.listen());
    gatewayMetrics = await listenMetrics({ registry: gatewayRegistry, port: 0 });

    const target = (url: string | undefined) => new URL(url ?? "").host;
    const config = {
      global: { scrape_interval: "1s", evaluation_interval: "1s" },
      rule_files: [join(DEPLOY, "alerts.yml")],
      scrape_configs: [
        { job_name: "nexusflow-scheduler", static_configs: [{ targets: [target(scheduler.metricsUrl)] }] },
        { job_name: "nexusflow-executor", static_configs: [{ targets: [target(executorMetrics.url)] }] },
        { job_name: "nexusflow-gateway", static_configs: [{ targets: [target(gatewayMetrics.url)] }] },
      ],
    };
    await writeFile(join(dir, "prometheus.yml"), JSON.stringify(config));
    const port = await freePort();
    prometheusUrl = `http://127.0.0.1:${port}`;
    prometheus = spawn(
      prometheusBin,
      [
        `--config.file=${join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--log.level=warn",
        "--enable-feature=exemplar-storage",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    prometheus.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    await waitFor(
      `Prometheus to be ready (${stderr})`,
      async () => (await fetch(`${prometheusUrl}/-/ready`)).ok || undefined,
      30_000,
    );
  });

  after(async () => {
    if (prometheus !== undefined && prometheus.exitCode === null) {
      const exited = new Promise((resolve) => prometheus?.once("exit", resolve));
      prometheus.kill("SIGTERM");
      await exited;
    }
    await gateway?.close();
    await gatewayMetrics?.close();
    await executor?.stop();
    await executorMetrics?.close();
    await scheduler?.stop();
    await db?.close();
    await keys?.close();
    await tracing?.stop();
    if (dir !== "") await rm(dir, { recursive: true, force: true });
  });

  it("the shipped configuration and rules pass promtool", async (t) => {
    const promtool = requireBinary(t, "promtool");
    if (promtool === undefined) return;
    await run(promtool, ["check", "rules", join(DEPLOY, "alerts.yml")]);
    await run(promtool, ["check", "config", join(DEPLOY, "prometheus.yml")]);
  });

  it("sees runs started through the gateway move the metrics, with their labels", async (t) => {
    if (requireBinary(t, "prometheus") === undefined) return;
    const token = await keys.sign(keys.keys.EdDSA, { scope: "admin" });
    const client = createClient(
      WorkflowService,
      createConnectTransport({ baseUrl: gatewayUrl, httpVersion: "1.1" }),
    );
    const auth = { headers: { authorization: `Bearer ${token}` } };
    for (const [name, type] of [
      ["prom-demo", "prom.work"],
      ["prom-failing", "prom.fail"],
      ["prom-flaky", "prom.flaky"],
    ] as const) {
      await client.registerWorkflow(
        {
          definition: {
            case: "specJson",
            value: JSON.stringify({ name, version: 1, steps: [{ id: "s", type, input: { n: 21 } }] }),
          },
        },
        auth,
      );
    }
    const startRuns = async (workflowName: string, n: number): Promise<void> => {
      for (let i = 0; i < n; i++) await client.startRun({ workflowName, input: jsonToValue({}) }, auth);
    };
    await startRuns("prom-demo", 3);
    await startRuns("prom-failing", 1);
    await startRuns("prom-flaky", 1);
    // A call without a token, refused by the gateway.
    await assert.rejects(client.listRuns({}));

    const succeeded =
      'nexusflow_runs_completed_total{job="nexusflow-scheduler",workflow="prom-demo",status="SUCCEEDED"}';
    await waitFor(
      "Prometheus to scrape 3 succeeded runs",
      async () => (await value(succeeded)) === 3 || undefined,
      30_000,
    );
    const expectations: [string, (v: number) => boolean][] = [
      ['nexusflow_runs_started_total{workflow="prom-demo"}', (v) => v === 3],
      ['nexusflow_runs_completed_total{workflow="prom-failing",status="FAILED"}', (v) => v === 1],
      ['nexusflow_run_duration_seconds_count{workflow="prom-demo",status="SUCCEEDED"}', (v) => v === 3],
      ['nexusflow_task_attempts_total{task_type="prom.work"}', (v) => v === 3],
      ['nexusflow_task_failures_total{task_type="prom.fail",error_type="DECLINED"}', (v) => v === 1],
      ['nexusflow_run_failures_total{workflow="prom-failing",error_type="DECLINED"}', (v) => v === 1],
      ['nexusflow_task_retries_total{task_type="prom.flaky"}', (v) => v === 1],
      ['nexusflow_runs_completed_total{workflow="prom-flaky",status="SUCCEEDED"}', (v) => v === 1],
      ['nexusflow_task_schedule_to_start_seconds_count{task_type="prom.work"}', (v) => v === 3],
      [
        'nexusflow_task_handler_duration_seconds_count{task_type="prom.work",outcome="succeeded"}',
        (v) => v === 3,
      ],
      ["nexusflow_scheduler_executor_sessions", (v) => v === 1],
      ['nexusflow_scheduler_free_slots{task_type="prom.work"}', (v) => v === 8],
      ["nexusflow_scheduler_commit_batch_rows_count", (v) => v > 0],
      ["nexusflow_scheduler_writer_healthy", (v) => v === 1],
      ["nexusflow_outbox_pending_rows", (v) => v >= 0],
      ["nexusflow_kafka_publish_errors_total", (v) => v === 0],
      [
        'nexusflow_grpc_server_duration_seconds_count{method="nexusflow.v1.WorkflowService/StartRun",code="OK"}',
        (v) => v === 5,
      ],
      [
        'nexusflow_grpc_client_duration_seconds_count{job="nexusflow-gateway",method="nexusflow.v1.WorkflowService/StartRun",code="OK"}',
        (v) => v === 5,
      ],
      [
        'nexusflow_gateway_requests_total{route="nexusflow.v1.WorkflowService/StartRun",protocol="connect",status="OK"}',
        (v) => v === 5,
      ],
      [
        'nexusflow_gateway_requests_total{route="nexusflow.v1.WorkflowService/ListRuns",protocol="connect",status="UNAUTHENTICATED"}',
        (v) => v === 1,
      ],
      ['nexusflow_gateway_jwt_rejections_total{reason="missing_token"}', (v) => v === 1],
      ['nexusflow_executor_attached{job="nexusflow-executor"}', (v) => v === 1],
      ['count(count by (job) (process_cpu_user_seconds_total{job=~"nexusflow-.*"}))', (v) => v === 3],
    ];
    for (const [promql, ok] of expectations) {
      await waitFor(`${promql} as expected`, async () => {
        const v = await value(promql);
        return v !== undefined && ok(v) ? true : undefined;
      });
    }
    // They move: more runs, higher counts at the next scrape.
    await startRuns("prom-demo", 2);
    await waitFor(
      "Prometheus to scrape 5 succeeded runs",
      async () => (await value(succeeded)) === 5 || undefined,
      30_000,
    );
    await waitFor(
      "the attempts to move",
      async () => (await value('nexusflow_task_attempts_total{task_type="prom.work"}')) === 5 || undefined,
    );
    // No run id is ever a label value.
    const series = (await query('{__name__=~"nexusflow_.*"}')).flatMap((s) => Object.values(s.metric));
    assert.ok(!series.some((v) => /^[0-9a-f]{8}-[0-9a-f]{4}-/.test(v)), "a label value looks like a run id");

    // Exemplars: the duration of a run started with tracing on, and of its attempts, carries the
    // run's trace id, and Prometheus stores it (what Grafana links to the trace).
    const exemplarIds = async (promql: string): Promise<string[]> => {
      const now = Date.now() / 1000;
      const res = await fetch(
        `${prometheusUrl}/api/v1/query_exemplars?query=${encodeURIComponent(promql)}&start=${now - 600}&end=${now + 60}`,
      );
      const body = (await res.json()) as {
        status: string;
        data?: { exemplars: { labels: Record<string, string> }[] }[];
      };
      assert.equal(body.status, "success");
      return (body.data ?? []).flatMap((d) => d.exemplars.map((x) => x.labels["trace_id"] ?? ""));
    };
    const runTraces = (): Set<string> =>
      new Set(
        (tracing?.spans() ?? [])
          .filter((x) => x.name === "run prom-demo")
          .map((x) => x.spanContext().traceId),
      );
    for (const promql of [
      'nexusflow_run_duration_seconds_bucket{workflow="prom-demo"}',
      'nexusflow_task_handler_duration_seconds_bucket{task_type="prom.work"}',
    ]) {
      const ids = await waitFor(`an exemplar of ${promql} in Prometheus`, async () => {
        const found = await exemplarIds(promql);
        return found.length > 0 ? found : undefined;
      });
      const traces = runTraces();
      for (const id of ids)
        assert.ok(traces.has(id), `${promql}: exemplar ${id} is not a prom-demo run's trace`);
    }

    // Every metric the shipped alert rules name is one the scrape showed.
    const names = await fetch(`${prometheusUrl}/api/v1/label/__name__/values`);
    const scraped = new Set(((await names.json()) as { data: string[] }).data);
    const rules = parse(await readFile(join(DEPLOY, "alerts.yml"), "utf8")) as {
      groups: { rules: { alert: string; expr: string }[] }[];
    };
    const exprs = rules.groups.flatMap((g) => g.rules);
    assert.ok(exprs.length >= 5);
    for (const rule of exprs) {
      const named = rule.expr.match(/\bnexusflow_[a-z0-9_]+\b/g) ?? [];
      for (const name of named)
        assert.ok(scraped.has(name), `${rule.alert} names ${name}, which no target exposes`);
    }
    // So is every metric the shipped Grafana dashboards name, and each of their expressions is
    // one this Prometheus evaluates (dashboard variables replaced by a value).
    const files = (await readdir(DASHBOARDS)).filter((f) => f.endsWith(".json"));
    assert.ok(files.length >= 3, `dashboards: ${files.join(", ")}`);
    for (const file of files) {
      const exprs = dashboardExprs(JSON.parse(await readFile(join(DASHBOARDS, file), "utf8")));
      assert.ok(exprs.length > 3, `${file} has PromQL panels`);
      for (const { where, expr } of exprs) {
        for (const name of expr.match(/\bnexusflow_[a-z0-9_]+\b/g) ?? [])
          assert.ok(scraped.has(name), `${file}${where} names ${name}, which no target exposes`);
        const concrete = expr
          .replace(/^label_values\((.*),\s*\w+\)$/, "$1")
          .replaceAll("$__rate_interval", "1m")
          .replaceAll("$__interval", "15s")
          .replaceAll("$__range", "1h")
          .replace(/\$\{?(\w+)(:\w+)?\}?/g, "prom-demo");
        const res = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(concrete)}`);
        const body = (await res.json()) as { status: string; error?: string };
        assert.equal(body.status, "success", `${file}${where}: ${concrete}: ${body.error}`);
      }
    }

    // The rules load and evaluate in this Prometheus.
    const loaded = (await (await fetch(`${prometheusUrl}/api/v1/rules`)).json()) as {
      data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] };
    };
    const evaluated = loaded.data.groups.flatMap((g) => g.rules);
    assert.deepEqual(evaluated.map((r) => r.name).sort(), exprs.map((r) => r.alert).sort());
    await waitFor("every rule evaluated without error", async () => {
      const l = (await (await fetch(`${prometheusUrl}/api/v1/rules`)).json()) as typeof loaded;
      const rs = l.data.groups.flatMap((g) => g.rules);
      return rs.every((r) => r.health === "ok") || undefined;
    });
  });
});
