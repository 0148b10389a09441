/**
 * Authentication on the scheduler's gRPC server: a grpc-js server interceptor that checks every
 * call's bearer token and scope against the one table of @nexusflow/common (`RPC_ACCESS`) before
 * the handler runs. Executors need a token with the `executor` scope to open a Session; calls the
 * gateway forwards carry the caller's token and are checked again here; reflection is public.
 * A refused call ends with UNAUTHENTICATED or PERMISSION_DENIED and a message saying why.
 */
import * as grpc from "@grpc/grpc-js";
import { type Logger, type TokenVerifier, authenticateCall, isAuthError, rpcName } from "@nexusflow/common";

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
      details: e.message,
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
            authenticateCall(verifier, rpc, typeof header === "string" ? header : undefined).then(
              (principal) => {
                log?.debug({ rpc, subject: principal?.subject }, "call authorized");
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
            );
          },
        });
      },
    });
}
