/** How values of the API are shown. */
import { type JsonValue, toJson } from "@bufbuild/protobuf";
import { type Timestamp, ValueSchema, timestampDate } from "@bufbuild/protobuf/wkt";
import type { Value } from "@bufbuild/protobuf/wkt";
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

/** A google.protobuf.Value as plain JSON. */
export function valueJson(value: Value | undefined): JsonValue | undefined {
  return value === undefined ? undefined : toJson(ValueSchema, value);
}

/** JSON, indented, for a <pre>. */
export function prettyJson(value: unknown): string {
  return JSON.stringify(value, null, 2) ?? "undefined";
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
