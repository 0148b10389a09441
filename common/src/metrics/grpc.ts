/**
 * gRPC call durations for grpc-js servers and clients, by method (`package.Service/Method`) and
 * status code name: for a server, its handlers wrapped ({@link meterServerHandlers}) or a server
 * interceptor (`new grpc.Server({ interceptors })`, for a server with other interceptors that may
 * end a call before its handler); for a client, a client interceptor (`new grpc.Client(address,
 * credentials, { interceptors })`). A streaming call is measured from its start to its status, so
 * a Session lasts as long as the executor stays attached.
 */
import { errorMonitor } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { Histogram, type Registry } from "prom-client";
import { LATENCY_BUCKETS } from "./buckets.js";
import { type HistogramChild, histogramCells } from "./cells.js";
import { Children2 } from "./children.js";
import { METRIC_PREFIX } from "./registry.js";

/** Status code names by number ("OK", "NOT_FOUND", ...). */
const CODE_NAMES: readonly string[] = Object.values(grpc.status)
  .filter((v): v is number => typeof v === "number")
  .reduce<string[]>((names, code) => {
    names[code] = grpc.status[code] as string;
    return names;
  }, []);

/** The gRPC name of a status code ("NOT_FOUND"); Connect's codes have the same numbers. */
export function grpcCodeName(code: number): string {
  return CODE_NAMES[code] ?? "UNKNOWN";
}

/** The method label of a path "/package.Service/Method". */
function methodOf(path: string): string {
  return path.startsWith("/") ? path.slice(1) : path;
}

const HELP = {
  server:
    "Duration of gRPC calls handled by this server, from start to status (streams: their lifetime), by method and status code.",
  client:
    "Duration of gRPC calls made by this process, from start to status (streams: their lifetime), by method and status code.",
};

/**
 * `nexusflow_grpc_server_duration_seconds` or `nexusflow_grpc_client_duration_seconds` by method
 * and code, with its children cached; for interceptors of other RPC libraries (Connect) too.
 */
export class GrpcCallDurations {
  readonly #children: Children2<HistogramChild>;
  readonly #methods = new Map<string, string>();

  constructor(registry: Registry, side: "server" | "client") {
    const histogram = new Histogram({
      name: `${METRIC_PREFIX}grpc_${side}_duration_seconds`,
      help: HELP[side],
      labelNames: ["method", "code"] as const,
      buckets: [...LATENCY_BUCKETS],
      registers: [registry],
    });
    // Cells (cells.ts): a call's observation skips prom-client's per-call label checks and key strings.
    this.#children = new Children2(histogramCells(histogram));
  }

  /** Records a call of `path` ("/package.Service/Method" or without the slash) that began at `startedMs` (performance.now()). */
  observe(path: string, code: number, startedMs: number): void {
    let method = this.#methods.get(path);
    if (method === undefined) {
      method = methodOf(path);
      this.#methods.set(path, method);
    }
    this.#children.get(method, grpcCodeName(code)).observe((performance.now() - startedMs) / 1000);
  }
}

/** A grpc-js service error's status code (UNKNOWN when it has none: what grpc-js sends then). */
function errorCode(error: Partial<grpc.StatusObject> | Error): number {
  const code = (error as { code?: unknown }).code;
  return typeof code === "number" ? code : grpc.status.UNKNOWN;
}

type UnaryLike = (
  call: grpc.ServerUnaryCall<unknown, unknown>,
  callback: grpc.sendUnaryData<unknown>,
) => void;
type StreamLike = (call: grpc.ServerWritableStream<unknown, unknown>) => void;

/**
 * `handler` of the method at `path`, measured: a unary or client-streaming one (with a callback).
 * Its first answer counts (CANCELLED when the client was gone by then, whatever the handler said);
 * a handler that throws counts as UNKNOWN, which grpc-js then sends.
 */
function meteredUnary(
  durations: GrpcCallDurations,
  path: string,
  handler: UnaryLike,
  self: object,
): UnaryLike {
  return (call, callback) => {
    const started = performance.now();
    let answered = false;
    try {
      handler.call(self, call, (error, value, trailer, flags) => {
        if (!answered) {
          answered = true;
          const code = call.cancelled ? grpc.status.CANCELLED : error ? errorCode(error) : grpc.status.OK;
          durations.observe(path, code, started);
        }
        callback(error, value, trailer, flags);
      });
    } catch (e) {
      if (!answered) {
        answered = true;
        durations.observe(path, grpc.status.UNKNOWN, started);
      }
      throw e;
    }
  };
}

