/**
 * The spans of runs and attempts (tracing on), made by the engine shell from the effects the core
 * reports; the core knows nothing of them. One trace per run: the run span is a child of the
 * StartRun call's span and its `traceparent` is stored with the run (RunState.traceParent); each
 * attempt is a span, child of that stored context, opened when the lease is granted and ended
 * when the attempt ends (completed, failed, released, expired, cancelled), so after a restart the
 * attempts of a recovered run still join its trace. An attempt's context goes to the executor in
 * its Lease, and each lifecycle event carries the context of the span that caused it.
 */
import { type Span, SpanKind, SpanStatusCode, TraceFlags, context, trace } from "@opentelemetry/api";
import { contextFromTraceparent, traceparentOf, tracer } from "@nexusflow/common/telemetry";
import type { Core, Effects } from "../core/index.js";
import { type AttemptState, type RunState, type TaskState, tasksOfRun } from "../model/run-state.js";
import type { EngineStore } from "../persistence/engine-store.js";
import { lifecycleEvent } from "../persistence/outbox.js";

const TRACER = "nexusflow-scheduler";

/** Span attributes of a run. */
function runAttributes(run: Pick<RunState, "id" | "workflow">): Record<string, string | number> {
  return {
    "nexusflow.run_id": run.id,
    "nexusflow.workflow": run.workflow.name,
    "nexusflow.workflow_version": run.workflow.version,
  };
}

/**
 * Starts the span of a new run, a child of the active span (the StartRun call's). When that span
 * records nothing (its trace sampled out), the run's span would record nothing either (the sampler
 * follows the parent): the call's own span stands for it, and the run's `traceparent` is the
 * call's, at the cost of no span, id or sampling decision per run.
 */
export function startRunSpan(workflowName: string): Span {
  const active = context.active();
  const parent = trace.getSpan(active);
  if (
    parent !== undefined &&
    !parent.isRecording() &&
    (parent.spanContext().traceFlags & TraceFlags.SAMPLED) === 0
  )
    return parent;
  return tracer(TRACER).startSpan(`run ${workflowName}`, { kind: SpanKind.INTERNAL }, active);
}

/** Ends the span of a run once it is started (committed), or with the error that stopped it. */
export function endRunSpan(span: Span, run: RunState | undefined, error?: unknown): void {
  if (run !== undefined) span.setAttributes(runAttributes(run));
  if (error !== undefined) {
    const message = error instanceof Error ? error.message : "StartRun failed";
    if (error instanceof Error) span.recordException(error);
    span.setStatus({ code: SpanStatusCode.ERROR, message });
  }
  span.end();
}

/**
 * Starts a run inside its run span: `start` is given the span's `traceparent` (stored with the
 * run), and the span ends once the run is started, or with the error that stopped it.
 */
export async function inRunSpan<T extends { runId: string }>(
  workflowName: string,
  start: (traceParent: string | null) => Promise<T>,
  runOf: (runId: string) => RunState | undefined,
): Promise<T> {
  const span = startRunSpan(workflowName);
  try {
    const started = await start(traceparentOf(span) ?? null);
    endRunSpan(span, runOf(started.runId));
    return started;
  } catch (e) {
    endRunSpan(span, undefined, e);
    throw e;
  }
}

/** The spans of the attempts in flight, and the context of each task's latest attempt. */
export class AttemptSpans {
  private readonly open = new Map<string, { span: Span; started: boolean }>();
  /**
   * `traceparent` of each task's latest attempt span, by task run id (events name their task);
   * tasks of runs whose trace is not recorded have none (their leases and events carry the run's).
   */
  private readonly latest = new Map<string, string>();
  /** The run's own context when its trace is not recorded (RunState.traceContext), else null. */
  private sampledOut(run: RunState | undefined): Readonly<Record<string, string>> | null {
    return run === undefined || run.traceSampled ? null : run.traceContext;
  }

  /** Whether the attempts of `run` get spans (its trace is not sampled out). */
  records(run: RunState | undefined): boolean {
    return this.sampledOut(run) === null;
  }

