/**
 * The gateway's guard, one Connect interceptor in front of every handler (gRPC, gRPC-Web, Connect
 * and, through the in-process transport, REST): it authenticates the bearer token and checks the
 * RPC's scope (the table `RPC_ACCESS` in @nexusflow/common), then caps the streaming calls a
 * client (a token subject) has open at once.
 *
 * A refused call is UNAUTHENTICATED or PERMISSION_DENIED with a message saying why; the token
 * itself is never logged nor echoed.
 */
import { Code, ConnectError, type Interceptor, createContextKey } from "@connectrpc/connect";
import {
  type AuthError,
  type Principal,
  type TokenVerifier,
  authenticateCall,
  isAuthError,
} from "@nexusflow/common";

/** The caller of the current call, once the guard has verified its token (undefined: public RPC or auth off). */
export const kPrincipal = createContextKey<Principal | undefined>(undefined, { description: "principal" });

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

/** Options of {@link guardInterceptor}. */
export interface GuardOptions {
  /** Verifies bearer tokens; undefined lets every call in (AUTH_DISABLED=true). */
  verifier: TokenVerifier | undefined;
  /** Limits open streams per token subject (not applied without a verified subject). */
  streams: StreamLimiter;
}

/** Yields what `source` yields and calls `release` once, however the iteration ends. */
async function* releasing<T>(source: AsyncIterable<T>, release: () => void): AsyncGenerator<T> {
  try {
    yield* source;
  } finally {
    release();
  }
}

/** The interceptor that authenticates, authorizes and limits every call. */
export function guardInterceptor({ verifier, streams }: GuardOptions): Interceptor {
  return (next) => async (req) => {
    if (verifier === undefined) return next(req);
    const rpc = `${req.service.typeName}/${req.method.name}`;
    let principal: Principal | undefined;
    try {
      principal = await authenticateCall(verifier, rpc, req.header.get("authorization"));
    } catch (e) {
      if (isAuthError(e)) throw authConnectError(e);
      throw e;
    }
    req.contextValues.set(kPrincipal, principal);
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
