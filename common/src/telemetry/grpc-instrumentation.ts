/**
 * `@opentelemetry/instrumentation-grpc` with its server side made cheap for the calls whose trace
 * is not recorded. The package's server patch does, for every call, sampled or not: a
 * `JSON.stringify` for a debug line, two string splits of the method's name, a shimmer wrap of the
 * call's `sendMetadata` (a property definition), a binding of the call's event emitter to the
 * context (six wrapped methods and a listener map), and a wrapped callback. At 10% sampling nine
 * calls in ten paid all of it for a span that records nothing (bench/notes/27-session-thirty-one.md).
 *
 * {@link GrpcTracing} keeps the package's client side and module patching as they are, and
 * replaces only `Server.prototype.register`'s patch (the package's own `init()`, then its `_wrap`):
 * - what depends on the method alone (span name, `rpc.*` attributes, whether it is ignored) is
 *   worked out once when the method is registered;
 * - each call extracts its parent from the metadata (the configured propagator) and starts its
 *   span; the `rpc.*` attributes are set once it records (as the package sets them: given to
 *   `startSpan`, the SDK would check and copy them for every call, recorded or not);
 * - a call whose span records nothing runs its handler in that span's context (its trace id and
 *   sampled flag still propagate to what the call starts), unwrapped; a stream's emitter is still
 *   bound, so that its listeners run in the call's context;
 * - a recorded call is handled as the package handles it: the emitter bound, the status and the
 *   `rpc.grpc.status_code`, `grpc.error_name` and `grpc.error_message` attributes set when the
 *   call ends, the span ended then. Unlike the package: a unary callback's trailer and flags are
 *   passed on (the package drops them); an error without a code is UNKNOWN (2), as grpc-js sends
 *   it; a stream the client cancels ends its span, CANCELLED (the package's stays open).
 *
 * When request or response metadata is captured as attributes (`metadataToSpanAttributes.server`,
 * as configured when grpc-js is loaded), the package's own server patch stays, which captures them.
 */
import { errorMonitor } from "node:events";
import type * as grpc from "@grpc/grpc-js";
import {
  type Attributes,
  type Context,
  type Span,
  type SpanOptions,
  type TextMapGetter,
  type Tracer,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  propagation,
  trace,
} from "@opentelemetry/api";
import { GrpcInstrumentation, type GrpcInstrumentationConfig } from "@opentelemetry/instrumentation-grpc";

/** A handler as grpc-js keeps it in `Server.handlers` (grpc-js 1.x, server.js `register`). */
interface HandlerEntry {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- grpc-js calls it with its call objects
  func: (...args: any[]) => unknown;
  type: string;
}

type Register = (
  this: grpc.Server,
  name: string,
  handler: unknown,
  serialize: unknown,
  deserialize: unknown,
  type: string,
) => boolean;

/** Reads propagation fields from a call's metadata (string values only). */
const METADATA_GETTER: TextMapGetter<grpc.Metadata> = {
  get: (carrier, key) => {
    const values = carrier.get(key);
    if (values.length === 0) return undefined;
    return values.length === 1 ? String(values[0]) : values.map(String);
  },
  keys: (carrier) => Object.keys(carrier.getMap()),
};

/** Whether `method` (the last part of a path) matches one of the patterns, as the package matches them. */
function ignored(method: string, patterns: GrpcInstrumentationConfig["ignoreGrpcMethods"]): boolean {
  for (const pattern of patterns ?? []) {
    if (
      typeof pattern === "string"
        ? pattern.toLowerCase() === method.toLowerCase()
        : pattern instanceof RegExp
          ? pattern.test(method)
          : typeof pattern === "function" && pattern(method)
    )
      return true;
  }
  return false;
}

/** A grpc-js service error's status code (UNKNOWN, 2, when it has none: what grpc-js sends then). */
function errorCode(error: { code?: unknown }): number {
  return typeof error.code === "number" ? error.code : 2;
}

/** Sets the span's status and status-code attributes for a call that ended with `error` (or OK). */
function endCallSpan(span: Span, error: (Error & { code?: unknown }) | null | undefined): void {
  // An error whose code is 0 (OK) is sent as OK by grpc-js: the span is not an error then.
  const code = error ? errorCode(error) : 0;
  if (error && code !== 0) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
    span.setAttributes({
      "rpc.grpc.status_code": code,
      "grpc.error_name": error.name,
      "grpc.error_message": error.message,
    });
  } else {
    span.setAttribute("rpc.grpc.status_code", 0);
  }
  span.end();
}

/** A unary or client-stream call whose span records: its callback sets the status and ends the span. */
function tracedUnary(
  span: Span,
  func: HandlerEntry["func"],
  self: unknown,
  call: grpc.ServerUnaryCall<unknown, unknown>,
  callback: (...args: unknown[]) => void,
): unknown {
  context.bind(context.active(), call);
  let ended = false;
  return func.call(self, call, (error: (Error & { code?: unknown }) | null, ...rest: unknown[]) => {
    if (!ended) {
      ended = true;
      endCallSpan(span, error);
    }
    callback(error, ...rest);
  });
}