  /** Follows an attempt written by the core: opens its span, marks its start, ends it. */
  written(run: RunState | undefined, task: TaskState | undefined, attempt: AttemptState): void {
    // The run's trace is not recorded (sampled out at StartRun): its attempt would be a span
    // that records nothing. The attempt's leases and events carry the run's own context, so
    // the executor records nothing for it either.
    if (this.sampledOut(run) !== null) return;
    const key = `${attempt.taskRunId}/${attempt.number}`;
    let entry = this.open.get(key);
    if (entry === undefined) {
      const parent = run?.traceParent ?? undefined;
      const span = tracer(TRACER).startSpan(
        `attempt ${task?.stepId ?? attempt.taskRunId}`,
        {
          kind: SpanKind.PRODUCER,
          startTime: attempt.leasedAt,
          attributes: {
            "nexusflow.run_id": attempt.runId,
            "nexusflow.task_run_id": attempt.taskRunId,
            "nexusflow.attempt": attempt.number,
            "nexusflow.executor_id": attempt.executorId,
            ...(run === undefined ? {} : runAttributes(run)),
            ...(task === undefined
              ? {}
              : {
                  "nexusflow.step_id": task.stepId,
                  "nexusflow.task_type": task.type,
                  "nexusflow.task_kind": task.kind,
                }),
          },
        },
        contextFromTraceparent(parent),
      );
      entry = { span, started: false };
      this.open.set(key, entry);
      const traceparent = traceparentOf(span);
      if (traceparent !== undefined) this.latest.set(attempt.taskRunId, traceparent);
    }
    const { span } = entry;
    if (attempt.startedAt !== null && !entry.started) {
      entry.started = true;
      span.addEvent("started", attempt.startedAt);
    }
    if (attempt.endedAt === null) return;
    span.setAttribute("nexusflow.attempt_status", attempt.status);
    if (attempt.error !== null) {
      span.setAttribute("error.type", attempt.error.type);
      span.setStatus({ code: SpanStatusCode.ERROR, message: attempt.error.message });
    }
    span.end(attempt.endedAt);
    this.open.delete(key);
  }

  /** The `traceparent` of the task's latest attempt, if it had one here. */
  traceparent(taskRunId: string): string | undefined {
    return this.latest.get(taskRunId);
  }

  /**
   * The trace context a lease of the task carries to its executor: its attempt span's, or the
   * run's own when the run's trace is not recorded.
   */
  traceContext(task: TaskState, run: RunState | undefined): Readonly<Record<string, string>> | undefined {
    const unsampled = this.sampledOut(run);
    if (unsampled !== null) return unsampled;
    const traceparent = this.latest.get(task.id);
    return traceparent === undefined ? undefined : { traceparent };
  }

  /** The W3C trace headers of an event of `run` (about `taskRunId` if it names one). */
  eventContext(run: RunState, taskRunId: string | undefined): Readonly<Record<string, string>> | null {
    const unsampled = this.sampledOut(run);
    if (unsampled !== null) return unsampled;
    const traceparent = (taskRunId === undefined ? undefined : this.latest.get(taskRunId)) ?? run.traceParent;
    return traceparent === null ? null : { traceparent };
  }

  /** Forgets the tasks of an ended run. */
  runEnded(run: RunState): void {
    if (this.sampledOut(run) !== null) return;
    for (const task of tasksOfRun(run)) this.latest.delete(task.id);
  }

  /**
   * The run left this scheduler's memory while not ended (parked, or its partition moved to
   * another replica): the spans of its attempts still open here end now, saying so (the replica
   * that loads the run again opens its own for an attempt it adopts), and its tasks are forgotten.
   */
  runLeft(run: RunState): void {
    if (this.sampledOut(run) !== null) return;
    const at = new Date();
    for (const task of tasksOfRun(run)) {
      this.latest.delete(task.id);
      // Only a task's latest attempt can be open.
      const key = `${task.id}/${task.attempt}`;
      const entry = this.open.get(key);
      if (entry === undefined) continue;
      entry.span.setAttribute("nexusflow.attempt_status", "LEFT");
      entry.span.addEvent("the run left this scheduler (parked, or its partition moved)", at);
      entry.span.end(at);
      this.open.delete(key);
    }
  }
}

/**
 * The effects that write attempts and events, traced (tracing on only, so that with it off the
 * effects take no detour): an attempt written opens, marks or ends its span (the run and task are
 * read from the model), and an event is stored with the trace context of the span that caused it.
 */
export function tracedWrites(
  spans: AttemptSpans,
  store: Pick<EngineStore, "markAttempt" | "addEvent">,
  model: () => Pick<Core, "runs" | "tasks">,
): Pick<Effects, "writeAttempt" | "event"> {
  return {
    writeAttempt: (attempt) => {
      const { runs, tasks } = model();
      const run = runs.get(attempt.runId);
      // A sampled-out run's attempts have no span: its task is not even looked up.
      if (spans.records(run)) spans.written(run, tasks.get(attempt.taskRunId), attempt);
      store.markAttempt(attempt);
    },
    event: (run, event) => {
      const row = lifecycleEvent(run, event);
      const about = (event.value as { taskRunId?: unknown }).taskRunId;
      row.traceContext = spans.eventContext(run, typeof about === "string" ? about : undefined);
      store.addEvent(row);
    },
  };
}
