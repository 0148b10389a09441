/**
 * A generic forwarder driven by protobuf-es service descriptors: for any `DescService` it builds a
 * Connect service implementation whose every method calls the same method upstream through a
 * Connect `Transport` (in production a gRPC transport to the scheduler). Nothing here knows the
 * methods of a particular service, so a new RPC in the `.proto` is proxied without code changes.
 *
 * What crosses the proxy:
 * - the caller's deadline (`ctx.timeoutMs()`) and cancellation (`ctx.signal`): a client that goes
 *   away cancels the upstream call, and an expired deadline expires upstream as well;
 * - request headers minus hop-by-hop and protocol framing headers (the upstream transport writes
 *   its own), so `authorization` and custom metadata reach the scheduler;
 * - response headers and trailers minus the same framing headers;
 * - errors as they are: code, message and details of an upstream `ConnectError` are re-thrown
 *   unchanged (only protocol headers are dropped from its metadata, as they describe the upstream
 *   hop and would corrupt the downstream response).
 */
import type {
  DescMessage,
  DescMethodBiDiStreaming,
  DescMethodClientStreaming,
  DescMethodServerStreaming,
  DescMethodUnary,
  DescService,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type HandlerContext,
  type ServiceImpl,
  type Transport,
} from "@connectrpc/connect";
import { createAsyncIterable, createLinkedAbortController } from "@connectrpc/connect/protocol";

/** Options of {@link createForwardingService}. */
export interface ForwardingOptions {
  /** Where calls go: a Connect transport to the upstream server. */
  transport: Transport;
  /**
   * Aborting it ends every open streaming call (with the abort reason as the error, ideally a
   * `ConnectError` with `Code.Unavailable`) while unary calls run to completion. Used to drain:
   * streams such as WatchRun would otherwise keep a closing server open indefinitely.
   */
  streamShutdownSignal?: AbortSignal;
}

/** Hop-by-hop headers (RFC 9110 §7.6.1) plus `host`, which belongs to the upstream hop. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
]);

/** Framing headers each protocol implementation writes itself; forwarding them would conflict. */
const FRAMING = new Set([
  "content-type",
  "content-length",
  "content-encoding",
  "accept-encoding",
  "user-agent",
  "x-user-agent",
  "x-grpc-web",
  "date",
]);
const FRAMING_PREFIXES = [":", "grpc-", "connect-"];

/** True for headers that describe one hop of the call rather than the call itself. */
export function isHopHeader(name: string): boolean {
  const key = name.toLowerCase();
  return HOP_BY_HOP.has(key) || FRAMING.has(key) || FRAMING_PREFIXES.some((p) => key.startsWith(p));
}

/**
 * The end-to-end subset of `headers`: hop-by-hop and framing headers removed, as well as any header
 * the `Connection` header names (RFC 9110 §7.6.1).
 */
export function endToEndHeaders(headers: Headers): Headers {
  const listed = new Set(
    (headers.get("connection") ?? "")
      .split(",")
      .map((h) => h.trim().toLowerCase())
      .filter((h) => h !== ""),
  );
  const out = new Headers();
  headers.forEach((value, key) => {
    if (!isHopHeader(key) && !listed.has(key)) out.append(key, value);
  });
  return out;
}

function copyHeaders(from: Headers, to: Headers): void {
  endToEndHeaders(from).forEach((value, key) => to.append(key, value));
}

/**
 * The error to give the downstream caller: an upstream ConnectError keeps its code, raw message,
 * details and cause; only framing headers leave its metadata. Anything else becomes a ConnectError
 * via `ConnectError.from` (an abort reason that is a ConnectError stays one).
 */
export function passThroughError(e: unknown): ConnectError {
  if (!(e instanceof ConnectError)) return ConnectError.from(e, Code.Internal);
  const copy = new ConnectError(e.rawMessage, e.code, endToEndHeaders(e.metadata), undefined, e.cause);
  copy.details = e.details;
  return copy;
}

type AnyUnary = DescMethodUnary<DescMessage, DescMessage>;
type AnyStreaming =
  | DescMethodServerStreaming<DescMessage, DescMessage>
  | DescMethodClientStreaming<DescMessage, DescMessage>
  | DescMethodBiDiStreaming<DescMessage, DescMessage>;
type Input = MessageInitShape<DescMessage>;
type Output = MessageShape<DescMessage>;

function forwardUnary(method: AnyUnary, { transport }: ForwardingOptions) {
  return async (request: Input, ctx: HandlerContext): Promise<Output> => {
    try {
      const res = await transport.unary(
        method,
        ctx.signal,
        ctx.timeoutMs(),
        endToEndHeaders(ctx.requestHeader),
        request,
      );
      copyHeaders(res.header, ctx.responseHeader);
      copyHeaders(res.trailer, ctx.responseTrailer);
      return res.message;
    } catch (e) {
      throw passThroughError(e);
    }
  };
}

async function* forwardStream(
  method: AnyStreaming,
  { transport, streamShutdownSignal }: ForwardingOptions,
  requests: AsyncIterable<Input>,
  ctx: HandlerContext,
): AsyncGenerator<Output> {
  // ctx.signal also fires when the call completes, which releases the listener on the shutdown signal.
  const linked = createLinkedAbortController(ctx.signal, streamShutdownSignal);
  try {
    const res = await transport.stream(
      method,
      linked.signal,
      ctx.timeoutMs(),
      endToEndHeaders(ctx.requestHeader),
      requests,
    );
    // Response headers must be set before the first message goes out.
    copyHeaders(res.header, ctx.responseHeader);
    for await (const message of res.message) yield message;
    copyHeaders(res.trailer, ctx.responseTrailer);
  } catch (e) {
    throw passThroughError(e);
  } finally {
    // A consumer that stops early (client gone) must not leave the upstream stream open.
    linked.abort(new ConnectError("downstream call ended", Code.Canceled));
  }
}

/**
 * A Connect implementation of `service` (for `router.service(service, impl)`) that forwards every
 * method, whatever its kind, to the same method over `options.transport`.
 */
export function createForwardingService<S extends DescService>(
  service: S,
  options: ForwardingOptions,
): ServiceImpl<S> {
  const impl: Record<string, unknown> = {};
  for (const method of service.methods) {
    // DescMethod does not narrow on methodKind; the casts restate what the switch established.
    switch (method.methodKind) {
      case "unary":
        impl[method.localName] = forwardUnary(method as AnyUnary, options);
        break;
      case "server_streaming":
        impl[method.localName] = (request: Input, ctx: HandlerContext) =>
          forwardStream(method as AnyStreaming, options, createAsyncIterable([request]), ctx);
        break;
      case "client_streaming":
        impl[method.localName] = async (
          requests: AsyncIterable<Input>,
          ctx: HandlerContext,
        ): Promise<Output> => {
          let last: Output | undefined;
          for await (const message of forwardStream(method as AnyStreaming, options, requests, ctx))
            last = message;
          if (last === undefined) throw new ConnectError("upstream sent no response message", Code.Internal);
          return last;
        };
        break;
      case "bidi_streaming":
        impl[method.localName] = (requests: AsyncIterable<Input>, ctx: HandlerContext) =>
          forwardStream(method as AnyStreaming, options, requests, ctx);
        break;
    }
  }
  // Every method of the descriptor got an implementation of its kind above.
  return impl as ServiceImpl<S>;
}
