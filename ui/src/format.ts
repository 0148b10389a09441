/** How values of the API are shown. */
import { isMessage } from "@bufbuild/protobuf";
import { type Timestamp, ValueSchema, timestampDate } from "@bufbuild/protobuf/wkt";
import { RunStatus, TaskStatus } from "@nexusflow/gen";

/** A run status's name, e.g. "COMPENSATED". */
export function runStatusName(status: RunStatus): string {
  return RunStatus[status] ?? `STATUS_${status}`;
}

/** A task status's name, e.g. "RETRY_WAIT". */
export function taskStatusName(status: TaskStatus): string {
  return TaskStatus[status] ?? `STATUS_${status}`;
}

/** Run statuses a run does not leave. */
export const TERMINAL_RUN_STATUSES: ReadonlySet<RunStatus> = new Set([
  RunStatus.SUCCEEDED,
  RunStatus.FAILED,
  RunStatus.CANCELLED,
  RunStatus.TIMED_OUT,
  RunStatus.COMPENSATED,
  RunStatus.COMPENSATION_FAILED,
]);

/** Statuses to filter runs by, in lifecycle order. */
export const RUN_STATUSES: readonly RunStatus[] = [
  RunStatus.PENDING,
  RunStatus.RUNNING,
  RunStatus.SUCCEEDED,
  RunStatus.FAILED,
  RunStatus.CANCELLED,
  RunStatus.TIMED_OUT,
  RunStatus.COMPENSATING,
  RunStatus.COMPENSATED,
  RunStatus.COMPENSATION_FAILED,
];

/** A timestamp as local date and time, or "—". */
export function formatTime(ts: Timestamp | undefined): string {
  if (ts === undefined) return "—";
  return timestampDate(ts).toLocaleString(undefined, { hour12: false });
}

/**
 * A timestamp as date and time in the IANA zone `zone` (e.g. a schedule's), or "—"; local time when
 * this browser does not know the zone.
 */
export function formatTimeIn(ts: Timestamp | undefined, zone: string): string {
  if (ts === undefined) return "—";
  try {
    return timestampDate(ts).toLocaleString(undefined, { hour12: false, timeZone: zone || "UTC" });
  } catch {
    return formatTime(ts);
  }
}

/** Characters of JSON a block shows at most: a value of megabytes is shown cut, not whole. */
export const JSON_PREVIEW_CHARS = 100_000;

/** What {@link previewJson} made: the text, and whether it was cut at its budget. */
export interface JsonPreview {
  text: string;
  truncated: boolean;
}

/** Thrown inside {@link previewJson} when its budget is spent. */
class BudgetSpent extends Error {
  override name = "BudgetSpent";
}

/**
 * `value` as JSON text, like `JSON.stringify(value, null, indent)`, but written only up to
 * `maxChars` characters (then cut, `truncated` set): the work is bounded by `maxChars`, not by the
 * value's size, so a run's 10 MB input costs the page no more than a small one. `value` is plain
 * JSON, a google.protobuf.Value, or plain objects and arrays holding Values (a task error's
 * details). A string is cut between characters, never inside a surrogate pair.
 */
export function previewJson(
  value: unknown,
  maxChars: number = JSON_PREVIEW_CHARS,
  indent: string = "  ",
): JsonPreview {
  const out: string[] = [];
  let length = 0;
  const emit = (text: string): void => {
    const room = maxChars - length;
    if (text.length > room) {
      out.push(cutString(text, room));
      length = maxChars;
      throw new BudgetSpent();
    }
    out.push(text);
    length += text.length;
  };
  const nl = (depth: number): string => (indent === "" ? "" : `\n${indent.repeat(depth)}`);
  const sep = indent === "" ? ":" : ": ";
  // Members one at a time (a list of a million numbers is not copied to show its first ones).
  const entries = (
    open: string,
    close: string,
    members: Iterable<[string | undefined, unknown]>,
    depth: number,
  ): void => {
    let first = true;
    for (const [key, v] of members) {
      // Like JSON.stringify: an undefined member of an object is left out (of an array: null).
      if (v === undefined && key !== undefined) continue;
      emit(`${first ? open : ","}${nl(depth + 1)}`);
      first = false;
      if (key !== undefined) {
        write(key, depth + 1);
        emit(sep);
      }
      write(v === undefined ? null : v, depth + 1);
    }
    emit(first ? `${open}${close}` : `${nl(depth)}${close}`);
  };
  const items = function* (list: readonly unknown[]): Generator<[undefined, unknown]> {
    for (const x of list) yield [undefined, x];
  };
  const fields = function* (object: object): Generator<[string, unknown]> {
    for (const key in object)
      if (Object.hasOwn(object, key)) yield [key, (object as Record<string, unknown>)[key]];
  };
  const write = (v: unknown, depth: number): void => {
    if (isMessage(v, ValueSchema)) {
      const kind = v.kind;
      switch (kind.case) {
        case "structValue":
          return entries("{", "}", fields(kind.value.fields), depth);
        case "listValue":
          return entries("[", "]", items(kind.value.values), depth);
        case "stringValue":
        case "numberValue":
        case "boolValue":
          return write(kind.value, depth);
        default:
          return emit("null");
      }
    }
    if (typeof v === "string") {
      // Only as much of a long string as fits is escaped (escapes only lengthen it).
      const room = maxChars - length;
      const cut = v.length > room ? cutString(v, room) : v;
      emit(JSON.stringify(cut));
      if (cut.length < v.length) throw new BudgetSpent();
      return;
    }
    if (typeof v === "number") return emit(Number.isFinite(v) ? String(v) : "null");
    if (typeof v === "boolean") return emit(String(v));
    if (typeof v === "bigint") return emit(v.toString());
    if (v === null || typeof v !== "object") return emit("null");
    if (Array.isArray(v)) return entries("[", "]", items(v), depth);
    return entries("{", "}", fields(v), depth);
  };
  try {
    write(value, 0);
  } catch (e) {
    if (!(e instanceof BudgetSpent)) throw e;
    return { text: out.join(""), truncated: true };
  }
  return { text: out.join(""), truncated: false };
}

/** The first `max` UTF-16 units of `text`, one fewer when that would split a surrogate pair. */
export function cutString(text: string, max: number): string {
  if (text.length <= max) return text;
  if (max <= 0) return "";
  const last = text.charCodeAt(max - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}

/** `k=v, k2=v2` as a label map, or what is wrong with it. */
export function parseLabels(text: string): { labels: Record<string, string> } | { problem: string } {
  const labels: Record<string, string> = {};
  for (const part of text.split(",")) {
    if (part.trim() === "") continue;
    const eq = part.indexOf("=");
    const key = eq < 0 ? "" : part.slice(0, eq).trim();
    if (key === "") return { problem: `Labels: "${part.trim()}" is not key=value.` };
    labels[key] = part.slice(eq + 1).trim();
  }
  return { labels };
}
