/** Reconnection delays: capped exponential backoff with full jitter (AWS architecture blog). */

/** Bounds of {@link backoffDelay}. */
export interface BackoffBounds {
  /** Upper bound of the first delay, in milliseconds. */
  readonly initialDelayMs: number;
  /** Cap of the upper bound, in milliseconds. */
  readonly maxDelayMs: number;
}

/**
 * Delay before reconnection attempt `attempt` (1 for the first retry): uniform in
 * [0, min(maxDelayMs, initialDelayMs * 2^(attempt-1))]. Full jitter spreads a fleet of executors
 * that lost the same scheduler, so they do not reconnect in lockstep.
 */
export function backoffDelay(
  attempt: number,
  bounds: BackoffBounds,
  random: () => number = Math.random,
): number {
  const exponent = Math.max(0, Math.min(attempt - 1, 30)); // 2^30 already exceeds any cap
  const bound = Math.min(bounds.maxDelayMs, bounds.initialDelayMs * 2 ** exponent);
  return Math.floor(random() * bound);
}
