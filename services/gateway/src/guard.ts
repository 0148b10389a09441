/**
 * The gateway's guard. A request gate ({@link guardRequestGate}) authenticates the bearer token and
 * checks the RPC's scope (the table `RPC_ACCESS` in @nexusflow/common) as soon as the request
 * headers are in, before any request message is read or parsed: a caller without a token, or
 * without the scope, is told so (UNAUTHENTICATED, PERMISSION_DENIED) whatever its body holds,
 * and a malformed or oversized body is only reported to a caller that may make the call. REST
 * calls check the same before reading their body ({@link authenticateRequest}). An interceptor
 * ({@link guardInterceptor}) then caps the streaming calls a client has open at once (a token
 * subject; for the token-free streams of reflection and health Watch, the remote address), ends a
 * stream when its token expires, and authenticates itself any call that did not pass the gate.
 *
 * A refused call is UNAUTHENTICATED or PERMISSION_DENIED with a message saying why; the token
 * itself is never logged nor echoed.
 */
import type { DescMethod } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type HandlerContext,
  type Interceptor,
  createContextKey,
} from "@connectrpc/connect";
import {
  type AuthError,
  PUBLIC,
  type Principal,
  type TokenVerifier,
  authenticateCall,
  isAuthError,
  requiredScope,
} from "@nexusflow/common";
import { untilAborted } from "./abortable.js";

/** The caller of the current call, once the guard has verified its token (undefined: public RPC or auth off). */
export const kPrincipal = createContextKey<Principal | undefined>(undefined, { description: "principal" });

/**
 * The remote address of the connection a call came on (server.ts sets it from the socket); undefined
 * for calls made in process (REST, whose routes include no token-free RPC).
 */
export const kRemoteAddress = createContextKey<string | undefined>(undefined, {
  description: "remote address",
});

/** True once the request gate has authenticated and authorized the call. */
const kGuarded = createContextKey<boolean>(false, { description: "guarded" });

/** The ConnectError for an {@link AuthError}. */
export function authConnectError(e: AuthError): ConnectError {
  const code =
    e.code === "PERMISSION_DENIED"
      ? Code.PermissionDenied
      : e.code === "UNAVAILABLE"
        ? Code.Unavailable
        : Code.Unauthenticated;
  return new ConnectError(e.message, code, undefined, undefined, e);
}

/** Counts open streaming calls per client and refuses those over the limit. */
export class StreamLimiter {
  readonly #open = new Map<string, number>();

  constructor(
    /** Most streams one client may have open. */
    readonly limit: number,
    /** The refusal's message, which goes on with the limit and "close one and retry". */
    readonly what = "too many concurrent streams for this client",
  ) {}

  /** Open streams of `client`. */
  count(client: string): number {
    return this.#open.get(client) ?? 0;
  }

  /**
   * Takes a slot for `client`; returns the function that gives it back (idempotent). Throws a
   * RESOURCE_EXHAUSTED ConnectError when `client` is at the limit.
   */
  acquire(client: string): () => void {
    const open = this.count(client);
    if (open >= this.limit) {
      throw new ConnectError(
        `${this.what} (limit ${this.limit}); close one and retry`,
        Code.ResourceExhausted,
      );
    }
    this.#open.set(client, open + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = this.count(client) - 1;
      if (n <= 0) this.#open.delete(client);
      else this.#open.set(client, n);
    };
  }
}

/** Told of each call refused for its token or scope, with the header it was refused for (metrics). */
export type RefusalListener = (e: AuthError, authorization: string | null | undefined) => void;

/**
 * Authenticates the caller of `method` from its `authorization` header value and checks the
 * method's scope. Resolves with the caller (undefined for a public RPC); rejects with the
 * ConnectError to answer (UNAUTHENTICATED, PERMISSION_DENIED or UNAVAILABLE).
 */
export async function authenticateRequest(
  verifier: TokenVerifier,
  method: DescMethod,
  authorization: string | null | undefined,
  onRefused?: RefusalListener,
): Promise<Principal | undefined> {
  try {
    return await authenticateCall(verifier, `${method.parent.typeName}/${method.name}`, authorization);
  } catch (e) {
    if (isAuthError(e)) {
      onRefused?.(e, authorization);
      throw authConnectError(e);
    }
    throw e;
  }
}

/**
 * The request gate (the router's `requestGate`) that authenticates and authorizes every call
 * before its request is read; without a verifier it lets every call in.
 */
