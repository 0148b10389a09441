/**
 * The gateway server: one TCP port that speaks HTTP/2 without TLS (h2c, prior knowledge) and
 * HTTP/1.1, serving gRPC, gRPC-Web and Connect (binary and JSON) for every proxied service, REST/JSON
 * under the paths of their `google.api.http` annotations (rest/), gRPC server reflection,
 * `/healthz` (live) and `/readyz` (ready: listening, and the readiness check passes), the
 * standard `grpc.health.v1.Health` answering with that same readiness (health.ts), and the web UI's
 * built files under `/ui/` (static-files.ts). Every call but reflection and health needs a bearer
 * token when a verifier is set (guard.ts); the UI's static files need none.
 *
 * HTTP/1.1 and h2c on one port: Node's `allowHTTP1` only works with TLS (it relies on ALPN), so
 * the gateway owns a plain `net.Server` and looks at the first bytes of each connection. An HTTP/2
 * client with prior knowledge starts with the fixed connection preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`;
 * anything else is HTTP/1.x. The bytes read are pushed back (`unshift`) and the socket is handed
 * to an `http2` or an `http` server that never listens itself. Both use the same Connect handler.
 * (h2c via `Upgrade: h2c` from HTTP/1.1 is not supported; gRPC clients use prior knowledge.)
 *
 * Lifecycle: idle → starting → listening → stopping → stopped. `close()` stops accepting, ends
 * open streams with UNAVAILABLE (WatchRun would otherwise never finish), sends GOAWAY to HTTP/2
 * sessions, closes idle HTTP/1.1 connections and the busy ones after their response, waits for
 * in-flight unary calls up to `drainTimeoutMs`, then aborts and destroys whatever is left and
 * finally closes the connections to the scheduler replicas. An HTTP/2 stream whose response is
 * complete while its client keeps its side open is reset with NO_ERROR (http/h2-streams.ts): it
 * would otherwise hold its session, and so the drain, open.
 */
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { fileURLToPath } from "node:url";
import {
  Code,
  ConnectError,
  type HandlerContext,
  type Interceptor,
  type Transport,
  createContextValues,
  createRouterTransport,
} from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  type Logger,
  MAX_GATEWAY_REQUEST_BYTES,
  type ReadinessCheck,
  type TokenVerifier,
  createLogger,
  hasErrorCode,
} from "@nexusflow/common";
import type { Registry } from "@nexusflow/common/metrics";
import { decodeErrorInterceptor, watchDecodeErrors } from "./decode-errors.js";
import {
  StreamLimiter,
  authenticateRequest,
  guardInterceptor,
  guardRequestGate,
  kPrincipal,
  kRemoteAddress,
  type RefusalListener,
} from "./guard.js";
import { resetWhenAnswered } from "./http/h2-streams.js";
import { GatewayMetrics, type Protocol, protocolOf, rejectionReason } from "./metrics.js";
import { MAX_TIMEOUT_MS, type RestHandler, createRestHandler } from "./rest/handler.js";
import { compileRoutes } from "./rest/routes.js";
import { DETAILS_REGISTRY } from "./rest/status.js";
import { createStaticFiles } from "./static-files.js";
import { tracingInterceptor } from "./tracing.js";
import { PROXIED_SERVICES, createRoutes } from "./routes.js";
import { UNAVAILABLE_MESSAGE, type Upstream, createUpstream } from "./upstream.js";

type NodeHandler = ReturnType<typeof connectNodeAdapter>;
type NodeServerRequest = Parameters<NodeHandler>[0];
type NodeServerResponse = Parameters<NodeHandler>[1];

