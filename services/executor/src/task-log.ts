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
  end(this: void): void;
}

/** Creates the `ctx.log` of one attempt over `sink`. */
export function createTaskLog(sink: AttemptLog, attempt: number, mirror?: () => Logger): AttemptTaskLog {
  return new AttemptLogWriter(sink, attempt, mirror);
}

/**
 * The `ctx.log` of one attempt. Its methods work detached (`const { info } = ctx.log`), as plain
 * functions would: each is bound when first read, so an attempt that never logs (most of them)
 * makes no function for it.
 */
class AttemptLogWriter implements AttemptTaskLog {
  readonly #sink: AttemptLog;
  readonly #attempt: number;
  readonly #mirror: (() => Logger) | undefined;
  #ended = false;
  #stdout = "";
  #stderr = "";
  #info: TaskLog["info"] | undefined;
  #warn: TaskLog["warn"] | undefined;
  #error: TaskLog["error"] | undefined;
  #write: TaskLog["write"] | undefined;
  #end: (() => void) | undefined;

  constructor(sink: AttemptLog, attempt: number, mirror: (() => Logger) | undefined) {
    this.#sink = sink;
    this.#attempt = attempt;
    this.#mirror = mirror;
  }

  get info(): TaskLog["info"] {
    return (this.#info ??= (message, fields) => this.#line("info", message, fields));
  }

  get warn(): TaskLog["warn"] {
    return (this.#warn ??= (message, fields) => this.#line("warn", message, fields));
  }

  get error(): TaskLog["error"] {
    return (this.#error ??= (message, fields) => this.#line("error", message, fields));
  }

  get write(): TaskLog["write"] {
    return (this.#write ??= (stream, chunk) => this.#chunk(stream, chunk));
  }

  get end(): () => void {
    return (this.#end ??= () => this.#finish());
  }

  #emit(record: LogRecord): void {
    try {
      this.#sink.append(record);
    } catch (e) {
      // A broken sink must not fail the task; the mirror still has the line.
      this.#mirror?.().warn({ err: e }, "task log sink failed");
    }
  }

  #line(level: "info" | "warn" | "error", message: string, fields?: Record<string, unknown>): void {
    if (this.#ended) return;
    const text = String(message);
    const attempt = this.#attempt;
    this.#emit(
      fields === undefined
        ? { time: new Date(), stream: "log", level, text, attempt }
        : { time: new Date(), stream: "log", level, text, fields, attempt },
    );
    this.#mirror?.().debug({ ...fields, taskLevel: level }, text);
  }

  #pushLines(stream: "stdout" | "stderr", text: string): void {
    // An empty line is still a line; only over-long ones are cut.
    let at = 0;
    do {
      this.#emit({
        time: new Date(),
        stream,
        level: "",
        text: text.slice(at, at + MAX_LINE_CHARS),
        attempt: this.#attempt,
      });
      at += MAX_LINE_CHARS;
    } while (at < text.length);
  }

  #chunk(stream: "stdout" | "stderr", chunk: string): void {
    if (this.#ended) return;
    const lines = ((stream === "stdout" ? this.#stdout : this.#stderr) + String(chunk)).split("\n");
    let rest = lines.pop() ?? "";
    for (const l of lines) this.#pushLines(stream, l.endsWith("\r") ? l.slice(0, -1) : l);
    if (rest.length >= MAX_LINE_CHARS) {
      const whole = rest.length - (rest.length % MAX_LINE_CHARS);
      this.#pushLines(stream, rest.slice(0, whole));
      rest = rest.slice(whole);
    }
    if (stream === "stdout") this.#stdout = rest;
    else this.#stderr = rest;
  }

  #finish(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#stdout !== "") this.#pushLines("stdout", this.#stdout);
    if (this.#stderr !== "") this.#pushLines("stderr", this.#stderr);
    this.#stdout = "";
    this.#stderr = "";
  }
}
