/**
 * A {@link LogSink} that stores each attempt's log in the artifact store as JSON Lines (one
 * `nexusflow.v1.LogLine` JSON object per line, see `@nexusflow/common/artifacts` log-lines).
 *
 * S3 has no append, so while the attempt runs its lines are written as numbered chunks, each a
 * complete object, flushed every `flushIntervalMs` or as soon as `flushBytes` are waiting:
 *
 * ```text
 * runs/{run}/{step}/attempt-{n}/logs/00001.jsonl   while running (GetTaskLogs follows these)
 * runs/{run}/{step}/attempt-{n}/logs/00002.jsonl
 * runs/{run}/{step}/attempt-{n}/logs.jsonl         on close: all chunks in order, then the chunks are deleted
 * ```
 *
 * (`runs/{run}/{step}/element-{i}/attempt-{n}/…` for an element of a map step.)
 *
 * An attempt that ends before its first flush writes `logs.jsonl` directly; one that wrote no line
 * at all stores nothing (no request to the store on its way to the report): its {@link LogRef}
 * names the key with 0 lines, which readers take for an empty log. If the executor dies
 * mid-attempt the chunks stay, and readers use them. While the store cannot be written, lines are
 * held (up to `maxBufferedBytes`, then dropped and counted, and the count is logged as a last line).
 * `append` never throws or blocks.
 */
import { setTimeout as delay } from "node:timers/promises";
import { Readable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { type Logger } from "@nexusflow/common";
import {
  type ArtifactStore,
  LOGS_OBJECT,
  LOG_CHUNKS_FOLDER,
  type TaskKindName,
  attemptPrefix,
  encodeLogLine,
  logChunkKey,
  readAll,
} from "@nexusflow/common/artifacts";
import { type LogRef, LogRefSchema } from "@nexusflow/gen";
import type { AttemptIdentity, AttemptLog, LogRecord, LogSink } from "./log-sink.js";

/** Media type of log objects. */
export const LOG_CONTENT_TYPE = "application/x-ndjson";

/** Options of {@link ArtifactLogSink}. */
export interface ArtifactLogSinkOptions {
  /** Where logs go. */
  store: ArtifactStore;
  /**
   * Longest time a line waits before it is written, in milliseconds.
   * @default 1000
   */
  flushIntervalMs?: number | undefined;
  /**
   * Waiting bytes that trigger a write at once.
   * @default 64 KiB
   */
  flushBytes?: number | undefined;
  /**
   * Most bytes held while the store cannot be written; later lines are dropped and counted.
   * @default 16 MiB
   */
  maxBufferedBytes?: number | undefined;
  /**
   * Chunk bytes kept in memory to build `logs.jsonl` on close without reading the chunks back.
   * @default 8 MiB
   */
  maxCachedBytes?: number | undefined;
  /**
   * Tries of the final writes on close before giving up (the attempt is then reported without logs).
   * @default 3
   */
  closeRetries?: number | undefined;
  /** Where problems with the store are reported. */
  logger?: Logger | undefined;
}

/**
 * Which attempt a log belongs to; `kind` (set by the executor) separates compensations, and
 * `elementIndex` (the lease's) the elements of a map step, which share their step id.
 */
export type LogIdentity = AttemptIdentity & {
  readonly kind?: TaskKindName | undefined;
  readonly elementIndex?: number | undefined;
};

/** Stores attempt logs in an {@link ArtifactStore}. */
export class ArtifactLogSink implements LogSink {
  readonly #options: CompiledOptions;

  constructor(options: ArtifactLogSinkOptions) {
    this.#options = {
      store: options.store,
      flushIntervalMs: options.flushIntervalMs ?? 1000,
      flushBytes: options.flushBytes ?? 64 * 1024,
      maxBufferedBytes: options.maxBufferedBytes ?? 16 * 1024 * 1024,
      maxCachedBytes: options.maxCachedBytes ?? 8 * 1024 * 1024,
      closeRetries: Math.max(1, options.closeRetries ?? 3),
      logger: options.logger,
    };
  }

  /** Opens the log of one attempt. */
  open(attempt: LogIdentity): AttemptLog {
    return new ArtifactAttemptLog(
      attemptPrefix(attempt.runId, attempt.stepId, attempt.attempt, attempt.kind, attempt.elementIndex),
      attempt.attempt,
      this.#options,
    );
  }
}

/** {@link ArtifactLogSinkOptions} with the defaults applied. */
interface CompiledOptions {
  readonly store: ArtifactStore;
  readonly flushIntervalMs: number;
  readonly flushBytes: number;
  readonly maxBufferedBytes: number;
  readonly maxCachedBytes: number;
  readonly closeRetries: number;
  readonly logger: Logger | undefined;
}

/** The log of one attempt. */
class ArtifactAttemptLog implements AttemptLog {
  readonly #prefix: string;
  readonly #attempt: number;
  readonly #o: CompiledOptions;
  #pending: string[] = [];
  #pendingBytes = 0;
  /** Lines in the chunks written so far. */
  #written = 0;
  #dropped = 0;
  /** Chunks written so far; the next one is #chunks + 1. */
  #chunks = 0;
  /** Texts of the chunks written, while they fit in maxCachedBytes; undefined afterwards. */
  #cache: string[] | undefined = [];
  #cachedBytes = 0;
  #closed = false;
  #timer: NodeJS.Timeout | undefined;
  /** Flushes run one after the other. */
  #chain: Promise<void> = Promise.resolve();
  #warned = false;