/** `handler` of the method at `path`, measured: a server-streaming or bidirectional one. */
function meteredStream(
  durations: GrpcCallDurations,
  path: string,
  handler: StreamLike,
  self: object,
): StreamLike {
  return (call) => {
    const started = performance.now();
    let done = false;
    const end = (code: number): void => {
      if (done) return;
      done = true;
      durations.observe(path, code, started);
    };
    // An 'error' (the handler's status) comes first: grpc-js ends the stream on it, so 'finish' follows.
    call.on(errorMonitor, (error: Partial<grpc.StatusObject>) => end(errorCode(error)));
    call.once("finish", () => end(grpc.status.OK));
    call.once("cancelled", () => end(grpc.status.CANCELLED));
    handler.call(self, call);
  };
}

/**
 * Records `nexusflow_grpc_server_duration_seconds{method,code}` for every service added to
 * `server` from now on (its `addService`, on this one server, wraps each handler), without an
 * interceptor: grpc-js runs a server with no interceptors without its interceptor machinery, which
 * cost ~1.4 KB and a few microseconds a call (bench/notes/27-session-thirty-one.md). A unary call
 * is measured from its handler's start to its answer (CANCELLED if the client had gone by then); a
 * stream to its finish, error or cancellation.
 *
 * What grpc-js ends by itself is not measured, where the interceptor measures it: a call that never
 * reaches a handler (an unknown method, a request over the receive limit, a second unary message),
 * and an answer it cannot serialize (sent as INTERNAL, counted with the handler's code). On a
 * server whose interceptors may refuse calls, use {@link grpcServerMetrics} first among them.
 */
export function meterServerHandlers(server: grpc.Server, registry: Registry): void {
  const durations = new GrpcCallDurations(registry, "server");
  const addService = server.addService.bind(server);
  server.addService = (service, implementation) => {
    // The implementation's own handlers stay reachable (and called with it as `this`, as grpc-js
    // calls them); the metered ones shadow them.
    const metered = Object.create(implementation) as grpc.UntypedServiceImplementation;
    for (const [name, method] of Object.entries(service)) {
      // grpc-js looks a method's handler up by its name, then by its original (camelCase) name.
      const key = implementation[name] !== undefined ? name : (method.originalName ?? name);
      const handler = implementation[key] as unknown;
      if (typeof handler !== "function") continue;
      metered[key] = method.responseStream
        ? meteredStream(durations, method.path, handler as StreamLike, implementation)
        : meteredUnary(durations, method.path, handler as UnaryLike, implementation);
    }
    addService(service, metered);
  };
}

/**
 * A grpc-js server interceptor recording `nexusflow_grpc_server_duration_seconds{method,code}`.
 * Put it first in the server's interceptors so that calls refused by later ones count too. (A
 * server without other interceptors measures its calls more cheaply with {@link meterServerHandlers}.)
 */
export function grpcServerMetrics(registry: Registry): grpc.ServerInterceptor {
  const durations = new GrpcCallDurations(registry, "server");
  return (method, call) => {
    const started = performance.now();
    let done = false;
    const finish = (code: number): void => {
      if (done) return;
      done = true;
      durations.observe(method.path, code, started);
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => next({ onCancel: () => finish(grpc.status.CANCELLED) }),
      sendStatus: (status, next) => {
        finish(status.code);
        next(status);
      },
    });
  };
}

/** A grpc-js client interceptor recording `nexusflow_grpc_client_duration_seconds{method,code}`. */
export function grpcClientMetrics(registry: Registry): grpc.Interceptor {
  const durations = new GrpcCallDurations(registry, "client");
  return (options, nextCall) => {
    const path = options.method_definition.path;
    const started = performance.now();
    return new grpc.InterceptingCall(nextCall(options), {
      start: (metadata, listener, next) => {
        next(metadata, {
          onReceiveStatus: (status, nextStatus) => {
            durations.observe(path, status.code, started);
            nextStatus(status);
          },
        });
      },
    });
  };
}
