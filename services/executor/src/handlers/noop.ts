/**
 * `noop`: succeeds at once and echoes its input, for wiring tests and join points in a DAG.
 *
 * Input:  anything. Output: the input unchanged (`null` when there is none).
 */
import type { TaskHandler } from "./types.js";

/** The `noop` built-in handler. */
export const noopHandler: TaskHandler<unknown, unknown> = (input) => input ?? null;
