/**
 * Retry of UNAVAILABLE, for calls that change nothing when repeated. A call that reached the
 * server before the connection failed may have taken effect: repeating StartRun without an
 * idempotency key could start a second run, so only the calls below are retried.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { CompiledRetryOptions } from "./options.js";

/**
 * Unary methods that are safe to repeat, as `package.Service/Method`: every read, RegisterWorkflow
 * (identical content is a no-op) and CancelRun (idempotent). StartRun and SignalRun are ones only
 * with an idempotency key, StartRuns only when every run has one ({@link isIdempotentCall}).
 */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set([
  "nexusflow.v1.WorkflowService/RegisterWorkflow",
  "nexusflow.v1.WorkflowService/GetWorkflow",
  "nexusflow.v1.WorkflowService/ListWorkflows",
  "nexusflow.v1.WorkflowService/GetRun",
  "nexusflow.v1.WorkflowService/ListRuns",
  "nexusflow.v1.WorkflowService/CancelRun",
  "nexusflow.v1.ArtifactService/ListArtifacts",
]);

const START_RUN = "nexusflow.v1.WorkflowService/StartRun";
const SIGNAL_RUN = "nexusflow.v1.WorkflowService/SignalRun";
const START_RUNS = "nexusflow.v1.WorkflowService/StartRuns";

function hasIdempotencyKey(message: unknown): boolean {
  const key = (message as { idempotencyKey?: unknown } | undefined)?.idempotencyKey;
  return typeof key === "string" && key !== "";
}

/** Whether a unary call of `method` (`package.Service/Method`) with `message` may be repeated. */
export function isIdempotentCall(method: string, message: unknown): boolean {
  if (IDEMPOTENT_METHODS.has(method)) return true;
  if (method === START_RUN || method === SIGNAL_RUN) return hasIdempotencyKey(message);
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

/**
 * Repeats an idempotent unary call that failed with UNAVAILABLE, up to `maxAttempts` attempts in
 * all, within the call's deadline and while its signal is not aborted. Streams pass through.
 */
export function retryInterceptor(options: CompiledRetryOptions): Interceptor {
  return (next) => async (req) => {
    if (options.maxAttempts <= 1 || req.stream || !isIdempotentCall(methodName(req), req.message)) {
      return next(req);
    }
    for (let attempt = 1; ; attempt++) {
      try {
        return await next(req);
      } catch (e) {
        if (ConnectError.from(e).code !== Code.Unavailable || attempt >= options.maxAttempts) throw e;
        // An abort during the delay rejects with the signal's reason: the call's deadline or the
        // caller's cancellation, which the transport turns into DEADLINE_EXCEEDED or CANCELED.
        await sleep(retryDelayMs(attempt, options), req.signal);
      }
    }
  };
}
