/**
 * What the executor session's two ends must agree on beyond the messages themselves: the protocol
 * versions, which messages Acked counts, and how batches are bounded and framed.
 */
import { WireType } from "@bufbuild/protobuf/wire";
import type { SessionRequest } from "@nexusflow/gen";
import { varintSize, writeVarint } from "./wire/varint.js";

/**
 * The session protocol version this code speaks (see ExecutorService in executor_service.proto):
 * 2 adds LeaseBatch and Reports to version 1's single messages; 3 (see
 * {@link ELEMENT_FOLDERS_VERSION}) gives each element of a map step its own artifact folder.
 */
export const SESSION_PROTOCOL_VERSION = 3;

/** The oldest session protocol version still spoken; an Attach without a version is this one. */
export const MIN_SESSION_PROTOCOL_VERSION = 1;

/**
 * The first session protocol version in which a map element's lease carries element_index and the
 * element's attempt folder is its own (`runs/{run}/{step}/element-{i}/attempt-{n}/`): on a session
 * of this version or later the executor stores an element's objects there and the scheduler wants
 * a report's keys there. Below it, every element of a map step stores in its step's attempt folder
 * (`runs/{run}/{step}/attempt-{n}/`), as releases before element folders did.
 */
export const ELEMENT_FOLDERS_VERSION = 3;

const REFUSAL = "attach.protocol_version: ";
const REFUSED_RANGE = /this scheduler versions (\d{1,9}) to (\d{1,9})\b/;

/**
 * The details of the FAILED_PRECONDITION that ends a session whose Attach names a version the
 * scheduler does not speak. The text is what schedulers have sent since version 2 (executors parse
 * it: {@link refusedVersionRange}); keep it.
 */
export function versionRefusal(
  executorVersion: number,
  min = MIN_SESSION_PROTOCOL_VERSION,
  max = SESSION_PROTOCOL_VERSION,
): string {
  return (
    `${REFUSAL}the executor speaks session protocol version ${executorVersion}, ` +
    `this scheduler versions ${min} to ${max}; ` +
    "upgrade the scheduler or run an executor release that speaks one of those"
  );
}

/**
 * Whether `details` (of a FAILED_PRECONDITION ending a session before its AttachAck) is a refusal
 * of the Attach's protocol version and, when it names them ({@link versionRefusal}), the versions
 * the scheduler speaks: `{}` for a refusal that does not name them, undefined for any other.
 */
export function refusedVersionRange(details: string): { min?: number; max?: number } | undefined {
  if (!details.startsWith(REFUSAL)) return undefined;
  const m = REFUSED_RANGE.exec(details);
  if (m === null) return {};
  const [min, max] = [Number(m[1]), Number(m[2])];
  return min <= max ? { min, max } : {};
}

/** Most items a Reports message may hold: a larger one is rejected as a whole. */
export const MAX_BATCH_ITEMS = 4096;

/**
 * The byte bound of a batch either end builds (LeaseBatch, Reports): well under gRPC's default
 * receive limit of 4 MiB, so that a batch never fails where its items alone would not.
 */
export const BATCH_BYTES = 1024 * 1024;

/** The item bound of a batch either end builds (at most {@link MAX_BATCH_ITEMS}). */
export const BATCH_ITEMS = 1024;

/**
 * Whether `message` is a report the scheduler acknowledges (Acked counts these per session, in the
 * order received): Completed, Failed and Release. The executor keeps each until it is counted, so
 * both ends must count the same messages. A Reports message is several: see
 * {@link acknowledgedReports}.
 */
export function isAcknowledgedReport(message: SessionRequest["message"]): boolean {
  return message.case === "completed" || message.case === "failed" || message.case === "release";
}

/**
 * How many reports Acked counts for `message`: 1 for a Completed, Failed or Release, the number of
 * such items for a Reports (each item counted as if it had come alone), 0 otherwise.
 */
export function acknowledgedReports(message: SessionRequest["message"]): number {
  if (message.case !== "reports") return isAcknowledgedReport(message) ? 1 : 0;
  let n = 0;
  for (const item of message.value.items)
    if (item.report.case === "completed" || item.report.case === "failed" || item.report.case === "release")
      n++;
  return n;
}

/** An item of a batch, already encoded: the message of one Lease or one report. */
export interface EncodedItem {
  /** Its field number in the single-message oneof (SessionResponse.lease, SessionRequest.completed, ...). */
  readonly single: number;
  /** Its field number in the batch item (Report.completed, ...); 0 when the item is the batch's element itself (Lease). */
  readonly item: number;
  /** The encoded message. */
  readonly bytes: Uint8Array;
}

/** Bytes a batch spends on an item beyond its message: two tags and two lengths at most. */
const ITEM_OVERHEAD = 12;

/** The bounds of a batch. */
export interface BatchBounds {
  /** Most bytes of the items' messages, framing included. */
  readonly maxBytes: number;
  /** Most items. */
  readonly maxItems: number;
}

/**
 * Splits `items` into consecutive runs, in order, each within `bounds` (an item larger than
 * `maxBytes` alone is a run of its own).
 */
export function splitBatches<T extends EncodedItem>(items: readonly T[], bounds: BatchBounds): T[][] {
  const out: T[][] = [];
  let current: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const size = item.bytes.byteLength + ITEM_OVERHEAD;
    if (current.length > 0 && (current.length >= bounds.maxItems || bytes + size > bounds.maxBytes)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(item);
    bytes += size;
  }
  if (current.length > 0) out.push(current);
  return out;
}

/**
 * One session message holding `items`, encoded: a single item is the message it would be alone
 * (its `single` field); several are field `batch` (LeaseBatch, Reports) whose repeated field 1
 * holds each item, wrapped in its `item` field when that is not 0. Each item's bytes are copied,
 * not encoded again, into one buffer of the message's exact size (a BinaryWriter would grow its
 * buffer by doubling from 128 bytes, copying at each step, and copy it again to finish).
 */
export function encodeBatch(items: readonly EncodedItem[], batch: number): Uint8Array {
  const only = items.length === 1 ? items[0] : undefined;
  if (only !== undefined) {
    const n = only.bytes.byteLength;
    const out = new Uint8Array(tagSize(only.single) + varintSize(n) + n);
    out.set(only.bytes, writeVarint(out, writeTag(out, 0, only.single), n));
    return out;
  }
  let inner = 0;
  for (const item of items) {
    const entry = entrySize(item);
    inner += tagSize(1) + varintSize(entry) + entry;
  }
  const out = new Uint8Array(tagSize(batch) + varintSize(inner) + inner);
  let pos = writeVarint(out, writeTag(out, 0, batch), inner);
  for (const item of items) {
    const n = item.bytes.byteLength;
    pos = writeVarint(out, writeTag(out, pos, 1), entrySize(item));
    if (item.item !== 0) pos = writeVarint(out, writeTag(out, pos, item.item), n);
    out.set(item.bytes, pos);
    pos += n;
  }
  return out;
}

/** Bytes of an item's entry in the batch's repeated field: its message, or its `item` field holding it. */
function entrySize(item: EncodedItem): number {
  const n = item.bytes.byteLength;
  return item.item === 0 ? n : tagSize(item.item) + varintSize(n) + n;
}

/** Bytes of a length-delimited field's tag. */
function tagSize(field: number): number {
  return varintSize(((field << 3) | WireType.LengthDelimited) >>> 0);
}

/** Writes a length-delimited field's tag at `pos`; returns the position after it. */
function writeTag(out: Uint8Array, pos: number, field: number): number {
  return writeVarint(out, pos, ((field << 3) | WireType.LengthDelimited) >>> 0);
}
