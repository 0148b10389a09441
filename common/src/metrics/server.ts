/**
 * The ops endpoint: a small HTTP/1.1 server of its own port that answers `GET /metrics` with the
 * registry in its format (OpenMetrics text, with exemplars: registry.ts), and nothing else (404).
 * A port of its own keeps the scrape away from the service's API (no authentication, no gRPC
 * framing) and lets operators
 * expose it only to Prometheus. The same port answers the probes of orchestrators: `GET /healthz`
 * (live: the process answers) and, given a readiness check, `GET /readyz` (200 when ready, else
 * 503 with the reason). With HEALTH_PORT (config.ts, ProbesConfig) the probes get a server of
 * their own, without /metrics, so they do not depend on metrics being on ({@link startOpsEndpoints}).
 */
import type * as http from "node:http";
import type { Registry } from "prom-client";
import type { MetricsConfig, ProbesConfig } from "../config.js";
import type { ReadinessCheck } from "../health.js";
import type { Logger } from "../logger.js";
import { hasErrorCode } from "../net.js";

/**
 * node:http as CommonJS exports: an ESM import of it builds the module's namespace, whose getters
 * (WebSocket, MessageEvent, ...) load Node's bundled undici, 2.4 MiB of V8 heap a service that
 * never makes an HTTP request does not need.
 */
const { createServer } = process.getBuiltinModule("node:http");

/**
 * The metrics (or probe) port could not be bound; the message is one line naming host, port and
 * the variable that set it (METRICS_PORT, or HEALTH_PORT for a probe server of its own).
 */
export class MetricsListenError extends Error {
  override name = "MetricsListenError";
  constructor(
    readonly host: string,
    readonly port: number,
    /** The system error code, e.g. "EADDRINUSE". */
    readonly code: string | undefined,
    options?: ErrorOptions & { variable?: "METRICS_PORT" | "HEALTH_PORT" },
  ) {
    const variable = options?.variable ?? "METRICS_PORT";
    super(
      `${variable}: cannot serve ${variable === "HEALTH_PORT" ? "/healthz and /readyz" : "metrics"} on ${hostPort(host, port)}: ${
        code === "EADDRINUSE" ? `port ${port} is already in use` : (code ?? String(options?.cause))
      } (set ${variable} to another port${variable === "HEALTH_PORT" ? " or 0 for any free one" : ", 0 for any free one, or off"})`,
      options,
    );
  }
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Answers a probe: live (no check), or the check's verdict (200 "ready", 503 "not ready: why"). */
function serveProbe(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  ready: ReadinessCheck | undefined,
): void {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD" }).end();
    return;
  }
  const answer = (status: number, text: string): void => {
    res.writeHead(status, { "content-type": "text/plain", "cache-control": "no-store" });
    res.end(req.method === "HEAD" ? undefined : `${text}\n`);
  };
  if (ready === undefined) {
    answer(200, "ok");
    return;
  }
  ready().then(
    (reason) =>
      answer(reason === undefined ? 200 : 503, reason === undefined ? "ready" : `not ready: ${reason}`),
    (e: unknown) => answer(503, `not ready: ${e instanceof Error ? e.message : String(e)}`),
  );
}

/** A listening metrics endpoint (or a probe server of its own: then `url` names /metrics, which answers 404). */
export interface MetricsServer {
  /** The scrape URL, e.g. "http://127.0.0.1:9464/metrics". */
  readonly url: string;
  /** The port it listens on (the actual one when 0 was asked for). */
  readonly port: number;
  /** Stops listening and closes open connections; idempotent. */
  close(): Promise<void>;
}

/** Options of {@link listenMetrics}. */
export interface MetricsServerOptions {
  /** Served on `GET /metrics`. @default undefined (a probe server: /metrics answers 404) */
  registry?: Registry | undefined;
  /** @default "127.0.0.1" */
  host?: string;
  /** 0 picks a free port. @default 0 */
  port?: number;
  /** Serves `GET /readyz` with this check. @default undefined (no /readyz: 404) */
  ready?: ReadinessCheck | undefined;
  /** The variable that chose the port, named by {@link MetricsListenError}. @default "METRICS_PORT" */
  variable?: "METRICS_PORT" | "HEALTH_PORT";
}

/**
 * Serves `registry` on `GET /metrics` and the probes. Throws {@link MetricsListenError} when the
 * port cannot be bound.
 */
