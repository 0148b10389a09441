/**
 * The gateway's guard. A request gate ({@link guardRequestGate}) authenticates the bearer token and
 * checks the RPC's scope (the table `RPC_ACCESS` in @nexusflow/common) as soon as the request
 * headers are in, before any request message is read or parsed: a caller without a token, or
 * without the scope, is told so (UNAUTHENTICATED, PERMISSION_DENIED) whatever its body holds,
 * and a malformed or oversized body is only reported to a caller that may make the call. REST
 * calls check the same before reading their body ({@link authenticateRequest}). An interceptor
 * ({@link guardInterceptor}) then caps the streaming calls a client (a token subject) has open
 * at once, and authenticates itself any call that did not pass the gate.
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
  type Principal,
  type TokenVerifier,
  authenticateCall,
  isAuthError,
} from "@nexusflow/common";

/** The caller of the current call, once the guard has verified its token (undefined: public RPC or auth off). */
export const kPrincipal = createContextKey<Principal | undefined>(undefined, { description: "principal" });

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
        `too many concurrent streams for this client (limit ${this.limit}); close one and retry`,
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

/**
 * The interceptor that limits the streams of every call, and authenticates and authorizes those
 * that did not pass {@link guardRequestGate} (a router built without it).
 */
export function guardInterceptor({ verifier, streams, onRefused }: GuardOptions): Interceptor {
  return (next) => async (req) => {
    if (verifier === undefined) return next(req);
    let principal: Principal | undefined;
    if (req.contextValues.get(kGuarded)) {
      principal = req.contextValues.get(kPrincipal);
    } else {
      principal = await authenticateRequest(verifier, req.method, req.header.get("authorization"), onRefused);
      req.contextValues.set(kPrincipal, principal);
    }
    if (!req.stream || principal === undefined) return next(req);

    const release = streams.acquire(principal.subject);
    // A client that goes away may never finish iterating; its signal still fires.
    req.signal.addEventListener("abort", release, { once: true });
    let res;
    try {
      res = await next(req);
    } catch (e) {
      release();
      throw e;
    }
    if (!res.stream) {
      release();
      return res;
    }
    return { ...res, message: releasing(res.message, release) };
  };
}
