#!/usr/bin/env node
// The image's HEALTHCHECK: exits 0 when the running service is ready, else 1 with the reason. It
// asks each service where its readiness does not depend on metrics being on:
//   scheduler  grpc.health.v1.Health/Check on its gRPC port (SCHEDULER_HOST:SCHEDULER_PORT)
//   gateway    GET /readyz on its own port (GATEWAY_HOST:GATEWAY_PORT)
//   executor   GET /readyz on its probe endpoint: HEALTH_PORT (the image sets 8081), else the
//              metrics port; with METRICS_PORT=off and no HEALTH_PORT it has none, and says so
// Each check is the same readiness as the service's /readyz.
//   healthcheck.mjs [SERVICE]    SERVICE defaults to the one PID 1 runs (tini -- node entrypoint.mjs SERVICE)
// It reads the service's configuration through @nexusflow/common (the one module that reads the
// environment), so it finds the same ports the service listens on. `migrate` is a one-shot: healthy.
import { readFileSync } from "node:fs";
import {
  ConfigError,
  ServingStatus,
  checkGrpcHealth,
  loadExecutorConfig,
  loadGatewayConfig,
  loadSchedulerConfig,
} from "@nexusflow/common";

const LOADERS = { scheduler: loadSchedulerConfig, executor: loadExecutorConfig, gateway: loadGatewayConfig };

function fail(message) {
  process.stderr.write(`healthcheck: ${message}\n`);
  process.exit(1);
}

/** The service that PID 1 runs: the argument after entrypoint.mjs on its command line. */
function serviceOfPid1() {
  try {
    const argv = readFileSync("/proc/1/cmdline", "utf8").split("\0");
    const i = argv.findIndex((a) => a.endsWith("entrypoint.mjs"));
    return i >= 0 ? argv[i + 1] : undefined;
  } catch {
    return undefined;
  }
}

/** host:port to connect to; a wildcard listen address is reached on loopback. */
function address(host, port) {
  const h = ["0.0.0.0", "::", ""].includes(host) ? "127.0.0.1" : host;
  return `${h.includes(":") ? `[${h}]` : h}:${port}`;
}

async function readyz(base) {
  const url = `http://${base}/readyz`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(4000) });
    const text = (await res.text()).trim();
    if (res.status !== 200) fail(`${url}: ${res.status} ${text}`);
  } catch (e) {
    fail(`${url}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

const service = process.argv[2] ?? serviceOfPid1();
if (service === "migrate") process.exit(0);
const load = LOADERS[service];
if (load === undefined) fail(`unknown service ${JSON.stringify(service)}`);
let config;
try {
  config = load();
} catch (e) {
  if (e instanceof ConfigError) fail(e.message);
  throw e;
}
if (service === "scheduler") {
  const target = address(config.host, config.port);
  let status;
  try {
    status = await checkGrpcHealth(target, { timeoutMs: 4000 });
  } catch (e) {
    fail(`grpc.health.v1.Health/Check at ${target}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (status !== ServingStatus.SERVING) fail(`grpc.health.v1.Health/Check at ${target}: status ${status}`);
} else if (service === "gateway") {
  await readyz(address(config.host, config.port));
} else {
  if (config.probes === undefined)
    fail("METRICS_PORT=off and HEALTH_PORT is not set: the executor has no /readyz to ask");
  await readyz(address(config.probes.host, config.probes.port));
}
