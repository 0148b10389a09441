/**
 * A server span per call the gateway serves (gRPC, gRPC-Web, Connect, and REST once routed to its
 * RPC), which the HTTP instrumentation alone gives only to HTTP/1.1 requests: over HTTP/2 a gRPC
 * call would otherwise have no span at the gateway, and the scheduler's span would hang directly
 * under the caller's. The span follows the RPC conventions (common/src/telemetry/rpc.ts), and the
 * call goes on to the scheduler with the span's `traceparent`, so the scheduler's span is its child.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { type RpcServerSpan, startRpcServerSpan, tracingEnabled } from "@nexusflow/common/telemetry";
import { type Protocol, protocolOf } from "./metrics.js";

/** Connect's snake_case name of a code (`not_found`), as `rpc.connect_rpc.error_code` wants it. */
function codeName(code: Code): string {
  return (Code[code] ?? "unknown").replace(
    /[A-Z]/g,
    (c, i: number) => (i === 0 ? "" : "_") + c.toLowerCase(),
  );
}

/**
 * The interceptor that opens the call's span, outermost, so the other interceptors and the
 * forwarding run in it. `protocol` as for the metrics: undefined reads it from the content type.
 */
export function tracingInterceptor(protocol?: Protocol): Interceptor {
  return (next) => async (req) => {
    if (!tracingEnabled()) return next(req);
    const proto = protocol ?? protocolOf(req.header.get("content-type"));
    const span = startRpcServerSpan({
      system: proto === "grpc" || proto === "grpc-web" ? "grpc" : "connect_rpc",
      service: req.service.typeName,
      method: req.method.name,
      header: (name) => req.header.get(name) ?? undefined,
      attributes: { "nexusflow.gateway.protocol": proto },
    });
    if (span === undefined) return next(req);
    // The forwarder passes the request's headers on: the upstream call becomes this span's child.
    if (span.traceparent !== undefined) req.header.set("traceparent", span.traceparent);
    let res;
    try {
      res = await span.run(() => next(req));
    } catch (e) {
      const code = ConnectError.from(e).code;
      span.end(code, codeName(code));
      throw e;
    }
    if (!res.stream) {
      span.end(0);
      return res;
    }
    return { ...res, message: endWithStream(res.message, span) };
  };
}

/** Passes `source` on and ends the span with the stream's outcome. */
async function* endWithStream<T>(source: AsyncIterable<T>, span: RpcServerSpan): AsyncGenerator<T> {
  // A consumer that stops early (the client went away) leaves it CANCELLED.
  let code: number = Code.Canceled;
  try {
    yield* source;
    code = 0;
  } catch (e) {
    code = ConnectError.from(e).code;
    throw e;
  } finally {
    span.end(code, code === 0 ? undefined : codeName(code));
  }
}
