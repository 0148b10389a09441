/**
 * Authentication on the scheduler's gRPC server: a grpc-js server interceptor that checks every
 * call's bearer token and scope against the one table of @nexusflow/common (`RPC_ACCESS`) before
 * the handler runs. Executors need a token with the `executor` scope to open a Session; calls the
 * gateway forwards carry the caller's token and are checked again here; reflection is public.
 * A refused call ends with UNAUTHENTICATED or PERMISSION_DENIED and a message saying why. The
 * verified principal reaches the handler through {@link callPrincipal} (a Session binds the
 * executor id it attaches as to it).
 */
import * as grpc from "@grpc/grpc-js";
import {
  type Logger,
  type Principal,
  type TokenVerifier,
  authenticateCall,
  isAuthError,
  rpcName,
} from "@nexusflow/common";

/**
 * The verified principal of each authorized call, keyed by the metadata object the interceptor
 * passes on (grpc-js hands that same object to the handler as `call.metadata`). Nothing a client
 * sends can put an entry here, unlike a header; entries go when the call's metadata is collected.
 */
const principals = new WeakMap<grpc.Metadata, Principal>();

/**
 * The principal whose token {@link authInterceptor} verified for the call with this metadata
 * (`call.metadata` in a handler); undefined for a public RPC, or when no interceptor ran.
 */
export function callPrincipal(metadata: grpc.Metadata): Principal | undefined {
  return principals.get(metadata);
}

/** The gRPC status for a refused call. */
function refusal(e: unknown): { code: grpc.status; details: string; metadata: grpc.Metadata } {
  if (isAuthError(e)) {
    return {
      code:
        e.code === "PERMISSION_DENIED"
          ? grpc.status.PERMISSION_DENIED
          : e.code === "UNAVAILABLE"
            ? grpc.status.UNAVAILABLE
            : grpc.status.UNAUTHENTICATED,
      // Well-formed: grpc-js's encodeURI of the details throws on a lone surrogate.
      details: e.message.toWellFormed(),
      metadata: new grpc.Metadata(),
    };
  }
  return { code: grpc.status.INTERNAL, details: "authentication failed", metadata: new grpc.Metadata() };
}

/**
 * A server interceptor (for `new grpc.Server({ interceptors: [...] })`) that lets a call reach its
 * handler only once its token is verified and carries the scope the RPC needs. Messages that
 * arrive meanwhile are held by grpc-js until the metadata is passed on.
 */
export function authInterceptor(verifier: TokenVerifier, log?: Logger): grpc.ServerInterceptor {
  return (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, pass) => {
            const rpc = rpcName(method.path);
            const header = metadata.get("authorization")[0];
            authenticateCall(verifier, rpc, typeof header === "string" ? header : undefined)
              .then(
                (principal) => {
                  log?.debug({ rpc, subject: principal?.subject }, "call authorized");
                  if (principal !== undefined) principals.set(metadata, principal);
                  pass(metadata);
                },
                (e: unknown) => {
                  log?.info(
                    {
                      rpc,
                      code: isAuthError(e) ? e.code : "INTERNAL",
                      reason: e instanceof Error ? e.message : String(e),
                    },
                    "call refused",
                  );
                  call.sendStatus(refusal(e));
                },
              )
              // Passing the metadata on runs the handler (and the messages held meanwhile) in this
              // callback: whatever it throws ends this call, never the process (no unhandled rejection).
              .catch((e: unknown) => {
                log?.error({ rpc, err: e }, "call failed while starting its handler");
                call.sendStatus({
                  code: grpc.status.INTERNAL,
                  details: "internal error",
                  metadata: new grpc.Metadata(),
                });
              });
          },
        });
      },
    });
}