/** Options of {@link createGateway}. */
export interface GatewayOptions {
  /**
   * The scheduler's gRPC address, host:port (plain HTTP/2), or the addresses of several replicas:
   * calls go to one and fail over to the others when it cannot be reached (upstream.ts).
   */
  schedulerAddress: string | readonly string[];
  /**
   * Readiness beyond listening, answered on `GET /readyz` and by grpc.health.v1.Health (serve.ts:
   * the health service of one of the scheduler addresses answers SERVING). @default none: ready
   * while listening
   */
  ready?: ReadinessCheck | undefined;
  /**
   * How often a grpc.health.v1.Health Watch call re-evaluates readiness, in milliseconds.
   * @default 5000
   */
  healthWatchIntervalMs?: number;
  /**
   * Interface to listen on.
   * @default "127.0.0.1"
   */
  host?: string;
  /**
   * Port to listen on; 0 lets the OS pick one (see the result of `listen()`).
   * @default 8080
   */
  port?: number;
  /**
   * Logger of the gateway.
   * @default a silent logger
   */
  logger?: Logger;
  /**
   * How long `close()` waits for in-flight calls before cutting connections, in milliseconds.
   * @default 10_000
   */
  drainTimeoutMs?: number;
  /**
   * A connection that has not sent its first bytes after this long is closed, in milliseconds.
   * @default 10_000
   */
  prefaceTimeoutMs?: number;
  /**
   * An HTTP/1.1 connection whose request headers are not all in after this long is closed (Node's
   * `headersTimeout`), in milliseconds; checked every tenth of it.
   * @default 60_000
   */
  headersTimeoutMs?: number;
  /**
   * Transport to the upstream; when given, the gateway does not create (nor close) its own.
   * @default a gRPC transport to `schedulerAddress`, failing over between its addresses (upstream.ts)
   */
  transport?: Transport;
  /**
   * Verifies bearer tokens and so turns authentication and per-RPC authorization on; without one
   * every call is let in (AUTH_DISABLED=true). Tokens are forwarded to the scheduler, which checks
   * them again.
   * @default undefined (no authentication)
   */
  verifier?: TokenVerifier | undefined;
  /**
   * Largest request accepted, in bytes: each message of gRPC, gRPC-Web and Connect calls, and the
   * body of REST calls (413 above it). At most 16 MiB, the scheduler's own limit (a RangeError
   * otherwise).
   * @default 4 MiB
   */
  maxRequestBytes?: number;
  /**
   * Most streaming calls (WatchRun, GetTaskLogs, ...) one client, a token subject, may have open
   * at once; more are RESOURCE_EXHAUSTED. Applies when a verifier is set.
   * @default 32
   */
  maxStreamsPerClient?: number;
  /**
   * Most streams of the RPCs that need no token (reflection, health Watch) one remote address may
   * have open at once; more are RESOURCE_EXHAUSTED. Applies with authentication on or off. Behind a
   * proxy every client has the proxy's address, so it is the limit of all of them together.
   * @default 16
   */
  maxPublicStreamsPerAddress?: number;
  /**
   * A stream opened with a token ends UNAUTHENTICATED ("token expired") this long after the
   * token's `exp`, in milliseconds. serve.ts passes AUTH_CLOCK_SKEW, the tolerance the verifier
   * grants `exp`, so that a stream ends when its token stops being accepted.
   * @default 0 (at `exp`)
   */
  tokenExpiryGraceMs?: number;
  /**
   * Registry to record the gateway's metrics on (requests, token rejections, calls to the
   * scheduler; see metrics.ts); main.ts serves it on METRICS_PORT.
   * @default undefined (no metrics)
   */
  metrics?: Registry | undefined;
  /**
   * The folder of the built web UI (ui/, `vite build`), served under `/ui/` (static-files.ts).
   * @default the ui/dist folder of the checkout (`../../../ui/dist` from this module), where
   * scripts/build-dist.mjs also puts it in the compiled layout of the image
   */
  uiDir?: string;
}

/** Where the built UI is, relative to this module, in the checkout and in the compiled image alike. */
const DEFAULT_UI_DIR = fileURLToPath(new URL("../../../ui/dist", import.meta.url));

/** Lifecycle states of a {@link Gateway}. */
export type GatewayState = "idle" | "starting" | "listening" | "stopping" | "stopped";

