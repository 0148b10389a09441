/**
 * Options of {@link NexusflowClient}: the public interface with its documented defaults, and the
 * one function that applies and validates them, so the rest of the client only ever sees a
 * complete, checked {@link CompiledClientOptions}.
 */
import type { Interceptor } from "@connectrpc/connect";
import { NexusflowClientError } from "./errors.js";

/** The wire protocol: gRPC (HTTP/2; the scheduler and the gateway) or Connect (the gateway only). */
export type Protocol = "grpc" | "connect";

/** What a {@link TokenProvider} is asked for. */
export interface TokenRequest {
  /** The RPC about to be sent, `package.Service/Method` (e.g. `nexusflow.v1.WorkflowService/StartRun`). */
  readonly method: string;
  /** Aborted when the call is (its deadline, the caller's signal). */
  readonly signal: AbortSignal;
}

/**
 * Returns the bearer token for one request. Called for every request the client sends, a retry
 * included, so a token rotated or refreshed meanwhile is used at once; cache in it as you see fit.
 * When it throws (or returns no token), that call fails with UNAUTHENTICATED, its error as `cause`,
 * and nothing is sent.
 */
export type TokenProvider = (request: TokenRequest) => string | Promise<string>;

/** Retry of UNAVAILABLE for idempotent calls: capped exponential backoff with full jitter. */
export interface RetryOptions {
  /**
   * Most attempts of one call, the first included (1 turns retrying off).
   * @default 4
   */
  maxAttempts?: number | undefined;
  /**
   * Upper bound of the first delay, in milliseconds (each delay is uniform in [0, bound]).
   * @default 100
   */
  initialDelayMs?: number | undefined;
  /**
   * Cap of the bound, in milliseconds; it doubles after every failed attempt until it reaches this.
   * @default 2000
   */
  maxDelayMs?: number | undefined;
}

/** What a {@link NexusflowClient} is built from. Every field is optional. */
export interface ClientOptions {
  /**
   * Where the API is served: the gateway's base URL (`http://host:port`, `https://host`, with a
   * path prefix if a proxy adds one), or `host:port` for plain HTTP. With `protocol: "grpc"` the
   * scheduler's own address works too.
   * @default "http://127.0.0.1:8080"
   */
  baseUrl?: string | undefined;
  /**
   * Wire protocol. gRPC needs HTTP/2 (h2c for `http:`, TLS with ALPN for `https:`); Connect also
   * runs over HTTP/1.1, through proxies that do not speak HTTP/2.
   * @default "grpc"
   */
  protocol?: Protocol | undefined;
  /**
   * HTTP version of the Connect protocol (gRPC always uses HTTP/2).
   * @default "1.1"
   */
  httpVersion?: "1.1" | "2" | undefined;
  /**
   * Bearer token sent as `authorization: Bearer <token>` with every call: a fixed string, or a
   * {@link TokenProvider} called for every request.
   * @default none (no authorization header; a server with authentication on answers UNAUTHENTICATED)
   */
  token?: string | TokenProvider | undefined;
  /**
   * Deadline of each unary call, in milliseconds, retries included; a call's own `timeoutMs`
   * overrides it. 0 means none. Streams (WatchRun, GetTaskLogs, GetArtifact) have none unless
   * the call sets one.
   * @default 30000
   */
  timeoutMs?: number | undefined;
  /**
   * Retry of UNAVAILABLE (the server unreachable, restarting, or its database briefly gone) for
   * idempotent calls only: every read, the writes documented as idempotent (RegisterWorkflow,
   * CancelRun, pausing a schedule...), and StartRun, SignalRun, RerunRun, TriggerSchedule and
   * PublishEvent with an idempotency key (`IDEMPOTENT_METHODS`, `isIdempotentCall`). `false`
   * never retries.
   * @default { maxAttempts: 4, initialDelayMs: 100, maxDelayMs: 2000 }
   */
  retry?: RetryOptions | false | undefined;
  /**
   * Interceptors of your own (logging, tracing headers), run inside the client's retry and
   * authorization, once per attempt.
   * @default []
   */
  interceptors?: readonly Interceptor[] | undefined;
}

/** {@link RetryOptions} with every default applied. */
export interface CompiledRetryOptions {
  readonly maxAttempts: number;
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
}