/** A server-stream or bidi call whose span records: ended on the stream's finish or error. */
function tracedStream(
  span: Span,
  func: HandlerEntry["func"],
  self: unknown,
  call: grpc.ServerWritableStream<unknown, unknown>,
): unknown {
  let ended = false;
  context.bind(context.active(), call);
  call.on("finish", () => {
    if (ended) return;
    ended = true;
    endCallSpan(span, null);
  });
  call.on(errorMonitor, (error: Error & { code?: unknown }) => {
    if (ended) return;
    ended = true;
    endCallSpan(span, error);
  });
  // A stream the client cancels neither finishes nor errs: its span ends here, CANCELLED (after
  // a status was sent grpc-js says 'cancelled' too, once the span has ended).
  call.once("cancelled", () => {
    if (ended) return;
    ended = true;
    endCallSpan(span, Object.assign(new Error("cancelled by the client"), { code: 1 }));
  });
  return func.call(self, call);
}

/** Whether the handler type streams its responses (its call is an emitter that ends with 'finish'). */
function streamsResponses(type: string): boolean {
  return type === "serverStream" || type === "server_stream" || type === "bidi";
}

/** `@opentelemetry/instrumentation-grpc` with a cheaper server side (see the module's comment). */
export class GrpcTracing extends GrpcInstrumentation {
  override init(): ReturnType<GrpcInstrumentation["init"]> {
    const definitions = super.init();
    for (const definition of definitions) {
      const patch = definition.patch;
      if (patch === undefined) continue;
      definition.patch = (exports: typeof grpc, version?: string): unknown => {
        const patched = patch(exports, version) as typeof grpc;
        const { metadataToSpanAttributes } = this.getConfig();
        const captures =
          (metadataToSpanAttributes?.server?.requestMetadata?.length ?? 0) +
          (metadataToSpanAttributes?.server?.responseMetadata?.length ?? 0);
        if (captures === 0) {
          this._unwrap(patched.Server.prototype, "register");
          this._wrap(
            patched.Server.prototype,
            "register",
            (original) => this.patchRegister(original as unknown as Register) as never,
          );
        }
        return patched;
      };
    }
    return definitions;
  }

  /** The patched `Server.prototype.register`: each method's handler traced (see the module's comment). */
  private patchRegister(original: Register): Register {
    const wrapHandler = (entry: HandlerEntry, name: string, type: string): void => {
      const traced = this.tracedHandler(name, type);
      if (traced !== undefined) this._wrap(entry, "func", traced);
    };
    return function register(this: grpc.Server, name, handler, serialize, deserialize, type): boolean {
      const added = original.call(this, name, handler, serialize, deserialize, type);
      const entry = (this as unknown as { handlers: Map<string, HandlerEntry> }).handlers.get(name);
      if (added && entry !== undefined) wrapHandler(entry, name, type);
      return added;
    };
  }

  /**
   * The wrapper of the handler of method `name` (a path, "/package.Service/Method") of grpc-js's
   * handler type `type`; undefined for an ignored method (`ignoreGrpcMethods`).
   */
  private tracedHandler(
    name: string,
    type: string,
  ): ((func: HandlerEntry["func"]) => HandlerEntry["func"]) | undefined {
    const path = name.startsWith("/") ? name.slice(1) : name;
    const slash = path.indexOf("/");
    const method = slash < 0 ? path : path.slice(slash + 1);
    // Matched by the path's last part, as the package matches them.
    if (ignored(name.slice(name.lastIndexOf("/") + 1) || name, this.getConfig().ignoreGrpcMethods))
      return undefined;
    const spanName = `grpc.${name.replace("/", "")}`;
    const attributes: Attributes = {
      "rpc.system": "grpc",
      "rpc.method": method,
      "rpc.service": slash < 0 ? "" : path.slice(0, slash),
    };
    const options: SpanOptions = { kind: SpanKind.SERVER };
    const streams = streamsResponses(type);
    // Read at each call: the tracer changes with the tracer provider (setTracerProvider).
    const tracer = (): Tracer => this.tracer;
    return (func) =>
      function traced(
        this: unknown,
        call: grpc.ServerUnaryCall<unknown, unknown>,
        callback?: (...args: unknown[]) => void,
      ): unknown {
        const parent = propagation.extract(ROOT_CONTEXT, call.metadata, METADATA_GETTER);
        const span = tracer().startSpan(spanName, options, parent);
        const active: Context = trace.setSpan(parent, span);
        // Set once recorded, not given to startSpan: the SDK checks and copies a span's start
        // attributes before it asks the sampler (~5 us a call, bench/notes/27-session-thirty-one.md).
        if (span.isRecording()) span.setAttributes(attributes);
        else {
          // Arguments passed through `with` rather than captured: no closure per call. A unary
          // call's emitter is not bound (six wrapped methods a call): its handler and what it
          // awaits run in the call's context, a listener it adds to the call (its 'cancelled')
          // in the context the event comes in. A stream's listeners are how it works: bound.
          if (type !== "unary") context.bind(active, call);
          return streams
            ? context.with(active, func, this, call)
            : context.with(active, func, this, call, callback);
        }
        return context.with(active, () =>
          streams
            ? tracedStream(span, func, this, call as unknown as grpc.ServerWritableStream<unknown, unknown>)
            : tracedUnary(span, func, this, call, callback as (...args: unknown[]) => void),
        );
      };
  }
}