/** Where a listening gateway can be reached. */
export interface GatewayAddress {
  /** Base URL for clients, e.g. "http://127.0.0.1:8080" (h2c and HTTP/1.1 alike). */
  url: string;
  /** Host the server listens on. */
  host: string;
  /** Port the server listens on (the actual one when 0 was asked for). */
  port: number;
}

/** The public entry point: serves the proxied services until closed. */
export interface Gateway {
  /** Current lifecycle state. */
  readonly state: GatewayState;
  /** Starts listening; throws {@link GatewayListenError} when the port cannot be bound. */
  listen(): Promise<GatewayAddress>;
  /** Drains and stops; idempotent, and safe in any state. */
  close(): Promise<void>;
}

/** The gateway could not bind its port; the message is one line naming host and port. */
export class GatewayListenError extends Error {
  override name = "GatewayListenError";
  constructor(
    readonly host: string,
    readonly port: number,
    /** The system error code, e.g. "EADDRINUSE". */
    readonly code: string | undefined,
    options?: ErrorOptions,
  ) {
    super(
      `cannot listen on ${formatHostPort(host, port)}: ${describeListenError(code, port, options?.cause)}`,
      options,
    );
  }
}

function describeListenError(code: string | undefined, port: number, cause: unknown): string {
  switch (code) {
    case "EADDRINUSE":
      return `port ${port} is already in use`;
    case "EACCES":
      return `permission denied for port ${port}`;
    case "EADDRNOTAVAIL":
      return "address not available on this host";
    default:
      return cause instanceof Error ? cause.message : String(cause);
  }
}

function formatHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

interface CompiledGatewayOptions {
  schedulerAddresses: readonly string[];
  ready: ReadinessCheck | undefined;
  healthWatchIntervalMs: number;
  host: string;
  port: number;
  logger: Logger;
  drainTimeoutMs: number;
  prefaceTimeoutMs: number;
  headersTimeoutMs: number;
  transport: Transport | undefined;
  verifier: TokenVerifier | undefined;
  maxRequestBytes: number;
  maxStreamsPerClient: number;
  maxPublicStreamsPerAddress: number;
  tokenExpiryGraceMs: number;
  metrics: Registry | undefined;
  uiDir: string;
}

/**
 * `maxRequestBytes` if it is a whole number from 1 to {@link MAX_GATEWAY_REQUEST_BYTES} (the
 * scheduler's receive limit, which a larger request would only reach to reset the upstream session
 * every call shares); a RangeError naming the option otherwise.
 */
function checkMaxRequestBytes(value: number): number {
  if (!Number.isInteger(value) || value < 1 || value > MAX_GATEWAY_REQUEST_BYTES)
    throw new RangeError(
      `createGateway: maxRequestBytes must be a whole number from 1 to ${MAX_GATEWAY_REQUEST_BYTES} ` +
        `(16 MiB, the largest message the scheduler accepts), got ${value}`,
    );
  return value;
}

function addGatewayDefaults(options: GatewayOptions): CompiledGatewayOptions {
  return {
    schedulerAddresses:
      typeof options.schedulerAddress === "string" ? [options.schedulerAddress] : options.schedulerAddress,
    ready: options.ready,
    healthWatchIntervalMs: options.healthWatchIntervalMs ?? 5000,
    host: options.host ?? "127.0.0.1",
    port: options.port ?? 8080,
    logger: options.logger ?? createLogger("gateway", "silent"),
    drainTimeoutMs: options.drainTimeoutMs ?? 10_000,
    prefaceTimeoutMs: options.prefaceTimeoutMs ?? 10_000,
    headersTimeoutMs: options.headersTimeoutMs ?? 60_000,
    transport: options.transport,
    verifier: options.verifier,
    maxRequestBytes: checkMaxRequestBytes(options.maxRequestBytes ?? 4 * 1024 * 1024),
    maxStreamsPerClient: options.maxStreamsPerClient ?? 32,
    maxPublicStreamsPerAddress: options.maxPublicStreamsPerAddress ?? 16,
    tokenExpiryGraceMs: options.tokenExpiryGraceMs ?? 0,
    metrics: options.metrics,
    uiDir: options.uiDir ?? DEFAULT_UI_DIR,
  };
}

