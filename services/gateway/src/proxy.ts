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
 *   hop and would corrupt the downstream response), but for a message or details too long to
 *   travel in trailers, which are cut ({@link MAX_ERROR_MESSAGE_CHARS}).
 */
import {
  type DescMessage,
  type DescMethodBiDiStreaming,
  type DescMethodClientStreaming,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type DescService,
  type MessageInitShape,
  type MessageShape,
  create,
  fromBinary,
  toBinary,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type HandlerContext,
  type ServiceImpl,
  type Transport,
} from "@connectrpc/connect";
import { createAsyncIterable, createLinkedAbortController } from "@connectrpc/connect/protocol";
import { boundedText } from "@nexusflow/common";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { endToEndHeaders } from "./http/headers.js";

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

function copyHeaders(from: Headers, to: Headers): void {
  endToEndHeaders(from).forEach((value, key) => to.append(key, value));
}

/**
 * Longest error message passed downstream, in characters. gRPC sends it (and again inside
 * `grpc-status-details-bin`) in trailers, and Node refuses to send a header block over 64 KiB: the
 * call would end with a protocol error instead. An upstream message may quote a request value of
 * any size ("not a run id: ..."), so it is cut, saying how much was left out.
 */
export const MAX_ERROR_MESSAGE_CHARS = 2000;
/** Most bytes of error details passed downstream (the same trailers carry them). */
const MAX_ERROR_DETAILS_BYTES = 16 * 1024;
/** Longest field path or description of a `BadRequest` field violation passed downstream. */
const MAX_VIOLATION_CHARS = 500;

type ErrorDetail = ConnectError["details"][number];

/** A `BadRequest` from the wire with its field paths and descriptions shortened; others as they are. */
function shortenDetail(detail: ErrorDetail): ErrorDetail {
  if ("desc" in detail || detail.type !== BadRequestSchema.typeName) return detail;
  try {
    const badRequest = fromBinary(BadRequestSchema, detail.value);
    for (const v of badRequest.fieldViolations) {
      v.field = boundedText(v.field, MAX_VIOLATION_CHARS);
      v.description = boundedText(v.description, MAX_VIOLATION_CHARS);
    }
    return { type: detail.type, value: toBinary(BadRequestSchema, badRequest) };
  } catch {
    // Not a BadRequest after all: the size budget decides.
    return detail;
  }
}

/** `details` shortened and, past {@link MAX_ERROR_DETAILS_BYTES}, left out. */
function boundedDetails(details: readonly ErrorDetail[]): ErrorDetail[] {
  let budget = MAX_ERROR_DETAILS_BYTES;
  const kept: ErrorDetail[] = [];
  for (const original of details) {
    const detail = shortenDetail(original);
    const size =
      "desc" in detail
        ? toBinary(detail.desc, create(detail.desc, detail.value)).length
        : detail.value.length;
    if (size > budget) continue;
    budget -= size;
    kept.push(detail);
  }
  return kept;
}

/** `e` with its message and details cut to what can travel in trailers (see {@link MAX_ERROR_MESSAGE_CHARS}). */
export function boundedError(e: ConnectError, metadata: Headers = e.metadata): ConnectError {
  const copy = new ConnectError(
    boundedText(e.rawMessage, MAX_ERROR_MESSAGE_CHARS),
    e.code,
    metadata,
    undefined,
    e.cause,
  );
  copy.details = boundedDetails(e.details);
  return copy;
}

/**
 * The error to give the downstream caller: an upstream ConnectError keeps its code, raw message,
 * details and cause (the message and details cut to what trailers can carry, see
 * {@link MAX_ERROR_MESSAGE_CHARS}); only framing headers leave its metadata. Anything else becomes
 * a ConnectError via `ConnectError.from` (an abort reason that is a ConnectError stays one).
 */
export function passThroughError(e: unknown): ConnectError {
  if (!(e instanceof ConnectError)) return ConnectError.from(e, Code.Internal);
  return boundedError(e, endToEndHeaders(e.metadata));
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
