/**
 * The gateway's metrics: requests by route (the RPC every protocol maps to, `Service/Method`),
 * protocol (grpc, grpc-web, connect, rest) and status (the RPC status code name, the same for every
 * protocol), their durations, token rejections by reason, and the durations of the calls it makes
 * to the scheduler. Registered on the gateway's own registry; served by main.ts on METRICS_PORT.
 */
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { AuthError } from "@nexusflow/common";
import {
  Children1,
  Children2,
  Children3,
  Counter,
  GrpcCallDurations,
  Histogram,
  LATENCY_BUCKETS,
  type Registry,
  grpcCodeName,
} from "@nexusflow/common/metrics";

/** The protocol of a call, from its content type. */
export type Protocol = "grpc" | "grpc-web" | "connect" | "rest";

/** Why a token was refused: a bounded set, never the token or the message. */
export type RejectionReason =
  | "missing_token"
  | "malformed_header"
  | "malformed_token"
  | "expired"
  | "not_yet_valid"
  | "issuer"
  | "audience"
  | "claims"
  | "signature"
  | "unknown_key"
  | "algorithm"
  | "missing_scope"
  | "no_access_rule"
  | "keys_unavailable"
  | "invalid";

function causeCode(e: AuthError): { code: unknown; claim: unknown } {
  const cause = e.cause as { code?: unknown; claim?: unknown } | undefined;
  return { code: cause?.code, claim: cause?.claim };
}

/**
 * The reason of a refused call, from the AuthError's code and its cause's (jose's) error code,
 * and the authorization header it was refused for; never from message text.
 */
export function rejectionReason(e: AuthError, authorization: string | null | undefined): RejectionReason {
  if (e.code === "UNAVAILABLE") return "keys_unavailable";
  if (e.code === "PERMISSION_DENIED") return e.scope === undefined ? "no_access_rule" : "missing_scope";
  if (authorization === null || authorization === undefined || authorization.trim() === "")
    return "missing_token";
  const { code, claim } = causeCode(e);
  if (code === undefined) return "malformed_header";
  switch (code) {
    case "ERR_JWT_EXPIRED":
      return "expired";
    case "ERR_JWT_CLAIM_VALIDATION_FAILED":
      return claim === "nbf"
        ? "not_yet_valid"
        : claim === "iss"
          ? "issuer"
          : claim === "aud"
            ? "audience"
            : "claims";
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return "signature";
    case "ERR_JWKS_NO_MATCHING_KEY":
    case "ERR_JWKS_MULTIPLE_MATCHING_KEYS":
      return "unknown_key";
    case "ERR_JOSE_ALG_NOT_ALLOWED":
    case "ERR_JOSE_NOT_SUPPORTED":
      return "algorithm";
    case "ERR_JWS_INVALID":
    case "ERR_JWT_INVALID":
      return "malformed_token";
    default:
      return "invalid";
  }
}

/** The protocol of a Connect-adapter call from its content type. */
export function protocolOf(contentType: string | null): Exclude<Protocol, "rest"> {
  if (contentType === null) return "connect";
  if (contentType.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType.startsWith("application/grpc")) return "grpc";
  return "connect";
}

type Child<M extends { labels: (...v: string[]) => unknown }> = ReturnType<M["labels"]>;

/** The gateway's metrics on `registry`. */
export class GatewayMetrics {
  readonly #requests: Children3<Child<Counter<"route" | "protocol" | "status">>>;
  readonly #durations: Children2<Child<Histogram<"route" | "protocol">>>;
  readonly #rejections: Children1<Child<Counter<"reason">>>;
  readonly #upstream: GrpcCallDurations;
  readonly #routes = new WeakMap<DescMethod, string>();

  constructor(registry: Registry) {
    this.#requests = new Children3(
      new Counter({
        name: "nexusflow_gateway_requests_total",
        help: "Calls answered by the gateway, by route (Service/Method), protocol (grpc, grpc-web, connect, rest) and status (the RPC status code name).",
        labelNames: ["route", "protocol", "status"] as const,
        registers: [registry],
      }),
    );
    this.#durations = new Children2(
      new Histogram({
        name: "nexusflow_gateway_request_duration_seconds",
        help: "Time from a call's arrival to its answer (streams: to their end), by route and protocol.",
        labelNames: ["route", "protocol"] as const,
        buckets: [...LATENCY_BUCKETS],
        registers: [registry],
      }),
    );
    this.#rejections = new Children1(
      new Counter({
        name: "nexusflow_gateway_jwt_rejections_total",
        help: "Calls refused for their bearer token or its scope, by reason.",
        labelNames: ["reason"] as const,
        registers: [registry],
      }),
    );
    this.#upstream = new GrpcCallDurations(registry, "client");
  }

  #route(method: DescMethod): string {
    let route = this.#routes.get(method);
    if (route === undefined) {
      route = `${method.parent.typeName}/${method.name}`;
      this.#routes.set(method, route);
    }
    return route;
  }

  /** Counts a call of `method` over `protocol` that ended with `code` (0: OK), begun at `startedMs`. */
  request(method: DescMethod, protocol: Protocol, code: number, startedMs?: number): void {
    const route = this.#route(method);
    this.#requests.get(route, protocol, grpcCodeName(code)).inc();
    if (startedMs !== undefined)
      this.#durations.get(route, protocol).observe((performance.now() - startedMs) / 1000);
  }

  /** Counts a refused token. */
  rejected(reason: RejectionReason): void {
    this.#rejections.get(reason).inc();
  }

  /**
   * The interceptor counting calls of one kind: `rest` for the REST surface (whose calls reach the
   * handlers through an in-process transport), undefined to read the protocol from the content type.
   * Put it first, so that calls refused by later interceptors count too.
   */
  interceptor(protocol?: Protocol): Interceptor {
    return (next) => async (req) => {
      const started = performance.now();
      const proto = protocol ?? protocolOf(req.header.get("content-type"));
      let res;
      try {
        res = await next(req);
      } catch (e) {
        this.request(req.method, proto, ConnectError.from(e).code, started);
        throw e;
      }
      if (!res.stream) {
        this.request(req.method, proto, 0, started);
        return res;
      }
      return { ...res, message: this.#counting(res.message, req.method, proto, started) };
    };
  }

  async *#counting<T>(
    source: AsyncIterable<T>,
    method: DescMethod,
    protocol: Protocol,
    started: number,
  ): AsyncGenerator<T> {
    let code: number = Code.Canceled;
    try {
      yield* source;
      code = 0;
    } catch (e) {
      code = ConnectError.from(e).code;
      throw e;
    } finally {
      this.request(method, protocol, code, started);
    }
  }

  /** The interceptor of the upstream transport: `nexusflow_grpc_client_duration_seconds`. */
  upstreamInterceptor(): Interceptor {
    return (next) => async (req) => {
      const started = performance.now();
      const path = this.#route(req.method);
      let res;
      try {
        res = await next(req);
      } catch (e) {
        this.#upstream.observe(path, ConnectError.from(e).code, started);
        throw e;
      }
      if (!res.stream) {
        this.#upstream.observe(path, 0, started);
        return res;
      }
      const upstream = this.#upstream;
      return {
        ...res,
        message: (async function* () {
          let code: number = Code.Canceled;
          try {
            yield* res.message;
            code = 0;
          } catch (e) {
            code = ConnectError.from(e).code;
            throw e;
          } finally {
            upstream.observe(path, code, started);
          }
        })(),
      };
    };
  }
}