export async function listenMetrics(options: MetricsServerOptions): Promise<MetricsServer> {
  const { registry } = options;
  const host = options.host ?? "127.0.0.1";
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz" || (path === "/readyz" && options.ready !== undefined)) {
      serveProbe(req, res, path === "/healthz" ? undefined : options.ready);
      return;
    }
    if (path !== "/metrics" || registry === undefined) {
      res
        .writeHead(404, { "content-type": "text/plain" })
        .end(
          registry === undefined
            ? "not found: this port serves /healthz and /readyz only (metrics are at METRICS_PORT)\n"
            : "not found: metrics are at /metrics\n",
        );
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { "content-type": registry.contentType });
        res.end(req.method === "HEAD" ? undefined : text);
      },
      (e: unknown) => {
        res.writeHead(500, { "content-type": "text/plain" });
        res.end(`metrics could not be collected: ${e instanceof Error ? e.message : String(e)}\n`);
      },
    );
  });
  // A scraper keeps its connection; close() must not wait for it.
  server.keepAliveTimeout = 30_000;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port: options.port ?? 0 }, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    const code = hasErrorCode(e, "EADDRINUSE")
      ? "EADDRINUSE"
      : typeof (e as { code?: unknown }).code === "string"
        ? (e as { code: string }).code
        : undefined;
    throw new MetricsListenError(host, options.port ?? 0, code, {
      cause: e,
      ...(options.variable === undefined ? {} : { variable: options.variable }),
    });
  }
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : (options.port ?? 0);
  let closing: Promise<void> | undefined;
  return {
    url: `http://${hostPort(host, port)}/metrics`,
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

/**
 * Starts the endpoint a service's configuration asks for: none with METRICS_PORT=off; a port set
 * explicitly that is taken throws {@link MetricsListenError}; the default port taken (a second
 * executor on the host) turns metrics off with a warning instead of stopping the service.
 */
export async function startMetricsEndpoint(
  config: MetricsConfig | undefined,
  registry: Registry,
  log: Logger,
  /** Serves `/readyz` with this check (see {@link MetricsServerOptions.ready}). */
  ready?: ReadinessCheck,
): Promise<MetricsServer | undefined> {
  if (config === undefined) return undefined;
  try {
    return await listenMetrics({ registry, host: config.host, port: config.port, ready });
  } catch (e) {
    if (!config.explicit && e instanceof MetricsListenError && e.code === "EADDRINUSE") {
      log.warn(
        { host: config.host, port: config.port },
        `the default metrics port ${config.port} is in use: metrics are off for this process (set METRICS_PORT to another port or 0)`,
      );
      return undefined;
    }
    throw e;
  }
}

/** The endpoints {@link startOpsEndpoints} started. */
export interface OpsEndpoints {
  /** The metrics endpoint (serving the probes too); undefined when metrics are off. */
  readonly metrics: MetricsServer | undefined;
  /** A probe server of its own (HEALTH_PORT apart from METRICS_PORT); undefined otherwise. */
  readonly probes: MetricsServer | undefined;
  /** Closes both; idempotent. */
  close(): Promise<void>;
}

/** Options of {@link startOpsEndpoints}. */
export interface OpsEndpointsOptions {
  /** The /metrics endpoint (METRICS_PORT); undefined: metrics off. */
  metrics: MetricsConfig | undefined;
  /** Where the probes are (HEALTH_PORT, or the metrics endpoint); undefined: none. */
  probes: ProbesConfig | undefined;
  /** The metrics; undefined serves no /metrics even when `metrics` is set. */
  registry: Registry | undefined;
  log: Logger;
  /** Serves `/readyz` with this check. */
  ready?: ReadinessCheck | undefined;
}

/**
 * Starts what a service's configuration asks for: the metrics endpoint (with the probes) as
 * {@link startMetricsEndpoint} does, and a probe server of its own when HEALTH_PORT names another
 * port than METRICS_PORT, or METRICS_PORT is off. A probe port that is taken throws
 * {@link MetricsListenError} naming HEALTH_PORT. Logs where each listens.
 */
export async function startOpsEndpoints(options: OpsEndpointsOptions): Promise<OpsEndpoints> {
  const { log, probes, ready } = options;
  const metrics =
    options.registry === undefined
      ? undefined
      : await startMetricsEndpoint(options.metrics, options.registry, log, ready);
  if (metrics !== undefined) log.info({ url: metrics.url }, "metrics listening");
  let own: MetricsServer | undefined;
  if (probes !== undefined && (!probes.onMetricsPort || options.registry === undefined)) {
    try {
      own = await listenMetrics({ host: probes.host, port: probes.port, ready, variable: "HEALTH_PORT" });
    } catch (e) {
      await metrics?.close();
      throw e;
    }
    const base = own.url.replace(/\/metrics$/, "");
    log.info({ healthz: `${base}/healthz`, readyz: `${base}/readyz` }, "probes listening");
  } else if (probes === undefined || metrics === undefined) {
    log.info("no /healthz or /readyz: metrics are off and HEALTH_PORT is not set");
  }
  return {
    metrics,
    probes: own,
    async close() {
      await Promise.all([metrics?.close(), own?.close()]);
    },
  };
}