  constructor(prefix: string, attempt: number, options: CompiledOptions) {
    this.#prefix = prefix;
    this.#attempt = attempt;
    this.#o = options;
  }

  append(record: LogRecord): void {
    if (this.#closed) return;
    this.#push(
      encodeLogLine({
        time: record.time,
        stream: record.stream,
        level: record.level,
        text: record.text,
        attempt: record.attempt,
        fields: record.fields,
      }),
    );
    if (this.#pendingBytes >= this.#o.flushBytes) this.#flushSoon(0);
    else this.#flushSoon(this.#o.flushIntervalMs);
  }

  #push(line: string): void {
    const bytes = Buffer.byteLength(line);
    if (this.#pendingBytes + bytes > this.#o.maxBufferedBytes) {
      this.#dropped++;
      return;
    }
    this.#pending.push(line);
    this.#pendingBytes += bytes;
  }

  /** Arms the flush timer (an earlier deadline wins). */
  #flushSoon(ms: number): void {
    if (this.#timer !== undefined && ms > 0) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#chain = this.#chain.then(() => this.#flushChunk(false));
    }, ms);
    // Pending log lines alone must not keep the process alive; close() writes them anyway.
    this.#timer.unref();
  }

  /** Writes what is pending as the next chunk. With `final`, failures are thrown instead of retried later. */
  async #flushChunk(final: boolean): Promise<void> {
    if (this.#pending.length === 0) return;
    const lines = this.#pending;
    const bytes = this.#pendingBytes;
    this.#pending = [];
    this.#pendingBytes = 0;
    const text = lines.join("");
    const seq = this.#chunks + 1;
    try {
      await this.#o.store.put(logChunkKey(this.#prefix, seq), text, { contentType: LOG_CONTENT_TYPE });
    } catch (e) {
      // Keep the lines (they go first next time) and try again later.
      this.#pending = [...lines, ...this.#pending];
      this.#pendingBytes += bytes;
      if (final) throw e;
      if (!this.#warned) {
        this.#warned = true;
        this.#o.logger?.warn(
          { err: e, prefix: this.#prefix },
          "could not write a task log chunk; will retry",
        );
      }
      if (!this.#closed) this.#flushSoon(this.#o.flushIntervalMs);
      return;
    }
    this.#chunks = seq;
    this.#written += lines.length;
    if (this.#cache !== undefined) {
      this.#cachedBytes += Buffer.byteLength(text);
      if (this.#cachedBytes <= this.#o.maxCachedBytes) this.#cache.push(text);
      else this.#cache = undefined;
    }
  }

  async close(): Promise<LogRef | undefined> {
    if (this.#closed) throw new Error("the attempt log is already closed");
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#chain;
    if (this.#dropped > 0) {
      this.#pending.push(
        encodeLogLine({
          time: new Date(),
          stream: "log",
          level: "warn",
          text: `${this.#dropped} log lines were dropped: the artifact store could not keep up`,
          attempt: this.#attempt,
        }),
      );
    }
    const key = `${this.#prefix}${LOGS_OBJECT}`;
    // No line at all: nothing to store (a silent handler would otherwise cost an empty object, a
    // request to S3, before every report).
    if (this.#chunks === 0 && this.#pending.length === 0) return create(LogRefSchema, { key });
    let lines: number;
    let ref;
    if (this.#chunks === 0) {
      // Ended before the first flush: one object, no chunks.
      lines = this.#pending.length;
      const text = this.#pending.join("");
      ref = await this.#retry(() => this.#o.store.put(key, text, { contentType: LOG_CONTENT_TYPE }));
    } else {
      await this.#retry(() => this.#flushChunk(true));
      lines = this.#written;
      ref = await this.#retry(() =>
        this.#o.store.put(key, this.#concatenated(), { contentType: LOG_CONTENT_TYPE }),
      );
      try {
        await this.#o.store.delete(`${this.#prefix}${LOG_CHUNKS_FOLDER}`);
      } catch (e) {
        // Readers prefer logs.jsonl, so leftover chunks are only clutter.
        this.#o.logger?.warn({ err: e, prefix: this.#prefix }, "could not delete task log chunks");
      }
    }
    return create(LogRefSchema, { key, size: ref.size, lines: BigInt(lines) });
  }

  /** The content of every chunk in order: from memory when cached, else read back from the store. */
  #concatenated(): string | Readable {
    if (this.#cache !== undefined && this.#cache.length === this.#chunks) return this.#cache.join("");
    const store = this.#o.store;
    const prefix = this.#prefix;
    const count = this.#chunks;
    return Readable.from(
      (async function* () {
        for (let seq = 1; seq <= count; seq++) yield await readAll(await store.get(logChunkKey(prefix, seq)));
      })(),
    );
  }

  /** Runs a final write, retrying with a short backoff before giving up. */
  async #retry<T>(write: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await write();
      } catch (e) {
        if (attempt >= this.#o.closeRetries) throw e;
        await delay(100 * 2 ** attempt);
      }
    }
  }
}