/** {@link ClientOptions} with every default applied and every value checked. */
export interface CompiledClientOptions {
  /** Normalised base URL, without a trailing slash. */
  readonly baseUrl: string;
  readonly protocol: Protocol;
  readonly httpVersion: "1.1" | "2";
  /** Makes each request's token; undefined sends none. */
  readonly token: TokenProvider | undefined;
  /** 0 means no deadline. */
  readonly timeoutMs: number;
  readonly retry: CompiledRetryOptions;
  readonly interceptors: readonly Interceptor[];
}

/** Largest delay or timeout accepted: Node's timer limit (~24.8 days); longer ones would fire at once. */
const MAX_MS = 2_147_483_647;

function integer(name: string, value: number | undefined, def: number, min: number, max: number): number {
  const v = value ?? def;
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new NexusflowClientError(
      "INVALID_OPTIONS",
      `${name} must be an integer between ${min} and ${max}, got ${String(v)}`,
    );
  }
  return v;
}

/** The base URL for `http(s)://...` or `host:port`; throws INVALID_OPTIONS for anything else. */
export function normaliseBaseUrl(address: string): string {
  if (typeof address !== "string" || address.trim() === "") {
    throw new NexusflowClientError("INVALID_OPTIONS", "baseUrl must be a non-empty string");
  }
  const text = /^[a-z][a-z0-9+.-]*:\/\//i.test(address) ? address : `http://${address}`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new NexusflowClientError(
      "INVALID_OPTIONS",
      `baseUrl: not a URL or host:port: ${JSON.stringify(address)}`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new NexusflowClientError(
      "INVALID_OPTIONS",
      `baseUrl: expected http or https, got ${JSON.stringify(address)}`,
    );
  }
  if (url.search !== "" || url.hash !== "") {
    throw new NexusflowClientError("INVALID_OPTIONS", `baseUrl: no query or fragment allowed: ${address}`);
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
}

function tokenProvider(token: ClientOptions["token"]): TokenProvider | undefined {
  if (token === undefined) return undefined;
  if (typeof token === "function") return token;
  if (typeof token !== "string" || token.trim() === "") {
    throw new NexusflowClientError(
      "INVALID_OPTIONS",
      "token must be a non-empty string or a function returning one",
    );
  }
  return () => token;
}

/** Applies the defaults of {@link ClientOptions} and validates them. Throws {@link NexusflowClientError} `INVALID_OPTIONS`. */
export function compileClientOptions(options: ClientOptions = {}): CompiledClientOptions {
  const protocol = options.protocol ?? "grpc";
  if (protocol !== "grpc" && protocol !== "connect") {
    throw new NexusflowClientError(
      "INVALID_OPTIONS",
      `protocol must be "grpc" or "connect", got ${JSON.stringify(protocol)}`,
    );
  }
  const httpVersion = options.httpVersion ?? (protocol === "grpc" ? "2" : "1.1");
  if (httpVersion !== "1.1" && httpVersion !== "2") {
    throw new NexusflowClientError(
      "INVALID_OPTIONS",
      `httpVersion must be "1.1" or "2", got ${JSON.stringify(httpVersion)}`,
    );
  }
  if (protocol === "grpc" && httpVersion !== "2") {
    throw new NexusflowClientError(
      "INVALID_OPTIONS",
      'gRPC needs HTTP/2: use httpVersion "2" or protocol "connect"',
    );
  }
  const retry: RetryOptions = options.retry === false ? { maxAttempts: 1 } : (options.retry ?? {});
  const initialDelayMs = integer("retry.initialDelayMs", retry.initialDelayMs, 100, 1, MAX_MS);
  return {
    baseUrl: normaliseBaseUrl(options.baseUrl ?? "http://127.0.0.1:8080"),
    protocol,
    httpVersion,
    token: tokenProvider(options.token),
    timeoutMs: integer("timeoutMs", options.timeoutMs, 30_000, 0, MAX_MS),
    retry: {
      maxAttempts: integer("retry.maxAttempts", retry.maxAttempts, 4, 1, 1_000),
      initialDelayMs,
      maxDelayMs: integer(
        "retry.maxDelayMs",
        retry.maxDelayMs,
        Math.max(2_000, initialDelayMs),
        initialDelayMs,
        MAX_MS,
      ),
    },
    interceptors: [...(options.interceptors ?? [])],
  };
}
