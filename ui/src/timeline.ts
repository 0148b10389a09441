/** A step's attempts on one time axis (pure functions, no DOM): what the run page's timeline draws. */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Attempt, TaskRun } from "@nexusflow/gen";
import { taskStatusName } from "./format";

/** A duration in ms as "850 ms", "1.2 s" or "3 min 4 s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms - minutes * 60_000) / 1000)} s`;
}

/** One row of the timeline: an attempt of a step's task or of its compensation. */
export interface TimelineRow {
  key: string;
  label: string;
  leased: number | undefined;
  started: number | undefined;
  /** undefined while the attempt runs. */
  ended: number | undefined;
  status: string;
  executorId: string;
  error: string;
}

/** The rows of a step's timeline, and the span of time they cover (`to` is `now` while one runs). */
export function timelineRows(
  tasks: readonly { title: string; task: TaskRun }[],
  now: number,
): { rows: TimelineRow[]; from: number; to: number } | undefined {
  const rows: TimelineRow[] = [];
  for (const { title, task } of tasks) for (const a of task.attempts) rows.push(rowOf(title, task, a));
  const starts = rows.map((r) => r.leased ?? r.started).filter((t): t is number => t !== undefined);
  if (starts.length === 0) return undefined;
  const from = Math.min(...starts);
  const to = Math.max(from + 1, ...rows.map((r) => r.ended ?? now));
  return { rows, from, to };
}

function rowOf(title: string, task: TaskRun, a: Attempt): TimelineRow {
  return {
    key: `${task.id}/${a.number}`,
    label: `${title} #${a.number}`,
    leased: a.leaseTime === undefined ? undefined : timestampMs(a.leaseTime),
    started: a.startTime === undefined ? undefined : timestampMs(a.startTime),
    ended: a.endTime === undefined ? undefined : timestampMs(a.endTime),
    status: taskStatusName(a.status).toLowerCase().replace(/_/g, " "),
    executorId: a.executorId,
    error: a.error === undefined ? "" : `${a.error.type}: ${a.error.message}`,
  };
}
