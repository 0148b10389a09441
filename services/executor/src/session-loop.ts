/**
 * Keeps a session with the scheduler: opens one, and when it ends waits a backoff (jittered,
 * growing with each session that failed to attach, reset by one that had attached) and opens the
 * next, for as long as the executor wants sessions. A refusal that retrying cannot help ends it.
 */
import { setTimeout as delay } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "@nexusflow/common";
import { type BackoffBounds, backoffDelay } from "./backoff.js";
import type { SessionEnd } from "./scheduler-session.js";

/**
 * Status codes that, before the first attach, mean retrying cannot help (wrong address or
 * service, bad credentials, a malformed Attach, a session protocol version the scheduler does not
 * speak): `start()` rejects instead of retrying forever. After a first attach they are retried
 * like any other break (e.g. during a scheduler upgrade).
 */
export const FATAL_ATTACH_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.UNIMPLEMENTED,
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.FAILED_PRECONDITION,
]);

/** What the loop asks of the executor. */
export interface SessionLoopOptions {
  readonly reconnect: BackoffBounds;
  readonly logger: Logger;
  /** Cuts a backoff wait short (the executor is closing). */
  readonly signal: AbortSignal;
  /** Whether to (re)open sessions; asked before and after each. */
  readonly wanted: () => boolean;
  /** Whether the executor has attached before: a fatal code is then retried. */
  readonly attachedBefore: () => boolean;
  /** Makes the metadata of each session (a token rotated since the last one goes on the next). */
  readonly metadata: () => grpc.Metadata | Promise<grpc.Metadata>;
  /** Opens one session; resolves (never rejects) with how it ended. */
  readonly openSession: (metadata: grpc.Metadata) => Promise<SessionEnd>;
}

/**
 * Opens sessions one after the other until `wanted()` turns false (resolves undefined) or the
 * scheduler refuses the executor for good, with one of {@link FATAL_ATTACH_CODES} before it ever
 * attached (resolves with that session's end).
 */
export async function runSessionLoop(options: SessionLoopOptions): Promise<SessionEnd | undefined> {
  const { reconnect, logger, signal, wanted, attachedBefore } = options;
  let failures = 0;
  while (wanted()) {
    const end = await session(options);
    if (!wanted()) return undefined;
    if (!attachedBefore() && FATAL_ATTACH_CODES.has(end.code)) return end;
    failures = end.attached ? 1 : failures + 1;
    const wait = backoffDelay(failures, reconnect);
    const fields = { code: grpc.status[end.code], details: end.details, attempt: failures, retryInMs: wait };
    if (end.attached) logger.warn(fields, "session with the scheduler lost; reconnecting");
    else logger.warn(fields, "could not attach to the scheduler; retrying");
    try {
      await delay(wait, undefined, { signal });
    } catch {
      // Closing cut the wait short; `wanted()` ends the loop.
    }
  }
  return undefined;
}

/** Makes the session's metadata and opens it; a provider that fails is a session that could not attach. */
async function session({ metadata, wanted, openSession }: SessionLoopOptions): Promise<SessionEnd> {
  let made: grpc.Metadata;
  try {
    made = await metadata();
  } catch (e) {
    const details = `cannot make the session's metadata: ${e instanceof Error ? e.message : String(e)}`;
    return { attached: false, code: grpc.status.UNAVAILABLE, details };
  }
  if (!wanted()) return { attached: false, code: grpc.status.CANCELLED, details: "stopping" };
  return openSession(made);
}