/** Creates a gateway; nothing is bound until `listen()`. */
export function createGateway(options: GatewayOptions): Gateway {
  return new GatewayServer(addGatewayDefaults(options));
}

/** The HTTP/2 client connection preface (RFC 9113 §3.4). */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** Per-connection bookkeeping, used to drain. */
interface Connection {
  protocol: "sniffing" | "h1" | "h2";
  /** In-flight HTTP/1.1 requests on this connection. */
  active: number;
}

const SHUTDOWN_ERROR = (): ConnectError => new ConnectError("gateway is shutting down", Code.Unavailable);

/** Why the gateway's public /readyz is not ready when its readiness check fails. */
const NOT_READY = UNAVAILABLE_MESSAGE;

class GatewayServer implements Gateway {
  #state: GatewayState = "idle";
  #starting: Promise<unknown> | undefined;
  #closing: Promise<void> | undefined;
  readonly #options: CompiledGatewayOptions;
  readonly #log: Logger;
  readonly #net: net.Server;
  readonly #h1: http.Server;
  readonly #h2: http2.Http2Server;
  readonly #connections = new Map<net.Socket, Connection>();
  readonly #sessions = new Set<http2.ServerHttp2Session>();
  /** Ends streaming calls when draining starts. */
  readonly #streamShutdown = new AbortController();
  /** Aborts every handler when the drain timeout expires. */
  readonly #forceShutdown = new AbortController();
  readonly #upstream: Upstream | undefined;
  #drained: (() => void) | undefined;
  readonly #rest: RestHandler;
  readonly #ui: ReturnType<typeof createStaticFiles>;

