/**
 * Reports of one event-loop turn, sent together at its end (session protocol version 2): each
 * report is encoded once when it is made, and the turn's reports go out as Reports messages
 * bounded by bytes and count, a lone report as the message it would be alone. Nothing waits on a
 * timer: at low load a report leaves at the end of the turn that made it, as it did before.
 */
import { toBinary } from "@bufbuild/protobuf";
import {
  BATCH_BYTES,
  BATCH_ITEMS,
  type BatchBounds,
  type EncodedItem,
  encodeBatch,
  splitBatches,
} from "@nexusflow/common";
import {
  FailedSchema,
  HeartbeatSchema,
  ReleaseSchema,
  ReportSchema,
  type SessionRequest,
  SessionRequestSchema,
} from "@nexusflow/gen";
import { encodeCompleted, encodeStarted } from "./report-encoding.js";

/** A session message that may travel as an item of a Reports message. */
export type BatchableMessage = Extract<
  SessionRequest["message"],
  { case: "started" | "heartbeat" | "completed" | "failed" | "release" }
>;

/** How {@link ReportFrames} bounds a Reports message by default. */
export const REPORTS_BOUNDS: BatchBounds = { maxBytes: BATCH_BYTES, maxItems: BATCH_ITEMS };

const REPORTS_FIELD = SessionRequestSchema.field.reports.number;

/**
 * `message` encoded once, with its field numbers alone and as a Reports item (every task's Started
 * and Completed by hand: report-encoding.ts).
 */
export function encodeReport(message: BatchableMessage): EncodedItem {
  const single = SessionRequestSchema.field[message.case].number;
  const item = ReportSchema.field[message.case].number;
  switch (message.case) {
    case "started":
      return { single, item, bytes: encodeStarted(message.value) };
    case "heartbeat":
      return { single, item, bytes: toBinary(HeartbeatSchema, message.value) };
    case "completed":
      return { single, item, bytes: encodeCompleted(message.value) };
    case "failed":
      return { single, item, bytes: toBinary(FailedSchema, message.value) };
    case "release":
      return { single, item, bytes: toBinary(ReleaseSchema, message.value) };
  }
}

/** Collects a turn's reports and writes them, framed, at its end (or at {@link ReportFrames.flush}). */
export class ReportFrames {
  readonly #write: (frame: Uint8Array) => void;
  readonly #bounds: BatchBounds;
  #pending: EncodedItem[] = [];
  #scheduled = false;

  /** `write` takes each encoded SessionRequest, in order. */
  constructor(write: (frame: Uint8Array) => void, bounds: BatchBounds = REPORTS_BOUNDS) {
    this.#write = write;
    this.#bounds = bounds;
  }

  /** Reports not written yet. */
  get pending(): number {
    return this.#pending.length;
  }

  /** Adds a report; it is written at the end of the turn, after those added before it. */
  add(message: BatchableMessage): void {
    this.#pending.push(encodeReport(message));
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.flush();
    });
  }

  /** Writes what is pending now (before a message that must follow it). */
  flush(): void {
    if (this.#pending.length === 0) return;
    const items = this.#pending;
    this.#pending = [];
    for (const batch of splitBatches(items, this.#bounds)) this.#write(encodeBatch(batch, REPORTS_FIELD));
  }

  /** Forgets what is pending (the stream ended: the report ledger sends it again). */
  discard(): void {
    this.#pending = [];
  }
}