export function guardRequestGate(
  verifier: TokenVerifier | undefined,
  onRefused?: RefusalListener,
): (ctx: HandlerContext) => Promise<void> {
  return async (ctx) => {
    if (verifier === undefined) return;
    const principal = await authenticateRequest(
      verifier,
      ctx.method,
      ctx.requestHeader.get("authorization"),
      onRefused,
    );
    ctx.values.set(kPrincipal, principal);
    ctx.values.set(kGuarded, true);
  };
}

/** Options of {@link guardInterceptor}. */
export interface GuardOptions {
  /** Verifies bearer tokens; undefined lets every call in (AUTH_DISABLED=true). */
  verifier: TokenVerifier | undefined;
  /** Limits open streams per token subject (not applied without a verified subject). */
  streams: StreamLimiter;
  /**
   * Limits the open streams of the token-free RPCs (reflection, health Watch) per remote address
   * ({@link kRemoteAddress}), with authentication on or off.
   */
  publicStreams: StreamLimiter;
  /**
   * A stream opened with a token ends UNAUTHENTICATED this long after the token's `exp`, in
   * milliseconds (serve.ts passes AUTH_CLOCK_SKEW, the tolerance the verifier grants `exp`: a stream
   * ends when its token would no longer be accepted). @default 0
   */
  expiryGraceMs?: number | undefined;
  /** Told of each call refused for its token or scope. */
  onRefused?: RefusalListener | undefined;
}

/** Yields what `source` yields and calls `release` once, however the iteration ends. */
async function* releasing<T>(source: AsyncIterable<T>, release: () => void): AsyncGenerator<T> {
  try {
    yield* source;
  } finally {
    release();
  }
}

/** Longest delay a Node timer can wait, in milliseconds (about 24.8 days). */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * A signal aborted with UNAUTHENTICATED "token expired" at `atMs` (epoch milliseconds, wall clock);
 * `cancel()` clears its timer.
 */
function expiryOf(atMs: number): { signal: AbortSignal; cancel: () => void } {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    const left = atMs - Date.now();
    if (left <= 0) {
      controller.abort(
        new ConnectError(
          `token expired at ${new Date(atMs).toISOString()}: the stream ended with it; ` +
            "open it again with a new token",
          Code.Unauthenticated,
        ),
      );
      return;
    }
    // A token valid for longer than a timer can wait is looked at again then.
    timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
  };
  arm();
  return { signal: controller.signal, cancel: () => clearTimeout(timer) };
}

/** Whether `method` is one of the RPCs that need no token (reflection, health). */
function isTokenFree(method: DescMethod): boolean {
  return requiredScope(`${method.parent.typeName}/${method.name}`) === PUBLIC;
}

/**
 * The interceptor that limits the streams of every call, ends a stream when its token expires, and
 * authenticates and authorizes those calls that did not pass {@link guardRequestGate} (a router
 * built without it).
 */
export function guardInterceptor({
  verifier,
  streams,
  publicStreams,
  expiryGraceMs = 0,
  onRefused,
}: GuardOptions): Interceptor {
  return (next) => async (req) => {
    let principal: Principal | undefined;
    if (verifier !== undefined) {
      if (req.contextValues.get(kGuarded)) {
        principal = req.contextValues.get(kPrincipal);
      } else {
        principal = await authenticateRequest(
          verifier,
          req.method,
          req.header.get("authorization"),
          onRefused,
        );
        req.contextValues.set(kPrincipal, principal);
      }
    }
    if (!req.stream) return next(req);
    let release: () => void;
    if (principal !== undefined) release = streams.acquire(principal.subject);
    else if (isTokenFree(req.method))
      release = publicStreams.acquire(req.contextValues.get(kRemoteAddress) ?? "in-process");
    // Authentication off: no client to count by (there is no token subject).
    else return next(req);

    const expiry = principal === undefined ? undefined : expiryOf(principal.expiresAtMs + expiryGraceMs);
    const done = (): void => {
      expiry?.cancel();
      release();
    };
    // A client that goes away may never finish iterating; its signal still fires.
    req.signal.addEventListener("abort", done, { once: true });
    let res;
    try {
      // The handler's signal also fires when the token expires: the upstream call ends.
      res = await next(
        expiry === undefined ? req : { ...req, signal: AbortSignal.any([req.signal, expiry.signal]) },
      );
    } catch (e) {
      done();
      throw e;
    }
    if (!res.stream) {
      done();
      return res;
    }
    const messages = expiry === undefined ? res.message : untilAborted(res.message, expiry.signal);
    return { ...res, message: releasing(messages, done) };
  };
}
