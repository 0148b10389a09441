/**
 * The container image runs the services from compiled JavaScript (scripts/build-dist.mjs, the
 * Dockerfile's build stage), not through tsx. This runs that build and starts each service the way
 * the image does, `node entrypoint.mjs SERVICE` on Node 24 (process.execPath), against a real
 * PostgreSQL: a scheduler with MIGRATE_ON_START=false refuses the empty database naming the
 * pending migrations; `migrate` applies the schema (twice: the second finds nothing to do; `--wait`
 * returns at once); then the scheduler (MIGRATE_ON_START=false, as deployed), an executor (metrics
 * off, probes on HEALTH_PORT) and the gateway become ready on `/readyz`, the scheduler's and the
 * gateway's `grpc.health.v1.Health` answer SERVING, and the image's HEALTHCHECK passes for each;
 * the gateway serves the web UI built with it under /ui/;
 * with PostgreSQL gone the scheduler turns not ready (HTTP and gRPC) and so does the gateway;
 * SIGTERM stops each with status 0. With tracing on, the gateway's spans reach an OTLP receiver
 * through the compiled export thread.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { createServer } from "node:http";
import { type AddressInfo } from "node:net";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, describe, it } from "node:test";
import { ServingStatus, checkGrpcHealth } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";
import { startTestDatabase } from "../../scheduler/test/support.js";
import { ROOT } from "./tools.js";

const TIMEOUT = { timeout: 240_000 };

/** A service process started from the build, with its JSON log lines collected. */
interface Service {
  name: string;
  child: ChildProcess;
  lines: Record<string, unknown>[];
  output: string[];
  exit: Promise<number | null>;
}

