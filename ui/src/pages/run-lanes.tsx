/**
 * Two views of a run beside its DAG: the compensations as their own lane, in the order they were
 * started (a saga rolls back in reverse), and a step's attempts on one time axis (leased, started,
 * ended, on which executor, with what error).
 */
import { type Timestamp, timestampMs } from "@bufbuild/protobuf/wkt";
import type { TaskRun } from "@nexusflow/gen";
import { type StepTasks, stateLabel, stepState } from "../dag";
import { formatTime } from "../format";
import { formatDuration, timelineRows } from "../timeline";

/** A step of the definition that declares a compensation (its type), for the empty lane. */
export interface Compensable {
  id: string;
  type: string;
}

/** Props of {@link CompensationLane}. */
export interface CompensationLaneProps {
  byStep: ReadonlyMap<string, StepTasks>;
  /** Steps the definition gives a compensation; undefined when the definition is not known. */
  compensable: readonly Compensable[] | undefined;
  selected: string | undefined;
  onSelect: (stepId: string) => void;
}

/** The compensations of a run, oldest first, each selecting its step. */
export function CompensationLane({ byStep, compensable, selected, onSelect }: CompensationLaneProps) {
  const started: { stepId: string; task: TaskRun; tasks: StepTasks }[] = [];
  for (const [stepId, tasks] of byStep)
    if (tasks.compensation !== undefined) started.push({ stepId, task: tasks.compensation, tasks });
  started.sort((a, b) => timeOf(a.task.createTime) - timeOf(b.task.createTime));
  return (
    <section class="lane-section" aria-labelledby="compensations-title">
      <h2 id="compensations-title">Compensations</h2>
      {started.length === 0 ? (
        <p class="muted" data-testid="compensations-empty">
          {compensable === undefined
            ? "No compensation has run."
            : compensable.length === 0
              ? "No step of this workflow has a compensation."
              : `No compensation has run. Steps that would be compensated if the run rolls back: ${compensable
                  .map((c) => `${c.id} (${c.type})`)
                  .join(", ")}.`}
        </p>
      ) : (
        <ol class="lane" aria-label="Compensations, in the order they started">
          {started.map(({ stepId, task, tasks }) => {
            const state = stepState(tasks);
            return (
              <li key={task.id}>
                <button
                  type="button"
                  class={`lane-item state-${state}${selected === stepId ? " selected" : ""}`}
                  data-compensation={stepId}
                  data-state={state}
                  aria-pressed={selected === stepId}
                  onClick={() => onSelect(stepId)}
                >
                  <span class="lane-item-id">{stepId}</span>{" "}
                  <span class="lane-item-state">
                    {task.type}: {stateLabel(state)}
                  </span>{" "}
                  <span class="lane-item-time">
                    {formatTime(task.createTime)}
                    {task.endTime !== undefined && ` → ${formatTime(task.endTime)}`}
                  </span>
                </button>
              </li>
            );
          })}
        </ol>
      )}
    </section>
  );
}

/** Milliseconds of a timestamp, or +Infinity when absent (sorts last). */
function timeOf(ts: Timestamp | undefined): number {
  return ts === undefined ? Number.POSITIVE_INFINITY : timestampMs(ts);
}

/**
 * A step's attempts (its task's and its compensation's) as bars on one time axis: the lease until
 * the start in a light shade, the run until the end in the attempt's colour. Each row says in words
 * what the bar shows; the bars themselves are hidden from screen readers.
 */
export function AttemptTimeline({ tasks }: { tasks: readonly { title: string; task: TaskRun }[] }) {
  const now = Date.now();
  const timeline = timelineRows(tasks, now);
  if (timeline === undefined) return null;
  const { rows, from, to } = timeline;
  const span = to - from;
  const pct = (t: number): string => `${(((t - from) / span) * 100).toFixed(3)}%`;
  const width = (a: number, b: number): string => `${Math.max(0.4, ((b - a) / span) * 100).toFixed(3)}%`;
  return (
    <figure class="timeline" data-testid="attempt-timeline">
      <figcaption>
        Attempt timeline{" "}
        <span class="muted">
          ({formatDuration(span)} from {new Date(from).toLocaleTimeString(undefined, { hour12: false })})
        </span>
      </figcaption>
      <ol>
        {rows.map((r) => {
          const start = r.started ?? r.leased ?? from;
          const end = r.ended ?? now;
          const statusClass = `attempt-${r.status.replace(/ /g, "-")}`;
          return (
            <li key={r.key} class="timeline-row" data-attempt={r.label} data-status={r.status}>
              <span class="timeline-label">
                {r.label}: {r.status}
                {r.executorId !== "" && ` on ${r.executorId}`}
                {r.started !== undefined &&
                  `, ran ${formatDuration(end - r.started)}${r.ended === undefined ? " so far" : ""}`}
                {r.leased !== undefined &&
                  r.started !== undefined &&
                  `, ${formatDuration(r.started - r.leased)} from lease to start`}
                {r.error !== "" && `; ${r.error}`}
              </span>
              <span class="timeline-track" aria-hidden="true">
                {r.leased !== undefined && (
                  <span
                    class="timeline-bar leased"
                    style={{ left: pct(r.leased), width: width(r.leased, r.started ?? end) }}
                  />
                )}
                {r.started !== undefined && (
                  <span
                    class={`timeline-bar ${statusClass}${r.ended === undefined ? " open" : ""}`}
                    style={{ left: pct(start), width: width(start, end) }}
                  />
                )}
              </span>
            </li>
          );
        })}
      </ol>
    </figure>
  );
}
