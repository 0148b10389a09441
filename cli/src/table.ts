/** Plain-text tables and values for the operator commands' default (human) output. */
import { type Timestamp, timestampMs } from "@bufbuild/protobuf/wkt";
import { formatDuration } from "./progress.js";
import { visibleLength } from "./style.js";

/** Aligns `rows` under `headers`, two spaces between columns; trailing spaces trimmed. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) =>
    Math.max(visibleLength(h), ...rows.map((r) => visibleLength(r[i] ?? ""))),
  );
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => c + " ".repeat(Math.max(0, (widths[i] ?? 0) - visibleLength(c))))
      .join("  ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n");
}

/** "2025-01-31 12:34:56" (UTC), or "-" when unset. */
export function formatTime(ts: Timestamp | undefined): string {
  if (ts === undefined) return "-";
  return new Date(timestampMs(ts))
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, "");
}

/** Duration between two timestamps ("1.2s"), "-" when either is unset. */
export function formatSpan(from: Timestamp | undefined, to: Timestamp | undefined): string {
  if (from === undefined || to === undefined) return "-";
  return formatDuration(Math.max(0, timestampMs(to) - timestampMs(from)));
}

/** Cuts `text` to `max` characters with an ellipsis. */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(0, max - 1))}…`;
}
