/** The bearer token of every request, from a {@link TokenProvider} asked once per request. */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { TokenProvider } from "./options.js";
import { methodName } from "./retry.js";

/**
 * Sets `authorization: Bearer <token>` on each request (each attempt of a retried call asks
 * again). A provider that fails, or returns no token, fails the call with UNAUTHENTICATED before
 * anything is sent; its error is the `cause`.
 */
export function bearerInterceptor(token: TokenProvider): Interceptor {
  return (next) => async (req) => {
    let value: unknown;
    try {
      value = await token({ method: methodName(req), signal: req.signal });
    } catch (e) {
      const detail = e instanceof Error ? e.message : String(e);
      throw new ConnectError(
        `cannot get a bearer token: ${detail}`,
        Code.Unauthenticated,
        undefined,
        undefined,
        e,
      );
    }
    if (typeof value !== "string" || value.trim() === "") {
      throw new ConnectError(
        "cannot get a bearer token: the token function returned no token",
        Code.Unauthenticated,
      );
    }
    req.header.set("authorization", `Bearer ${value.trim()}`);
    return next(req);
  };
}
