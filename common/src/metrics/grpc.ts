/**
 * gRPC call durations for grpc-js servers and clients, by method (`package.Service/Method`) and
 * status code name: a server interceptor (`new grpc.Server({ interceptors })`) and a client
 * interceptor (`new grpc.Client(address, credentials, { interceptors })`). A streaming call is
 * measured from its start to its status, so a Session lasts as long as the executor stays attached.
 */
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

/**
 * A grpc-js server interceptor recording `nexusflow_grpc_server_duration_seconds{method,code}`.
 * Put it first in the server's interceptors so that calls refused by later ones count too.
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
