/**
 * `sleep`: waits for a duration, e.g. to space out steps. Holds an executor slot while waiting,
 * so long waits belong in the workflow definition (a timer step), not here.
 *
 * Input:  `{ duration: string }` such as "250ms", "5s", "1m30s" (zero allowed, at most 30d).
 * Output: `{ sleptMs: number }`, the requested duration in milliseconds.
 * Errors: INVALID_INPUT; CANCELLED (or the abort reason, see `cancellationError`) on abort.
 */
import type { TaskHandler } from "./types.js";
import { sleep } from "./timers.js";
import { durationField, expectObject } from "./validate.js";

/** Validated input of the `sleep` handler. */
export interface SleepInput {
  /** How long to wait, as a duration string. */
  duration: string;
}

/** Output of the `sleep` handler. */
export interface SleepOutput {
  /** The requested duration in milliseconds. */
  sleptMs: number;
}

/** The `sleep` built-in handler. */
export const sleepHandler: TaskHandler<unknown, SleepOutput> = async (input, ctx) => {
  const ms = durationField(expectObject(input, ["duration"]), "duration", undefined, { allowZero: true });
  await sleep(ms, ctx.signal);
  return { sleptMs: ms };
};
