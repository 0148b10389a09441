/**
 * Requests that cannot be decoded are the caller's fault: INVALID_ARGUMENT, not INTERNAL.
 *
 * Connect's handlers report a request message whose protobuf bytes do not parse as INTERNAL
 * ("parse binary: ..."), as grpc-go and grpc-java do, and they decode a unary request before any
 * interceptor runs. The gateway tells such failures apart by where they happen, not by their
 * text:
 *
 * - a unary call: {@link watchDecodeErrors}, run from the request gate, sees the error the call
 *   ends with (the handler aborts the call's signal with it before writing it out); an INTERNAL
 *   error of a call that never reached the interceptors ({@link decodeErrorInterceptor} marks
 *   those that did) can only come from reading the request, and becomes INVALID_ARGUMENT;
 * - a streaming call: the interceptor reads the request messages through a wrapper that turns an
 *   INTERNAL error of the request stream into INVALID_ARGUMENT.
 */
import {
  Code,
  ConnectError,
  type HandlerContext,
  type Interceptor,
  createContextKey,
} from "@connectrpc/connect";

/** True once a call has reached the interceptors, i.e. its (unary) request was decoded. */
const kInvoked = createContextKey<boolean>(false, { description: "invoked" });

/** `e` as INVALID_ARGUMENT, keeping its message, metadata, details and cause. */
function asInvalidArgument(e: ConnectError): ConnectError {
  const err = new ConnectError(
    `the request could not be decoded: ${e.rawMessage}`,
    Code.InvalidArgument,
    e.metadata,
    undefined,
    e.cause ?? e,
  );
  err.details = e.details;
  return err;
}

/**
 * For the request gate: makes an INTERNAL error that ends the call before it reached the
 * interceptors (a request that could not be decoded) INVALID_ARGUMENT.
 */
export function watchDecodeErrors(ctx: HandlerContext): void {
  const onAbort = (): void => {
    const reason: unknown = ctx.signal.reason;
    if (ctx.values.get(kInvoked) || !(reason instanceof ConnectError) || reason.code !== Code.Internal)
      return;
    // The handler aborts the call's signal with the error, then writes that same error object out:
    // this is the one moment its code can still be changed for every protocol.
    const replacement = asInvalidArgument(reason);
    Object.assign(reason, { code: replacement.code, rawMessage: replacement.rawMessage });
    reason.message = replacement.message;
  };
  ctx.signal.addEventListener("abort", onAbort, { once: true });
}

/** Reads `source`, rethrowing its INTERNAL errors (undecodable messages) as INVALID_ARGUMENT. */
async function* decodedRequests<T>(source: AsyncIterable<T>): AsyncGenerator<T> {
  try {
    yield* source;
  } catch (e) {
    if (e instanceof ConnectError && e.code === Code.Internal) throw asInvalidArgument(e);
    throw e;
  }
}

/**
 * The interceptor that marks calls as having reached the interceptors and maps decoding errors of
 * streamed requests; it goes first, so every call that passed the decoding is marked.
 */
export function decodeErrorInterceptor(): Interceptor {
  return (next) => (req) => {
    req.contextValues.set(kInvoked, true);
    if (!req.stream) return next(req);
    return next({ ...req, message: decodedRequests(req.message) });
  };
}
