/**
 * Where the log of each task attempt goes. The session code only knows {@link LogSink}; the
 * in-memory sink keeps recent attempts for inspection, and `ArtifactLogSink` (artifact-log-sink.ts)
 * writes `logs.jsonl` to the artifact store and returns its {@link LogRef}.
 */
import type { LogRef } from "@nexusflow/gen";

/** One line of an attempt's log; mirrors `nexusflow.v1.LogLine`, plus structured fields. */
export interface LogRecord {
  /** When it was written. */
  readonly time: Date;
  /** "log" for `ctx.log.info/warn/error`, "stdout"/"stderr" for `ctx.log.write`. */
  readonly stream: "log" | "stdout" | "stderr";
  /** Level of a "log" line; empty for stdout/stderr. */
  readonly level: "info" | "warn" | "error" | "";
  /** The text, without the trailing newline. */
  readonly text: string;
  /** Structured fields of a "log" line. */
  readonly fields?: Readonly<Record<string, unknown>> | undefined;
  /** Attempt number. */
  readonly attempt: number;
}

/** Which attempt a log belongs to. */
export interface AttemptIdentity {
  readonly runId: string;
  readonly stepId: string;
  readonly taskRunId: string;
  readonly attempt: number;
  readonly taskType: string;
  /** Step or compensation (their logs go to different folders). @default "STEP" */
  readonly kind?: "STEP" | "COMPENSATION" | undefined;
}

/** The open log of one attempt. */
export interface AttemptLog {
  /** Appends one line; must not throw or block. */
  append(record: LogRecord): void;
  /** Ends the log; resolves to where it was stored, or undefined when it was not stored durably. */
  close(): Promise<LogRef | undefined>;
}

/** A factory of per-attempt logs. */
export interface LogSink {
  /** Opens the log of one attempt. */
  open(attempt: AttemptIdentity): AttemptLog;
}

/** Options of {@link MemoryLogSink}. */
export interface MemoryLogSinkOptions {
  /**
   * Attempts kept; the oldest is forgotten first.
   * @default 100
   */
  maxAttempts?: number;
  /**
   * Lines kept per attempt; later lines are counted in `dropped` instead.
   * @default 10000
   */
  maxLinesPerAttempt?: number;
  /**
   * Bytes kept per attempt (the UTF-8 size of each line's text and of its fields as JSON); the line
   * that would pass it, and every later one, is counted in `dropped` instead.
   * @default 1 MiB
   */
  maxBytesPerAttempt?: number;
}

/** The lines of one attempt kept by {@link MemoryLogSink}. */
export interface MemoryAttemptLog {
  readonly lines: readonly LogRecord[];
  /** The size of the lines kept, as `maxBytesPerAttempt` counts it. */
  readonly bytes: number;
  /** Lines not kept because of `maxLinesPerAttempt` or `maxBytesPerAttempt`. */
  readonly dropped: number;
  /** Whether the attempt has ended. */
  readonly closed: boolean;
}

/** Keeps the logs of recent attempts in memory (bounded); stores nothing durably. */
export class MemoryLogSink implements LogSink {
  readonly #maxAttempts: number;
  readonly #maxLines: number;
  readonly #maxBytes: number;
  readonly #attempts = new Map<
    string,
    { lines: LogRecord[]; bytes: number; dropped: number; closed: boolean }
  >();

  constructor(options: MemoryLogSinkOptions = {}) {
    this.#maxAttempts = options.maxAttempts ?? 100;
    this.#maxLines = options.maxLinesPerAttempt ?? 10_000;
    this.#maxBytes = options.maxBytesPerAttempt ?? 1024 * 1024;
  }

  /** Opens the log of one attempt, replacing an earlier log of the same attempt. */
  open(attempt: AttemptIdentity): AttemptLog {
    const id = `${attempt.taskRunId}/${attempt.attempt}`;
    const entry = { lines: [] as LogRecord[], bytes: 0, dropped: 0, closed: false };
    this.#attempts.delete(id);
    this.#attempts.set(id, entry);
    while (this.#attempts.size > this.#maxAttempts) {
      const oldest = this.#attempts.keys().next();
      if (oldest.done === true) break;
      this.#attempts.delete(oldest.value);
    }
    return {
      append: (record) => {
        // Once a line is dropped, so is every later one: what is kept is the log's beginning.
        if (entry.dropped === 0 && entry.lines.length < this.#maxLines) {
          const bytes = recordBytes(record);
          if (entry.bytes + bytes <= this.#maxBytes) {
            entry.lines.push(record);
            entry.bytes += bytes;
            return;
          }
        }
        entry.dropped++;
      },
      close: () => {
        entry.closed = true;
        return Promise.resolve(undefined);
      },
    };
  }

  /** The log of an attempt, if it is still kept. */
  get(taskRunId: string, attempt: number): MemoryAttemptLog | undefined {
    return this.#attempts.get(`${taskRunId}/${attempt}`);
  }
}

/** The UTF-8 size of a line's text and of its fields as JSON (none when they have no JSON form). */
function recordBytes(record: LogRecord): number {
  let bytes = Buffer.byteLength(record.text);
  if (record.fields !== undefined) {
    try {
      bytes += Buffer.byteLength(JSON.stringify(record.fields));
    } catch {
      // A cycle or a bigint: held as given, but counted as its text only.
    }
  }
  return bytes;
}
