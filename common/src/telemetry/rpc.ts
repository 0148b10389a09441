/**
 * Server spans of RPCs that no instrumentation sees: the gRPC instrumentation patches grpc-js and
 * the HTTP one Node's `http` module, so calls a Connect handler serves over HTTP/2 (the gateway's
 * gRPC, gRPC-Web and Connect calls over h2) would have no span. {@link startRpcServerSpan} makes
 * one per call, after the RPC semantic conventions (`rpc.system`, `rpc.service`, `rpc.method`, the
 * status code), parented on the span active in the calling context (the HTTP/1.1 server span) or
 * else on the incoming `traceparent`.
 */
import { type Attributes, type Context, SpanKind, SpanStatusCode, context, trace } from "@opentelemetry/api";
import { contextFromTraceparent, tracer, traceparentOf, tracingEnabled } from "./index.js";

/** The `rpc.system` values the conventions define for the protocols served. */
export type RpcSystem = "grpc" | "connect_rpc";

/** An RPC the server received. */
export interface RpcServerCall {
  system: RpcSystem;
  /** The fully qualified service, e.g. "nexusflow.v1.WorkflowService". */
  service: string;
  /** The method's name, e.g. "StartRun". */
  method: string;
  /** Reads a request header (for the W3C `traceparent`). */
  header(name: string): string | undefined;
  /** More attributes of the span. */
  attributes?: Attributes;
}

/** The span of one RPC: runs the handler in its context, and ends with the call's status. */
export interface RpcServerSpan {
  /** The `traceparent` naming this span, for the calls the handler makes (a proxy's upstream call). */
  readonly traceparent: string | undefined;
  /** Runs `fn` with this span active. */
  run<T>(fn: () => T): T;
  /**
   * Ends the span with the call's status: `code` is the gRPC status code (Connect's codes are the
   * same numbers), `codeName` Connect's snake_case name of it (`not_found`), for `connect_rpc`.
   */
  end(code: number, codeName?: string): void;
}

/** gRPC codes a server span reports as an error (the conventions' list for servers). */
const SERVER_ERRORS = new Set([2, 4, 12, 13, 14, 15]);

/** Starts the server span of `call`; undefined with tracing off. */
export function startRpcServerSpan(call: RpcServerCall): RpcServerSpan | undefined {
  if (!tracingEnabled()) return undefined;
  // Over HTTP/1.1 the HTTP instrumentation's server span is active and already the child of the
  // incoming traceparent; over HTTP/2 nothing is, and the headers name the parent.
  const active = context.active();
  const current = trace.getSpan(active);
  const parent: Context =
    current !== undefined && trace.isSpanContextValid(current.spanContext())
      ? active
      : contextFromTraceparent(call.header("traceparent"), active);
  const span = tracer("nexusflow-gateway").startSpan(
    `${call.service}/${call.method}`,
    {
      kind: SpanKind.SERVER,
      attributes: {
        "rpc.system": call.system,
        "rpc.service": call.service,
        "rpc.method": call.method,
        ...call.attributes,
      },
    },
    parent,
  );
  const spanContext = trace.setSpan(parent, span);
  let ended = false;
  return {
    traceparent: traceparentOf(span),
    run: (fn) => context.with(spanContext, fn),
    end(code, codeName) {
      if (ended) return;
      ended = true;
      if (call.system === "grpc") span.setAttribute("rpc.grpc.status_code", code);
      else if (code !== 0 && codeName !== undefined)
        span.setAttribute("rpc.connect_rpc.error_code", codeName);
      if (SERVER_ERRORS.has(code))
        span.setStatus({
          code: SpanStatusCode.ERROR,
          ...(codeName === undefined ? {} : { message: codeName }),
        });
      span.end();
    },
  };
}
