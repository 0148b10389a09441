#!/usr/bin/env node
// The image's HEALTHCHECK: asks the running service's ops endpoint (METRICS_HOST:METRICS_PORT, the
// port of /metrics) for GET /readyz and exits 0 when it answers 200, else 1 with the reason.
//   healthcheck.mjs [SERVICE]    SERVICE defaults to the one PID 1 runs (tini -- node entrypoint.mjs SERVICE)
// It reads the service's configuration through @nexusflow/common (the one module that reads the
// environment), so it finds the same port the service listens on. `migrate` is a one-shot: healthy.
import { readFileSync } from "node:fs";
import { ConfigError, loadExecutorConfig, loadGatewayConfig, loadSchedulerConfig } from "@nexusflow/common";

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
if (config.metrics === undefined) fail("METRICS_PORT=off: the service has no /readyz to ask");
const wildcard = ["0.0.0.0", "::", ""].includes(config.metrics.host);
const host = wildcard ? "127.0.0.1" : config.metrics.host;
const url = `http://${host.includes(":") ? `[${host}]` : host}:${config.metrics.port}/readyz`;
try {
  const res = await fetch(url, { signal: AbortSignal.timeout(4000) });
  const text = (await res.text()).trim();
  if (res.status !== 200) fail(`${url}: ${res.status} ${text}`);
} catch (e) {
  fail(`${url}: ${e instanceof Error ? e.message : String(e)}`);
}