  constructor(options: CompiledGatewayOptions) {
    this.#options = options;
    this.#log = options.logger;
    const metrics = options.metrics === undefined ? undefined : new GatewayMetrics(options.metrics);
    let transport = options.transport;
    if (transport === undefined) {
      this.#upstream = createUpstream({
        addresses: options.schedulerAddresses,
        interceptors: metrics === undefined ? [] : [metrics.upstreamInterceptor()],
        logger: this.#log,
      });
      transport = this.#upstream;
    }
    const routes = createRoutes({
      transport,
      streamShutdownSignal: this.#streamShutdown.signal,
      ready: () => this.#readiness(),
      healthWatchIntervalMs: options.healthWatchIntervalMs,
    });
    // Authentication and authorization come first, before a request message is read or parsed.
    const { verifier } = options;
    const onRefused: RefusalListener | undefined =
      metrics === undefined
        ? undefined
        : (e, authorization) => metrics.rejected(rejectionReason(e, authorization));
    const guardGate = guardRequestGate(verifier, onRefused);
    // Calls the gate refuses never reach the interceptors: they are counted here.
    const gate = (protocol: Protocol | undefined) =>
      logRefusals(this.#log, metrics, protocol, async (ctx: HandlerContext) => {
        watchDecodeErrors(ctx);
        await guardGate(ctx);
      });
    const requestGate = gate(undefined);
    const interceptors = [
      decodeErrorInterceptor(),
      logCalls(this.#log),
      guardInterceptor({
        verifier,
        streams: new StreamLimiter(options.maxStreamsPerClient),
        publicStreams: new StreamLimiter(
          options.maxPublicStreamsPerAddress,
          "too many concurrent token-free streams (reflection, health Watch) from this address",
        ),
        expiryGraceMs: options.tokenExpiryGraceMs,
        onRefused,
      }),
    ];
    const handler = connectNodeAdapter({
      routes,
      // Connect's JSON writes the google.rpc details StartRuns' results carry.
      jsonOptions: { registry: DETAILS_REGISTRY },
      shutdownSignal: this.#forceShutdown.signal,
      requestGate,
      // Token-free streams are counted by the address they come from (guard.ts).
      contextValues: (req) => {
        const values = createContextValues();
        values.set(kRemoteAddress, req.socket.remoteAddress);
        return values;
      },
      // The call's span outermost: the others, and the call to the scheduler, run in it.
      interceptors: [
        tracingInterceptor(),
        ...(metrics === undefined ? interceptors : [metrics.interceptor(), ...interceptors]),
      ],
      readMaxBytes: options.maxRequestBytes,
      maxTimeoutMs: MAX_TIMEOUT_MS,
      fallback: (req, res) => this.#fallback(req, res),
    });
    // REST calls reach the same handlers in process, through the same gate and interceptors (and
    // are authenticated before their body is read, too).
    this.#rest = createRestHandler({
      routes: compileRoutes(PROXIED_SERVICES),
      transport: createRouterTransport(routes, {
        router: {
          requestGate: gate("rest"),
          interceptors: [
            tracingInterceptor("rest"),
            ...(metrics === undefined ? interceptors : [metrics.interceptor("rest"), ...interceptors]),
          ],
          readMaxBytes: options.maxRequestBytes,
          maxTimeoutMs: MAX_TIMEOUT_MS,
          shutdownSignal: this.#forceShutdown.signal,
        },
      }),
      maxBodyBytes: options.maxRequestBytes,
      log: this.#log,
      authenticate:
        verifier === undefined
          ? undefined
          : (method, headers) =>
              authenticateRequest(verifier, method, headers.get("authorization"), onRefused),
      onRefused: metrics === undefined ? undefined : (method, code) => metrics.request(method, "rest", code),
    });

    this.#ui = createStaticFiles({ root: options.uiDir, log: this.#log });

    this.#h2 = http2.createServer({}, (req, res) => {
      resetWhenAnswered(req);
      handler(req, res);
    });
    this.#h2.on("session", (session) => this.#onSession(session));
    this.#h2.on("sessionError", (e) => this.#log.debug({ err: e }, "http/2 session error"));

    const headersTimeout = this.#options.headersTimeoutMs;
    this.#h1 = http.createServer(
      {
        headersTimeout,
        // Node's default; at least the headers' (it refuses a shorter request timeout).
        requestTimeout: Math.max(headersTimeout, 300_000),
        connectionsCheckingInterval: Math.max(10, Math.min(30_000, Math.floor(headersTimeout / 10))),
      },
      (req, res) => this.#onHttp1Request(req, res, handler),
    );
    this.#h1.on("clientError", (e, socket) => {
      this.#log.debug({ err: e }, "http/1.1 client error");
      socket.destroy();
    });

    this.#net = net.createServer((socket) => this.#onConnection(socket));
  }

  get state(): GatewayState {
    return this.#state;
  }

  listen(): Promise<GatewayAddress> {
    if (this.#state !== "idle")
      return Promise.reject(new Error(`gateway cannot listen: it is ${this.#state}`));
    this.#state = "starting";
    const starting = this.#listen();
    this.#starting = starting;
    return starting;
  }

  async #listen(): Promise<GatewayAddress> {
    const { host, port } = this.#options;
    try {
      await new Promise<void>((resolve, reject) => {
        this.#net.once("error", reject);
        this.#net.listen({ host, port }, () => {
          this.#net.off("error", reject);
          resolve();
        });
      });
    } catch (e) {
      if (this.#state === "starting") this.#state = "idle";
      const code = hasErrorCode(e, "EADDRINUSE") ? "EADDRINUSE" : errorCode(e);
      throw new GatewayListenError(host, port, code, { cause: e });
    }
    this.#net.on("error", (e) => this.#log.error({ err: e }, "gateway server error"));
    // The HTTP/1.1 server never listens itself: without this, Node never starts the check that
    // enforces its headersTimeout and requestTimeout on the connections handed to it.
    this.#h1.emit("listening");
    // close() may have been called meanwhile; it then drains this socket once we return.
    if (this.#state === "starting") this.#state = "listening";
    const address = this.#net.address();
    const actualPort = typeof address === "object" && address !== null ? address.port : port;
    return { url: `http://${formatHostPort(host, actualPort)}`, host, port: actualPort };
  }

  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#state = "stopping";
      this.#closing = this.#close();
    }
    return this.#closing;
  }

  async #close(): Promise<void> {
    // A close() during listen() waits for the outcome so that a bound port is not left behind.
    await this.#starting?.catch(() => undefined);
    if (this.#net.listening) {
      this.#net.close();
      this.#streamShutdown.abort(SHUTDOWN_ERROR());
      for (const session of this.#sessions) session.close();
      for (const [socket, conn] of this.#connections) {
        if (conn.protocol === "sniffing" || (conn.protocol === "h1" && conn.active === 0)) socket.destroy();
      }
      const drained = await this.#waitForDrain(this.#options.drainTimeoutMs);
      if (!drained) {
        this.#log.warn(
          { connections: this.#connections.size },
          "drain timeout expired; closing remaining connections",
        );
        this.#forceShutdown.abort(SHUTDOWN_ERROR());
        for (const session of this.#sessions) session.destroy();
        for (const socket of this.#connections.keys()) socket.destroy();
        await this.#waitForDrain(1000);
      }
    }
    this.#h1.close();
    this.#upstream?.close();
    this.#state = "stopped";
  }

  #waitForDrain(timeoutMs: number): Promise<boolean> {
    if (this.#connections.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#drained = undefined;
        resolve(false);
      }, timeoutMs);
      this.#drained = () => {
        clearTimeout(timer);
        this.#drained = undefined;
        resolve(true);
      };
    });
  }

  #onConnection(socket: net.Socket): void {
    if (this.#state !== "listening") {
      socket.destroy();
      return;
    }
    const conn: Connection = { protocol: "sniffing", active: 0 };
    this.#connections.set(socket, conn);
    socket.once("close", () => {
      this.#connections.delete(socket);
      if (this.#connections.size === 0) this.#drained?.();
    });
    const onError = (e: Error): void =>
      this.#log.debug({ err: e }, "connection error before the first request");
    socket.on("error", onError);
    socket.setTimeout(this.#options.prefaceTimeoutMs, () => socket.destroy());

    let seen = Buffer.alloc(0);
    const onReadable = (): void => {
      for (
        let chunk = socket.read() as Buffer | null;
        chunk !== null;
        chunk = socket.read() as Buffer | null
      ) {
        seen = Buffer.concat([seen, chunk]);
      }
      const n = Math.min(seen.length, H2_PREFACE.length);
      const isH2 = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      // Undecided while what arrived so far is a strict prefix of the preface.
      if (seen.length === 0 || (isH2 && seen.length < H2_PREFACE.length)) return;
      socket.off("readable", onReadable);
      socket.off("error", onError);
      socket.setTimeout(0);
      socket.unshift(seen);
      conn.protocol = isH2 ? "h2" : "h1";
      if (isH2) this.#h2.emit("connection", socket);
      else this.#h1.emit("connection", socket);
    };
    socket.on("readable", onReadable);
  }

  #onSession(session: http2.ServerHttp2Session): void {
    this.#sessions.add(session);
    session.once("close", () => this.#sessions.delete(session));
    // A session that opens while draining gets GOAWAY at once.
    if (this.#state === "stopping") session.close();
  }

  #onHttp1Request(req: http.IncomingMessage, res: http.ServerResponse, handler: NodeHandler): void {
    const conn = this.#connections.get(req.socket);
    if (conn !== undefined) {
      conn.active++;
      res.once("close", () => {
        conn.active--;
        if (conn.active === 0 && this.#state === "stopping") req.socket.end();
      });
    }
    if (this.#state === "stopping") res.setHeader("connection", "close");
    handler(req, res);
  }

  /** Undefined when ready (listening, and the readiness check passes), else why not: /readyz and health. */
  #readiness(): Promise<string | undefined> {
    if (this.#state !== "listening")
      return Promise.resolve(this.#state === "stopping" ? "stopping" : this.#state);
    return this.#options.ready?.() ?? Promise.resolve(undefined);
  }

  /**
   * What `GET /readyz` on the gateway's port, which anyone may ask, says: the gateway's own state
   * as it is, but {@link NOT_READY} for any reason of the readiness check, whose text names the
   * schedulers' internal addresses. The gateway logs which replica answered what (upstream.ts), and
   * the /readyz of its ops endpoint (METRICS_PORT, HEALTH_PORT: for operators) says it.
   */
  async #publicReadiness(): Promise<string | undefined> {
    if (this.#state !== "listening") return this.#readiness();
    try {
      const reason = await this.#readiness();
      if (reason === undefined) return undefined;
      this.#log.debug({ reason }, "not ready");
    } catch (e) {
      this.#log.debug({ err: e }, "the readiness check failed");
    }
    return NOT_READY;
  }

  #fallback(req: NodeServerRequest, res: NodeServerResponse): void {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz" && (req.method === "GET" || req.method === "HEAD")) {
      const stopping = this.#state !== "listening";
      sendJson(res, stopping ? 503 : 200, { status: stopping ? "stopping" : "ok" });
      return;
    }
    if (path === "/readyz" && (req.method === "GET" || req.method === "HEAD")) {
      this.#publicReadiness().then(
        (reason) =>
          sendJson(
            res,
            reason === undefined ? 200 : 503,
            reason === undefined ? { status: "ready" } : { status: "not ready", reason },
          ),
        () => sendJson(res, 503, { status: "not ready", reason: NOT_READY }),
      );
      return;
    }
    // The web UI's files under /ui/ (no token: they hold no data; its API calls carry one).
    if (this.#ui(req, res as http.ServerResponse)) return;
    if (this.#rest(req, res)) return;
    // A google.rpc.Status, like every other error of the REST surface.
    sendJson(res, 404, { code: Code.NotFound, message: `no route for ${req.method ?? "?"} ${path ?? "/"}` });
  }
}

function sendJson(res: NodeServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  // Both response flavours (http and http2 compat) have writeHead/end with these shapes.
  const r = res as http.ServerResponse;
  r.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  r.end(text);
}

function errorCode(e: unknown): string | undefined {
  return typeof e === "object" && e !== null && "code" in e && typeof e.code === "string"
    ? e.code
    : undefined;
}

/**
 * Logs each call the request gate refuses at debug level, as {@link logCalls} logs the others, and
 * counts it (`protocol` undefined: read from the content type).
 */
function logRefusals(
  log: Logger,
  metrics: GatewayMetrics | undefined,
  protocol: Protocol | undefined,
  gate: (ctx: HandlerContext) => Promise<void>,
): (ctx: HandlerContext) => Promise<void> {
  return async (ctx) => {
    try {
      await gate(ctx);
    } catch (e) {
      const err = ConnectError.from(e);
      metrics?.request(ctx.method, protocol ?? protocolOf(ctx.requestHeader.get("content-type")), err.code);
      log.debug({ procedure: ctx.url, code: Code[err.code], error: err.rawMessage }, "call refused");
      throw e;
    }
  };
}

/** Logs each call at debug level: procedure, protocol-independent outcome and time to response. */
function logCalls(log: Logger): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    // The subject only: tokens never reach the logs.
    const subject = (): string | undefined => req.contextValues.get(kPrincipal)?.subject;
    try {
      const res = await next(req);
      log.debug(
        { procedure: req.url, subject: subject(), ms: Math.round(performance.now() - started) },
        "call",
      );
      return res;
    } catch (e) {
      const err = ConnectError.from(e);
      log.debug(
        {
          procedure: req.url,
          subject: subject(),
          code: Code[err.code],
          error: err.rawMessage,
          ms: Math.round(performance.now() - started),
        },
        "call failed",
      );
      throw e;
    }
  };
}
