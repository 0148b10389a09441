/**
 * Authentication on the scheduler's gRPC server: a grpc-js server interceptor that checks every
 * call's bearer token and scope against the one table of @nexusflow/common (`RPC_ACCESS`) before
 * the handler runs. Executors need a token with the `executor` scope to open a Session; calls the
 * gateway forwards carry the caller's token and are checked again here; reflection is public.
 * A refused call ends with UNAUTHENTICATED or PERMISSION_DENIED and a message saying why. The
 * verified principal reaches the handler through {@link callPrincipal} (a Session binds the
 * executor id it attaches as to it). A stream (WatchRun, GetTaskLogs, GetArtifact) outlives no
 * token: it ends UNAUTHENTICATED when its token expires (plus the verifier's clock tolerance), as
 * on the gateway; an executor's Session is the exception.
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

/** Options of {@link authInterceptor}. */
export interface AuthInterceptorOptions {
  /**
   * How long after its token's `exp` a stream is ended, in milliseconds: the verifier's clock
   * tolerance (AUTH_CLOCK_SKEW), so that a token the verifier still accepts is not cut at once.
   * @default the verifier's `clockToleranceMs`, else 0
   */
  streamGraceMs?: number | undefined;
}

/** The RPCs whose streams are not ended at token expiry (see {@link endsAtExpiry}). */
const OUTLIVES_TOKEN: ReadonlySet<string> = new Set([
  // Executors run with long-lived tokens, and cutting a Session would drop every lease it holds
  // (their tasks are retried elsewhere): a Session is authorized when it opens, and that is all.
  "nexusflow.v1.ExecutorService/Session",
]);

/** Whether a call of `method` is ended when its token expires: streams, but for a Session. */
function endsAtExpiry(method: grpc.ServerMethodDefinition<unknown, unknown>): boolean {
  return (method.requestStream || method.responseStream) && !OUTLIVES_TOKEN.has(rpcName(method.path));
}

/** Longest delay a Node timer can wait, in milliseconds (about 24.8 days); longer fires at once. */
const MAX_TIMER_MS = 2_147_483_647;

/** The status a stream ends with when its token expired at `expiresAtMs`. */
function expiredStatus(expiresAtMs: number): grpc.StatusObject {
  return {
    code: grpc.status.UNAUTHENTICATED,
    details:
      `token expired at ${new Date(expiresAtMs).toISOString()}: the stream ended with it; ` +
      "open it again with a new token",
    metadata: new grpc.Metadata(),
  };
}

/**
 * Calls `expire` at `atMs` (epoch milliseconds, wall clock), waiting in steps a Node timer can
 * take (a token may live for weeks); the returned function clears the timer.
 */
function atTime(atMs: number, expire: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    const left = atMs - Date.now();
    if (left <= 0) {
      timer = undefined;
      expire();
      return;
    }
    timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
  };
  arm();
  return () => clearTimeout(timer);
}

/**
 * A server interceptor (for `new grpc.Server({ interceptors: [...] })`) that lets a call reach its
 * handler only once its token is verified and carries the scope the RPC needs. Messages that
 * arrive meanwhile are held by grpc-js until the metadata is passed on.
 *
 * A stream (but a Session) that is authorized with a token is ended with UNAUTHENTICATED at the
 * token's expiry plus `streamGraceMs`: grpc-js then tells the handler its call was cancelled (its
 * 'cancelled' event, the AbortSignal of `serverStream`), so it lets go of what it holds.
 */
export function authInterceptor(
  verifier: TokenVerifier,
  log?: Logger,
  options: AuthInterceptorOptions = {},
): grpc.ServerInterceptor {
  const graceMs = options.streamGraceMs ?? verifier.clockToleranceMs ?? 0;
  return (method, call) => {
    /** Clears the expiry timer of this call (set once it is authorized, when it is a stream). */
    let disarm: (() => void) | undefined;
    /** Whether this interceptor ended the call because its token expired. */
    let expired = false;
    /** Whether the call ended (cancelled, or its status sent): no timer is armed for it then. */
    let over = false;
    const ended = (): void => {
      over = true;
      disarm?.();
      disarm = undefined;
    };
    /** Ends the call now: its token expired at `expiresAtMs`. */
    const expire = (rpc: string, expiresAtMs: number): void => {
      disarm = undefined;
      if (expired) return;
      expired = true;
      log?.info({ rpc, expiresAt: new Date(expiresAtMs).toISOString() }, "stream ended: token expired");
      call.sendStatus(expiredStatus(expiresAtMs));
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onCancel: ended,
          onReceiveMetadata: (metadata, pass) => {
            const rpc = rpcName(method.path);
            const header = metadata.get("authorization")[0];
            authenticateCall(verifier, rpc, typeof header === "string" ? header : undefined)
              .then(
                (principal) => {
                  log?.debug({ rpc, subject: principal?.subject }, "call authorized");
                  if (principal !== undefined && endsAtExpiry(method) && !over) {
                    const { expiresAtMs } = principal;
                    // Already past (a grace shorter than the verifier's tolerance): refused.
                    if (expiresAtMs + graceMs <= Date.now()) {
                      expire(rpc, expiresAtMs);
                      return;
                    }
                    disarm = atTime(expiresAtMs + graceMs, () => expire(rpc, expiresAtMs));
                  }
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
      // Once the stream ended for its token, what its handler still sends goes nowhere: the
      // status is on its way out (a write after it would reset the stream instead).
      sendMetadata: (metadata, next) => {
        if (!expired) next(metadata);
      },
      sendMessage: (message, next) => {
        if (!expired) next(message);
      },
      sendStatus: (status, next) => {
        ended();
        if (!expired) next(status);
      },
    });
  };
}