function start(dir: string, name: string, env: Record<string, string>, args: string[] = []): Service {
  const child = spawn(process.execPath, [join(dir, "entrypoint.mjs"), name, ...args], {
    // Only what the service is given: no TS loader, no inherited NODE_OPTIONS.
    env: { PATH: process.env["PATH"] ?? "", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const service: Service = {
    name,
    child,
    lines: [],
    output: [],
    exit: once(child, "exit").then(([code]) => code as number | null),
  };
  let buffered = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    buffered += chunk;
    const parts = buffered.split("\n");
    buffered = parts.pop() ?? "";
    for (const line of parts) {
      service.output.push(line);
      try {
        service.lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    }
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => service.output.push(chunk));
  return service;
}

/** Runs the image's HEALTHCHECK (healthcheck.mjs SERVICE) with the service's own variables. */
function healthcheck(dir: string, service: string, env: Record<string, string>): number | null {
  return spawnSync(process.execPath, [join(dir, "healthcheck.mjs"), service], {
    env: { PATH: process.env["PATH"] ?? "", AUTH_DISABLED: "true", ...env },
    stdio: "ignore",
  }).status;
}

/** The value of `field` in the first log line whose msg is `msg`. */
function logged(service: Service, msg: string, field: string): Promise<string> {
  return waitFor(`${service.name} to log "${msg}"`, () => {
    if (service.child.exitCode !== null)
      throw new Error(`${service.name} exited ${service.child.exitCode}: ${service.output.join("\n")}`);
    const line = service.lines.find((l) => l["msg"] === msg);
    return typeof line?.[field] === "string" ? line[field] : undefined;
  });
}

async function status(url: string): Promise<number> {
  return (await fetch(url)).status;
}

async function stop(service: Service): Promise<number | null> {
  if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill("SIGTERM");
  return service.exit;
}

describe("the services compiled to JavaScript, started as the image starts them", () => {
  let dir: string;
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  const services: Service[] = [];

  before(async () => {
    // Inside the checkout: third-party packages resolve from its node_modules, one level up.
    await mkdir(join(ROOT, ".cache"), { recursive: true });
    dir = await mkdtemp(join(ROOT, ".cache", "dist-test-"));
    const build = spawn(
      process.execPath,
      [join(ROOT, "scripts", "build-dist.mjs"), "--out", dir, "--link-node-modules"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    build.stdout.setEncoding("utf8").on("data", (c: string) => (output += c));
    build.stderr.setEncoding("utf8").on("data", (c: string) => (output += c));
    const [code] = (await once(build, "exit")) as [number | null];
    assert.equal(code, 0, `build-dist failed:\n${output}`);
    db = await startTestDatabase();
  }, TIMEOUT);

  after(async () => {
    for (const s of services) await stop(s);
    await db?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("the build holds each service's main module, compiled", TIMEOUT, async () => {
    const manifest = JSON.parse(await readFile(join(dir, "services.json"), "utf8")) as Record<string, string>;
    assert.deepEqual(Object.keys(manifest).sort(), ["executor", "gateway", "migrate", "scheduler"]);
    for (const file of ["entrypoint.mjs", "healthcheck.mjs"]) assert.ok(existsSync(join(dir, file)), file);
    for (const main of Object.values(manifest)) {
      assert.match(main, /\.js$/);
      assert.ok((await readFile(join(dir, main), "utf8")).length > 0, main);
    }
  });

  it(
    "maps stack traces of its own code to the TypeScript, not the source maps of node_modules",
    TIMEOUT,
    () => {
      // entrypoint.mjs turns source maps on as the image runs it (no NODE_OPTIONS).
      const script = `
      import { findSourceMap } from "node:module";
      import { createRequire } from "node:module";
      await import(${JSON.stringify(pathToFileURL(join(dir, "entrypoint.mjs")).href)});
      const { ApiError } = await import(${JSON.stringify(pathToFileURL(join(dir, "common", "src", "index.js")).href)});
      const grpc = createRequire(${JSON.stringify(join(dir, "services", "scheduler", "src", "main.js"))}).resolve("@grpc/grpc-js");
      await import(grpc);
      console.log(JSON.stringify({
        enabled: process.sourceMapsEnabled,
        stack: ApiError.invalid("f", "bad").stack,
        nodeModules: findSourceMap(grpc) !== undefined,
      }));`;
      const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
        env: { PATH: process.env["PATH"] ?? "" },
        encoding: "utf8",
      });
      assert.equal(run.status, 0, run.stderr);
      const got = JSON.parse(run.stdout) as { enabled: boolean; stack: string; nodeModules: boolean };
      assert.equal(got.enabled, true);
      assert.match(got.stack, /common\/src\/errors\.ts:\d+:\d+/);
      assert.equal(got.nodeModules, false);
    },
  );

  it("migrate applies the schema once, then finds nothing to do; --wait returns", TIMEOUT, async () => {
    // Before the schema step, a scheduler that must not migrate refuses, naming what is pending.
    const early = start(dir, "scheduler", {
      AUTH_DISABLED: "true",
      METRICS_PORT: "off",
      DATABASE_URL: db.url,
      SCHEDULER_PORT: "0",
      MIGRATE_ON_START: "false",
    });
    assert.equal(await early.exit, 1, early.output.join("\n"));
    assert.match(
      early.output.join(""),
      /nexusflow-scheduler: the database schema is not current: \d+ pending migrations \(Migration2\d+\w+, /,
    );
    const first = start(dir, "migrate", { DATABASE_URL: db.url });
    assert.equal(await first.exit, 0, first.output.join("\n"));
    assert.ok(
      first.lines.some((l) => l["msg"] === "migrations applied"),
      first.output.join("\n"),
    );
    const second = start(dir, "migrate", { DATABASE_URL: db.url });
    assert.equal(await second.exit, 0, second.output.join("\n"));
    assert.ok(second.lines.some((l) => l["msg"] === "the database schema was up to date"));
    const wait = start(dir, "migrate", { DATABASE_URL: db.url }, ["--wait", "30"]);
    assert.equal(await wait.exit, 0, wait.output.join("\n"));
    const bad = start(dir, "migrate", {});
    assert.equal(await bad.exit, 2);
    assert.match(bad.output.join(""), /DATABASE_URL/);
  });

  it(
    "traces from the build: the export thread sends the REST call's span, flushed at SIGTERM",
    TIMEOUT,
    async () => {
      // An OTLP/HTTP receiver that keeps what it is sent (the export thread's module must be found
      // among the compiled files: a missing one would only be a warning, and no span).
      const received: Buffer[] = [];
      const sink = createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          if (req.url === "/v1/traces") received.push(Buffer.concat(chunks));
          res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
        });
      });
      sink.listen(0, "127.0.0.1");
      await once(sink, "listening");
      try {
        const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
        const gateway = start(dir, "gateway", {
          AUTH_DISABLED: "true",
          METRICS_PORT: "off",
          SCHEDULER_ADDRESS: "127.0.0.1:1",
          GATEWAY_HOST: "127.0.0.1",
          GATEWAY_PORT: "0",
          OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(sink.address() as AddressInfo).port}`,
        });
        services.push(gateway);
        const gatewayUrl = await logged(gateway, "gateway listening", "url");
        const res = await fetch(`${gatewayUrl}/v1/runs`, {
          headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
        });
        await res.arrayBuffer();
        assert.equal(await stop(gateway), 0, gateway.output.join("\n"));
        const all = Buffer.concat(received);
        assert.ok(
          all.includes(Buffer.from(traceId, "hex")),
          `no span of the caller's trace:\n${gateway.output.join("\n")}`,
        );
        assert.ok(all.includes("nexusflow-gateway"));
        assert.ok(!gateway.output.join("\n").includes("TraceExportWarning"), gateway.output.join("\n"));
      } finally {
        sink.close();
      }
    },
  );

  it("scheduler, executor and gateway become ready; without PostgreSQL they are not", TIMEOUT, async () => {
    const common = { AUTH_DISABLED: "true", METRICS_PORT: "0", METRICS_HOST: "127.0.0.1" };
    const scheduler = start(dir, "scheduler", {
      ...common,
      DATABASE_URL: db.url,
      SCHEDULER_HOST: "127.0.0.1",
      SCHEDULER_PORT: "0",
      // As compose and Kubernetes run it: `migrate` ran above.
      MIGRATE_ON_START: "false",
    });
    services.push(scheduler);
    const address = await logged(scheduler, "scheduler listening", "address");
    const schedulerMetrics = await logged(scheduler, "metrics listening", "url");
    const schedulerReady = schedulerMetrics.replace(/\/metrics$/, "/readyz");
    await waitFor("the scheduler's /readyz", async () => (await status(schedulerReady)) === 200);
    assert.equal(await status(schedulerMetrics.replace(/\/metrics$/, "/healthz")), 200);
    assert.equal(await checkGrpcHealth(address), ServingStatus.SERVING);
    const schedulerCheck = { SCHEDULER_HOST: "127.0.0.1", SCHEDULER_PORT: address.split(":").at(-1)! };
    assert.equal(healthcheck(dir, "scheduler", schedulerCheck), 0);
    assert.equal(
      await checkGrpcHealth(address, { service: "nexusflow.v1.WorkflowService" }),
      ServingStatus.SERVING,
    );

    // Metrics off: the probes are on HEALTH_PORT all the same.
    const executor = start(dir, "executor", {
      ...common,
      METRICS_PORT: "off",
      HEALTH_PORT: "0",
      SCHEDULER_ADDRESS: address,
      EXECUTOR_ID: "dist-executor",
      // The compose executors load the compiled example handlers.
      EXECUTOR_HANDLERS: join(dir, "examples", "handlers.js"),
      ARTIFACTS_DIR: join(dir, "artifacts"),
    });
    services.push(executor);
    const executorReady = await logged(executor, "probes listening", "readyz");
    await waitFor("the executor's /readyz", async () => (await status(executorReady)) === 200);
    assert.ok(!executor.lines.some((l) => l["msg"] === "metrics listening"));
    const executorCheck = { METRICS_PORT: "off", HEALTH_PORT: new URL(executorReady).port };
    assert.equal(healthcheck(dir, "executor", executorCheck), 0);
    assert.equal(healthcheck(dir, "executor", { METRICS_PORT: "off" }), 1, "no probe endpoint to ask");
    assert.ok(executor.lines.some((l) => l["msg"] === "handler module loaded"));

    const gateway = start(dir, "gateway", {
      ...common,
      SCHEDULER_ADDRESS: address,
      GATEWAY_HOST: "127.0.0.1",
      GATEWAY_PORT: "0",
    });
    services.push(gateway);
    const gatewayUrl = await logged(gateway, "gateway listening", "url");
    await waitFor("the gateway's /readyz", async () => (await status(`${gatewayUrl}/readyz`)) === 200);
    assert.equal(await status(`${gatewayUrl}/healthz`), 200);
    // The web UI comes with the build: its index.html, and the hashed script it loads.
    const ui = await fetch(`${gatewayUrl}/ui/`);
    assert.equal(ui.status, 200);
    assert.equal(ui.headers.get("content-type"), "text/html; charset=utf-8");
    const script = /src="(\/ui\/assets\/[^"]+\.js)"/.exec(await ui.text())?.[1];
    assert.ok(script !== undefined, "index.html loads no script from /ui/assets/");
    const asset = await fetch(`${gatewayUrl}${script}`);
    assert.equal(asset.status, 200);
    assert.equal(asset.headers.get("cache-control"), "public, max-age=31536000, immutable");
    const gatewayMetrics = await logged(gateway, "metrics listening", "url");
    assert.equal(await status(gatewayMetrics.replace(/\/metrics$/, "/readyz")), 200);
    const gatewayAddress = new URL(gatewayUrl).host;
    assert.equal(await checkGrpcHealth(gatewayAddress), ServingStatus.SERVING);
    const gatewayCheck = { GATEWAY_HOST: "127.0.0.1", GATEWAY_PORT: new URL(gatewayUrl).port };
    assert.equal(healthcheck(dir, "gateway", gatewayCheck), 0);

    // PostgreSQL goes away: the scheduler is no longer ready, on HTTP and on gRPC, nor the gateway.
    await db.server.stop();
    await waitFor("the scheduler's /readyz to fail", async () => (await status(schedulerReady)) === 503);
    assert.equal(await checkGrpcHealth(address), ServingStatus.NOT_SERVING);
    await waitFor(
      "the gateway's /readyz to fail",
      async () => (await status(`${gatewayUrl}/readyz`)) === 503,
    );
    const reason = await (await fetch(schedulerReady)).text();
    assert.match(reason, /not ready: PostgreSQL/);
    assert.equal(healthcheck(dir, "scheduler", schedulerCheck), 1);
    assert.equal(await checkGrpcHealth(gatewayAddress), ServingStatus.NOT_SERVING);
    assert.equal(healthcheck(dir, "gateway", gatewayCheck), 1);

    // SIGTERM: each drains and exits 0 (the executor first, as an upgrade rolls them).
    for (const s of [gateway, executor]) assert.equal(await stop(s), 0, `${s.name}: ${s.output.join("\n")}`);
    await db.server.restart();
    assert.equal(await stop(scheduler), 0, scheduler.output.join("\n"));
  });
});
