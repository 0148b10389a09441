/**
 * How `nexusflow dev` reads SIGINT/SIGTERM: the first one stops the stack in order, a second one
 * kills everything at once; but a repeat that arrives within {@link REPEAT_WINDOW_MS} of the
 * first is the same Ctrl-C delivered twice, and is ignored.
 *
 * Why a window: a Ctrl-C in a terminal sends SIGINT to the whole foreground process group, and
 * `npm start` (npm, then tsx) also forwards the signal it got to its child, so this process
 * receives one Ctrl-C two or three times within a few milliseconds. A person pressing Ctrl-C
 * again takes far longer than 500 ms, and the forwarded copies cannot be told apart from the
 * terminal's by anything the signal carries (Node does not expose the sender).
 */

/** Repeats within this many milliseconds of the first signal are the same Ctrl-C. */
export const REPEAT_WINDOW_MS = 500;

/** What {@link stopSignalHandler} does, and its clock. */
export interface StopSignalOptions {
  /** The first signal: stop in order. */
  onStop(signal: NodeJS.Signals): void;
  /** A later signal, outside the window: stop now. */
  onForce(signal: NodeJS.Signals): void;
  /**
   * Repeats within this many milliseconds of the first signal are ignored.
   * @default REPEAT_WINDOW_MS
   */
  windowMs?: number;
  /**
   * Monotonic clock in milliseconds.
   * @default performance.now
   */
  now?: () => number;
}

/** A signal listener: the first call stops, a call outside the window forces, others do nothing. */
export function stopSignalHandler(options: StopSignalOptions): (signal: NodeJS.Signals) => void {
  const windowMs = options.windowMs ?? REPEAT_WINDOW_MS;
  const now = options.now ?? (() => performance.now());
  let first: number | undefined;
  return (signal) => {
    const at = now();
    if (first === undefined) {
      first = at;
      options.onStop(signal);
    } else if (at - first >= windowMs) {
      options.onForce(signal);
    }
  };
}
