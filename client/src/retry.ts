/**
 * Retry of UNAVAILABLE, for calls that change nothing when repeated. A call that reached the
 * server before the connection failed may have taken effect: repeating StartRun without an
 * idempotency key could start a second run, so only the calls below are retried.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { CompiledRetryOptions } from "./options.js";

/**
 * Unary methods that are safe to repeat, as `package.Service/Method`: every read, and the writes
 * the API documents as changing nothing when repeated (RegisterWorkflow and CreateSchedule with
 * identical content, CancelRun, pausing and resuming a schedule or a rate limit, a backfill, which
 * never starts a second run for a fire time). StartRun, StartRuns, SignalRun, RerunRun,
 * TriggerSchedule and PublishEvent are ones only with an idempotency key ({@link isIdempotentCall}).
 * DeleteSchedule is not: repeated after it took effect, it answers NOT_FOUND.
 */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set([
  "nexusflow.v1.WorkflowService/RegisterWorkflow",
  "nexusflow.v1.WorkflowService/GetWorkflow",
  "nexusflow.v1.WorkflowService/ListWorkflows",
  "nexusflow.v1.WorkflowService/GetRun",
  "nexusflow.v1.WorkflowService/ListRuns",
  "nexusflow.v1.WorkflowService/CancelRun",
  "nexusflow.v1.WorkflowService/ExplainPending",
  "nexusflow.v1.ArtifactService/ListArtifacts",
  "nexusflow.v1.ScheduleService/CreateSchedule",
  "nexusflow.v1.ScheduleService/GetSchedule",
  "nexusflow.v1.ScheduleService/ListSchedules",
  "nexusflow.v1.ScheduleService/PauseSchedule",
  "nexusflow.v1.ScheduleService/ResumeSchedule",
  "nexusflow.v1.ScheduleService/BackfillSchedule",
  "nexusflow.v1.EventService/GetEvent",
  "nexusflow.v1.EventService/ListEvents",
  "nexusflow.v1.RateLimitService/ListRateLimits",
  "nexusflow.v1.RateLimitService/PauseRateLimit",
  "nexusflow.v1.RateLimitService/ResumeRateLimit",
  "nexusflow.v1.ClusterService/ListExecutors",
  "nexusflow.v1.ReplicaService/ListReplicas",
]);

/** Methods that are safe to repeat when their request carries an idempotency key. */
const KEYED_METHODS: ReadonlySet<string> = new Set([
  "nexusflow.v1.WorkflowService/StartRun",
  "nexusflow.v1.WorkflowService/SignalRun",
  "nexusflow.v1.WorkflowService/RerunRun",
  "nexusflow.v1.ScheduleService/TriggerSchedule",
  "nexusflow.v1.EventService/PublishEvent",
]);
const START_RUNS = "nexusflow.v1.WorkflowService/StartRuns";

function hasIdempotencyKey(message: unknown): boolean {
  const key = (message as { idempotencyKey?: unknown } | undefined)?.idempotencyKey;
  return typeof key === "string" && key !== "";
}

/** Whether a unary call of `method` (`package.Service/Method`) with `message` may be repeated. */
export function isIdempotentCall(method: string, message: unknown): boolean {
  if (IDEMPOTENT_METHODS.has(method)) return true;
  if (KEYED_METHODS.has(method)) return hasIdempotencyKey(message);
  if (method !== START_RUNS) return false;
  const runs = (message as { runs?: unknown } | undefined)?.runs;
  return Array.isArray(runs) && runs.length > 0 && runs.every(hasIdempotencyKey);
}

/**
 * Delay before retry `attempt` (1 for the first retry): uniform in
 * [0, min(maxDelayMs, initialDelayMs * 2^(attempt-1))]. Full jitter keeps many clients that lost
 * the same server from coming back in lockstep.
 */
export function retryDelayMs(
  attempt: number,
  bounds: Pick<CompiledRetryOptions, "initialDelayMs" | "maxDelayMs">,
  random: () => number = Math.random,
): number {
  const exponent = Math.max(0, Math.min(attempt - 1, 30)); // 2^30 already exceeds any cap
  const bound = Math.min(bounds.maxDelayMs, bounds.initialDelayMs * 2 ** exponent);
  return Math.floor(random() * bound);
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** The name of a call's method as `package.Service/Method`. */
export function methodName(req: { service: { typeName: string }; method: { name: string } }): string {
  return `${req.service.typeName}/${req.method.name}`;
}

/** Node's error for an HTTP/2 stream the peer reset, and the reset code that says "not processed". */
const STREAM_ERROR = "ERR_HTTP2_STREAM_ERROR";
const NODE_REFUSED = /\bNGHTTP2_REFUSED_STREAM\b/;
/** connect-node's own message for the reset code (not a server's message that quotes it). */
const CONNECT_REFUSED = /^http\/2 stream closed with error code REFUSED_STREAM\b/;

/**
 * The UNAVAILABLE a call whose HTTP/2 stream the server refused ends with, or undefined for any
 * other error. A refused stream (RST_STREAM REFUSED_STREAM, also what streams above a GOAWAY's last
 * stream id end with) was not processed at all (RFC 9113 section 8.7): the call is safe to send
 * again, whatever its method. connect-node reports it as INTERNAL when Node emits it as a stream
 * error (`ERR_HTTP2_STREAM_ERROR`, "Stream closed with error code NGHTTP2_REFUSED_STREAM"), as
 * UNAVAILABLE when it reads the reset code itself.
 */
export function refusedStreamError(e: unknown): ConnectError | undefined {
  for (let cause = e, depth = 0; cause instanceof Error && depth < 8; cause = cause.cause, depth++) {
    const code = (cause as { code?: unknown }).code;
    const nodeRefusal = code === STREAM_ERROR && NODE_REFUSED.test(cause.message);
    const connectRefusal = cause instanceof ConnectError && CONNECT_REFUSED.test(cause.rawMessage);
    if (nodeRefusal || connectRefusal) {
      return new ConnectError(
        "the server refused the call's HTTP/2 stream (REFUSED_STREAM): it was not processed and may be sent again",
        Code.Unavailable,
        undefined,
        undefined,
        e,
      );
    }
  }
  return undefined;
}

/**
 * Repeats an idempotent unary call that failed with UNAVAILABLE, and any unary call whose stream
 * the server refused (never processed: {@link refusedStreamError}), up to `maxAttempts` attempts
 * in all, within the call's deadline and while its signal is not aborted. A refused stream always
 * ends as UNAVAILABLE, never INTERNAL. Streaming calls are not repeated.
 */
export function retryInterceptor(options: CompiledRetryOptions): Interceptor {
  return (next) => async (req) => {
    const idempotent = !req.stream && isIdempotentCall(methodName(req), req.message);
    for (let attempt = 1; ; attempt++) {
      try {
        return await next(req);
      } catch (e) {
        const refused = refusedStreamError(e);
        const again =
          !req.stream &&
          attempt < options.maxAttempts &&
          (refused !== undefined || (idempotent && ConnectError.from(e).code === Code.Unavailable));
        if (!again) throw refused ?? e;
        // An abort during the delay rejects with the signal's reason: the call's deadline or the
        // caller's cancellation, which the transport turns into DEADLINE_EXCEEDED or CANCELED.
        await sleep(retryDelayMs(attempt, options), req.signal);
      }
    }
  };
}
