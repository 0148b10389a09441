/**
 * Run progress for the terminal: from successive snapshots of a run (WatchRun messages), one line
 * per task state change with step, status, executor and duration; then a summary of the run.
 */
import { type Timestamp, ValueSchema, timestampMs } from "@bufbuild/protobuf/wkt";
import { toJson } from "@bufbuild/protobuf";
import { type Run, RunStatus, type TaskRun, TaskKind, TaskStatus } from "@nexusflow/gen";
import { isTerminalRunStatus } from "@nexusflow/client";
import type { Style } from "./style.js";

/** One observed change of a task's state. */
export interface TaskChange {
  stepId: string;
  kind: TaskKind;
  status: TaskStatus;
  /** Executor of the latest attempt, if any. */
  executorId: string | undefined;
  /** Number of the latest attempt (0 before the first). */
  attempt: number;
  /** Duration of the latest attempt once it ended, in milliseconds. */
  durationMs: number | undefined;
  /** Extra words: the error of a failure, the skip reason. */
  detail: string | undefined;
  /** Why a queued task waits (`no executor advertises type "x"`), from the scheduler. */
  pendingReason: string | undefined;
}

/** Whether a run has reached a terminal state. */
export function isTerminal(run: Run): boolean {
  return isTerminalRunStatus(run.status);
}

function ms(ts: Timestamp | undefined): number | undefined {
  return ts === undefined ? undefined : timestampMs(ts);
}

function changeOf(task: TaskRun): TaskChange {
  const last = task.attempts[task.attempts.length - 1];
  const start = ms(last?.startTime) ?? ms(last?.leaseTime);
  const end = ms(last?.endTime);
  let detail: string | undefined;
  if (task.status === TaskStatus.SKIPPED && task.skipReason !== "") detail = `(${task.skipReason})`;
  const error = task.error ?? last?.error;
  if ((task.status === TaskStatus.FAILED || task.status === TaskStatus.RETRY_WAIT) && error !== undefined) {
    detail = `${error.type}: ${error.message}`;
  }
  return {
    stepId: task.stepId,
    kind: task.kind,
    status: task.status,
    executorId: last?.executorId || undefined,
    attempt: last?.number ?? 0,
    durationMs: start !== undefined && end !== undefined ? Math.max(0, end - start) : undefined,
    detail,
    pendingReason: task.pendingReason === "" ? undefined : task.pendingReason,
  };
}

/** Remembers the last state of each task and reports what changed between snapshots. */
export class RunProgress {
  readonly #last = new Map<string, { status: TaskStatus; pendingReason: string }>();

  /**
   * The changes in `run` since the previous call: each new state of a task (tasks first seen as
   * PENDING are not changes), and a waiting task's new reason to wait (not its clearing: the task's
   * next state says that; nor a pending step's, which changes as its dependencies finish).
   */
  update(run: Run): TaskChange[] {
    const changes: TaskChange[] = [];
    for (const task of run.tasks) {
      const previous = this.#last.get(task.id);
      this.#last.set(task.id, { status: task.status, pendingReason: task.pendingReason });
      if (previous?.status === task.status) {
        // A pending step's reason changes as each dependency finishes: those lines say that already.
        if (
          task.status === TaskStatus.PENDING ||
          task.pendingReason === "" ||
          task.pendingReason === previous.pendingReason
        )
          continue;
      } else if (previous === undefined && task.status === TaskStatus.PENDING) continue;
      changes.push(changeOf(task));
    }
    return changes;
  }
}

/** "SUCCEEDED" for TaskStatus.SUCCEEDED. */
export function taskStatusName(status: TaskStatus): string {
  return TaskStatus[status] ?? String(status);
}

/** "SUCCEEDED" for RunStatus.SUCCEEDED. */
export function runStatusName(status: RunStatus): string {
  return RunStatus[status] ?? String(status);
}

/** "850ms", "1.2s", "2m03s". */
export function formatDuration(durationMs: number): string {
  if (durationMs < 1000) return `${Math.round(durationMs)}ms`;
  if (durationMs < 60_000) return `${(durationMs / 1000).toFixed(1)}s`;
  const minutes = Math.floor(durationMs / 60_000);
  return `${minutes}m${String(Math.round((durationMs % 60_000) / 1000)).padStart(2, "0")}s`;
}

function colourTaskStatus(status: TaskStatus, text: string, style: Style): string {
  switch (status) {
    case TaskStatus.SUCCEEDED:
      return style.green(text);
    case TaskStatus.FAILED:
    case TaskStatus.CANCELLED:
      return style.red(text);
    case TaskStatus.RETRY_WAIT:
      return style.yellow(text);
    case TaskStatus.SKIPPED:
      return style.gray(text);
    default:
      return style.blue(text);
  }
}

/**
 * One aligned line for a task change, e.g. `  charge        SUCCEEDED   executor-2  #1  12ms`, or
 * `  charge        QUEUED                    waiting: no executor advertises type "charge-card"`.
 */
export function formatTaskChange(change: TaskChange, style: Style, stepWidth = 18): string {
  const step = change.kind === TaskKind.COMPENSATION ? `${change.stepId} (undo)` : change.stepId;
  const parts = [
    `  ${style.bold(step.padEnd(stepWidth))}`,
    colourTaskStatus(change.status, taskStatusName(change.status).padEnd(11), style),
    (change.executorId ?? "").padEnd(11),
    change.attempt > 0 ? style.gray(`#${change.attempt}`) : "  ",
  ];
  if (
    change.durationMs !== undefined &&
    change.status !== TaskStatus.RUNNING &&
    change.status !== TaskStatus.LEASED
  ) {
    parts.push(formatDuration(change.durationMs));
  }
  if (change.detail !== undefined) parts.push(style.gray(change.detail));
  if (change.pendingReason !== undefined) parts.push(style.yellow(`waiting: ${change.pendingReason}`));
  return parts.join(" ").trimEnd();
}

/** The run's result: status and duration, then its output (or error) as indented JSON. */
export function formatRunSummary(run: Run, style: Style): string {
  const created = ms(run.createTime);
  const ended = ms(run.endTime);
  const took = created !== undefined && ended !== undefined ? ` in ${formatDuration(ended - created)}` : "";
  const status = runStatusName(run.status);
  const coloured = run.status === RunStatus.SUCCEEDED ? style.green(status) : style.red(status);
  const lines = [`run ${run.id} ${style.bold(coloured)}${took}`];
  if (run.output !== undefined) {
    lines.push("output:", indent(JSON.stringify(toJson(ValueSchema, run.output), null, 2)));
  }
  if (run.error !== undefined) {
    lines.push(style.red(`error: ${run.error.type}: ${run.error.message}`));
  }
  return lines.join("\n");
}

function indent(text: string): string {
  return text
    .split("\n")
    .map((l) => `  ${l}`)
    .join("\n");
}
