/**
 * Standard output and error of the operator commands when the reader goes away: `nexusflow runs
 * watch ID | head -1` closes the pipe after one line, and the next write fails with EPIPE. Node
 * reports that as an 'error' event of `process.stdout`, which, with nobody listening, ends the
 * process with a stack trace. A {@link GuardedOutput} listens: it drops every later write and
 * calls `onBroken` once, so the command can stop (its signal aborted) and exit quietly with
 * {@link BROKEN_PIPE_EXIT_CODE}, as `yes | head -1` does.
 */
import type { Writable } from "node:stream";

/** Exit code after the reader of standard output went away: 128 + SIGPIPE, as a shell shows for `yes`. */
export const BROKEN_PIPE_EXIT_CODE = 141;

/** Why a command was stopped when its standard output could no longer be written. */
export class BrokenPipeError extends Error {
  override name = "BrokenPipeError";
}

/** A stream that never throws nor emits an unhandled 'error': it goes quiet once a write fails. */
export interface GuardedOutput {
  /** Writes `text`; does nothing once the stream has failed. */
  write(text: string): void;
  /** Whether a write failed (EPIPE: the reader went away), and so nothing more is written. */
  readonly broken: boolean;
}

/**
 * Guards `stream`: its first error (EPIPE, or any other) marks it broken and calls `onBroken`
 * with that error; later writes are dropped.
 */
export function guardOutput(stream: Writable, onBroken?: (error: Error) => void): GuardedOutput {
  let broken = false;
  stream.on("error", (e: Error) => {
    if (broken) return;
    broken = true;
    onBroken?.(e);
  });
  return {
    write(text) {
      if (broken || stream.destroyed) return;
      stream.write(text);
    },
    get broken() {
      return broken;
    },
  };
}
