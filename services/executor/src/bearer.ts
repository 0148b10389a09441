/**
 * A bearer token for the executor's sessions without handling grpc-js yourself: the value of
 * {@link ExecutorOptions.metadata}. The scheduler (authentication on by default) needs a token
 * with the `executor` scope.
 */
import * as grpc from "@grpc/grpc-js";
import { ExecutorError } from "./errors.js";
import type { SessionMetadataProvider } from "./options.js";

/** A fixed token, or a function returning the current one (asked for every session opened). */
export type BearerTokenSource = string | (() => string | Promise<string>);

/**
 * Session metadata carrying `authorization: Bearer <token>`, for {@link ExecutorOptions.metadata}.
 * A function is called for every session the executor opens, so a rotated token is used on the
 * next reconnect; when it throws or returns no token, that attempt fails and the executor retries
 * with backoff. Throws {@link ExecutorError} `INVALID_OPTIONS` for an empty or missing token.
 *
 * ```ts
 * new Executor({ schedulerAddress, metadata: bearerToken(process.env.EXECUTOR_TOKEN ?? "") });
 * ```
 */
export function bearerToken(token: BearerTokenSource): SessionMetadataProvider {
  if (typeof token === "string") {
    if (token.trim() === "") throw new ExecutorError("INVALID_OPTIONS", "bearerToken: the token is empty");
    const value = token.trim();
    return () => metadataOf(value);
  }
  if (typeof token !== "function") {
    throw new ExecutorError("INVALID_OPTIONS", "bearerToken: expected a token or a function returning one");
  }
  return async () => {
    const value = await token();
    if (typeof value !== "string" || value.trim() === "") {
      throw new ExecutorError("INVALID_OPTIONS", "bearerToken: the token function returned no token");
    }
    return metadataOf(value.trim());
  };
}

function metadataOf(token: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}
