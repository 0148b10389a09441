/**
 * The `ctx.log` given to handlers: turns `info/warn/error` calls and raw `write` chunks into
 * {@link LogRecord}s (chunks are split into lines per stream) and mirrors lines to the executor's
 * logger at debug level.
 */
import type { Logger } from "@nexusflow/common";
import type { TaskLog } from "./handlers/index.js";
import type { AttemptLog, LogRecord } from "./log-sink.js";

/** Longest line kept whole; a longer run without a newline is cut into pieces this long. */
export const MAX_LINE_CHARS = 64 * 1024;

/** A {@link TaskLog} that also flushes the unterminated tail of its streams. */
export interface AttemptTaskLog extends TaskLog {
  /** Emits what is left of stdout/stderr without a trailing newline. Later calls are ignored. */
  end(): void;
}

/** Creates the `ctx.log` of one attempt over `sink`. */
export function createTaskLog(sink: AttemptLog, attempt: number, mirror?: () => Logger): AttemptTaskLog {
  let ended = false;
  const partial = { stdout: "", stderr: "" };
  const emit = (record: LogRecord): void => {
    try {
      sink.append(record);
    } catch (e) {
      // A broken sink must not fail the task; the mirror still has the line.
      mirror?.().warn({ err: e }, "task log sink failed");
    }
  };
  const line =
    (level: "info" | "warn" | "error") =>
    (message: string, fields?: Record<string, unknown>): void => {
      if (ended) return;
      const text = String(message);
      emit(
        fields === undefined
          ? { time: new Date(), stream: "log", level, text, attempt }
          : { time: new Date(), stream: "log", level, text, fields, attempt },
      );
      mirror?.().debug({ ...fields, taskLevel: level }, text);
    };
  const pushLines = (stream: "stdout" | "stderr", text: string): void => {
    // An empty line is still a line; only over-long ones are cut.
    let at = 0;
    do {
      emit({ time: new Date(), stream, level: "", text: text.slice(at, at + MAX_LINE_CHARS), attempt });
      at += MAX_LINE_CHARS;
    } while (at < text.length);
  };
  return {
    info: line("info"),
    warn: line("warn"),
    error: line("error"),
    write(stream, chunk) {
      if (ended) return;
      const lines = (partial[stream] + String(chunk)).split("\n");
      let rest = lines.pop() ?? "";
      for (const l of lines) pushLines(stream, l.endsWith("\r") ? l.slice(0, -1) : l);
      if (rest.length >= MAX_LINE_CHARS) {
        const whole = rest.length - (rest.length % MAX_LINE_CHARS);
        pushLines(stream, rest.slice(0, whole));
        rest = rest.slice(whole);
      }
      partial[stream] = rest;
    },
    end() {
      if (ended) return;
      ended = true;
      for (const stream of ["stdout", "stderr"] as const) {
        if (partial[stream] !== "") pushLines(stream, partial[stream]);
        partial[stream] = "";
      }
    },
  };
}
