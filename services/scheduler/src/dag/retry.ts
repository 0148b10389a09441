/**
 * Retry arithmetic: merging policies (step over workflow defaults over engine defaults) and the
 * exponential backoff delay with jitter. Randomness is injected so delays are reproducible in tests.
 */
import { parseDuration } from "@nexusflow/common/duration";
import { DagError } from "./errors.js";
import type { RetryPolicy } from "./spec.js";

/** How a backoff delay is randomised: not at all, uniformly in [0, d], or uniformly in [d/2, d]. */
export type Jitter = "none" | "full" | "equal";

/** A retry policy with every field decided and durations in milliseconds. */
export interface ResolvedRetryPolicy {
  /** Total attempts including the first. */
  readonly maxAttempts: number;
  readonly initialIntervalMs: number;
  readonly backoffCoefficient: number;
  readonly maxIntervalMs: number;
  readonly jitter: Jitter;
  /** Error types that fail the step at once, whatever attempts remain. */
  readonly nonRetryableErrors: readonly string[];
}

/** Default total attempts (the first one plus two retries). */
export const DEFAULT_MAX_ATTEMPTS = 3;
/** Default delay before the first retry. */
export const DEFAULT_INITIAL_INTERVAL_MS = 1_000;
/** Default growth factor of the delay. */
export const DEFAULT_BACKOFF_COEFFICIENT = 2;
/** When no maxInterval is given, the delay is capped at this many times the initial interval. */
export const DEFAULT_MAX_INTERVAL_FACTOR = 100;
/** Default jitter; "full" spreads retries of many failing steps furthest apart. */
export const DEFAULT_JITTER: Jitter = "full";
/** Upper bound of `maxAttempts`. */
export const MAX_ATTEMPTS_LIMIT = 100;
/** Upper bound of `backoffCoefficient`. */
export const MAX_BACKOFF_COEFFICIENT = 100;

/** The engine's policy when neither the step nor the workflow defaults say otherwise. */
export const DEFAULT_RETRY_POLICY: ResolvedRetryPolicy = Object.freeze({
  maxAttempts: DEFAULT_MAX_ATTEMPTS,
  initialIntervalMs: DEFAULT_INITIAL_INTERVAL_MS,
  backoffCoefficient: DEFAULT_BACKOFF_COEFFICIENT,
  maxIntervalMs: DEFAULT_INITIAL_INTERVAL_MS * DEFAULT_MAX_INTERVAL_FACTOR,
  jitter: DEFAULT_JITTER,
  nonRetryableErrors: Object.freeze([]),
});

/**
 * Merges policies field by field, later layers winning (e.g. `resolveRetryPolicy(defaults.retry,
 * step.retry)`); `nonRetryableErrors` is replaced, not concatenated. When no layer sets
 * maxInterval it is {@link DEFAULT_MAX_INTERVAL_FACTOR} times the resolved initial interval.
 * Durations must be valid (throws DurationError otherwise); bounds are checked by compileWorkflow.
 */
export function resolveRetryPolicy(...layers: readonly (RetryPolicy | undefined)[]): ResolvedRetryPolicy {
  let maxAttempts = DEFAULT_MAX_ATTEMPTS;
  let initialIntervalMs = DEFAULT_INITIAL_INTERVAL_MS;
  let backoffCoefficient = DEFAULT_BACKOFF_COEFFICIENT;
  let maxIntervalMs: number | undefined;
  let jitter = DEFAULT_JITTER;
  let nonRetryableErrors: readonly string[] = DEFAULT_RETRY_POLICY.nonRetryableErrors;
  for (const layer of layers) {
    if (layer === undefined) continue;
    if (layer.maxAttempts !== undefined) maxAttempts = layer.maxAttempts;
    if (layer.initialInterval !== undefined) initialIntervalMs = parseDuration(layer.initialInterval);
    if (layer.backoffCoefficient !== undefined) backoffCoefficient = layer.backoffCoefficient;
    if (layer.maxInterval !== undefined) maxIntervalMs = parseDuration(layer.maxInterval);
    if (layer.jitter !== undefined) jitter = layer.jitter;
    if (layer.nonRetryableErrors !== undefined)
      nonRetryableErrors = Object.freeze([...layer.nonRetryableErrors]);
  }
  return Object.freeze({
    maxAttempts,
    initialIntervalMs,
    backoffCoefficient,
    maxIntervalMs: maxIntervalMs ?? initialIntervalMs * DEFAULT_MAX_INTERVAL_FACTOR,
    jitter,
    nonRetryableErrors,
  });
}

/**
 * Delay in whole milliseconds before the attempt after `attempt` (1-based number of the attempt that
 * just failed), or null when `attempt` was the last one allowed. The un-jittered delay is
 * `min(initialInterval * coefficient^(attempt-1), maxInterval)`; "full" jitter draws from [0, delay],
 * "equal" from [delay/2, delay]. `random` must return values in [0, 1) like Math.random.
 */
export function retryDelayMs(
  policy: ResolvedRetryPolicy,
  attempt: number,
  random: () => number = Math.random,
): number | null {
  if (!Number.isSafeInteger(attempt) || attempt < 1) {
    throw new DagError("INVALID_ARGUMENT", `attempt must be an integer >= 1, got ${attempt}`);
  }
  if (attempt >= policy.maxAttempts) return null;
  // pow may overflow to Infinity for large attempts; min() then yields the cap, which is what we want.
  const base = Math.min(
    policy.initialIntervalMs * Math.pow(policy.backoffCoefficient, attempt - 1),
    policy.maxIntervalMs,
  );
  if (policy.jitter === "none") return Math.round(base);
  // Clamp so a misbehaving random source can never produce a delay outside the documented range.
  const r = Math.min(Math.max(random(), 0), 1);
  if (policy.jitter === "full") return Math.round(base * r);
  return Math.round(base / 2 + (base / 2) * r);
}

/** Whether a failure of type `errorType` may be retried under `policy` (attempts aside). */
export function isRetryableError(policy: ResolvedRetryPolicy, errorType: string | undefined): boolean {
  return errorType === undefined || !policy.nonRetryableErrors.includes(errorType);
}
