/**
 * Run and task metrics derived from the lifecycle events the batch writer committed (see
 * BatchWriter.observe): every state change is committed with its event, so counting events once
 * they are durable counts each change exactly once, whatever the engine's internals, and nothing
 * is added to the engine's path. Events carry no task type: it is read from the task rows the same
 * statement wrote (a task's event and its row always commit together). Durations come from the
 * events' times:
 *
 * - run duration: `runCompleted` time minus the run's creation;
 *   with the run's `trace_id` as the exemplar when its trace is sampled (common/src/metrics/exemplars.ts),
 *   and likewise for handler durations;
 * - handler duration: an attempt's `taskSucceeded`/`taskFailed` time minus its `taskStarted` time
 *   (both as the scheduler received the executor's reports);
 * - schedule-to-start: `taskStarted` time minus when the attempt became ready: a retry's due time
 *   (`taskRetryScheduled`), or for a step's first attempt the latest end of the steps it depends
 *   on (the run's creation for a root step). Attempts after a released or expired lease and
 *   compensations have no ready time in the events and are not observed.
 *
 * Per event: a switch, map lookups and cached label children that write to their series directly
 * (cells, @nexusflow/common/metrics: prom-client's children hash the label values on every call);
 * the only allocations are the entries of the two maps of attempts in flight (started, retry
 * due), deleted when they end.
 */
import {
  Children1,
  Children2,
  Counter,
  type CounterChild,
  counterCells,
  type HistogramChild,
  histogramCells,
  DURATION_BUCKETS,
  Histogram,
  LATENCY_BUCKETS,
  type Registry,
  SIZE_BUCKETS,
  observeWithTrace,
  sampledTraceId,
} from "@nexusflow/common/metrics";
import { RunStatus, TaskKind, type LifecycleEvent } from "@nexusflow/gen";
import type { RunState, TaskState } from "../model/run-state.js";
import type { CommitObservation } from "../persistence/batch-writer.js";

/** Reads an active run (for the dependencies of a step), as the engine's `activeRun` does. */
export type ActiveRunReader = (runId: string) => Readonly<RunState> | undefined;

/**
 * The trace id of a run whose trace is recorded (sampled), for an exemplar; else undefined. Its
 * `traceparent` is read only for such a run (RunState.traceSampled decided it once).
 */
function recordedTraceId(run: Readonly<RunState> | undefined): string | undefined {
  return run?.traceSampled === true ? sampledTraceId(run.traceParent) : undefined;
}

/** Status label values by RunStatus number. */
const RUN_STATUS_NAMES: readonly string[] = Object.values(RunStatus)
  .filter((v): v is number => typeof v === "number")
  .reduce<string[]>((names, v) => {
    names[v] = RunStatus[v] as string;
    return names;
  }, []);

/** Above this many attempts in flight the maps are cleared: a bound against leaks, never hit in practice. */
const MAX_TRACKED = 1_000_000;

function millis(event: LifecycleEvent): number {
  const t = event.time;
  return t === undefined ? Date.now() : Number(t.seconds) * 1000 + t.nanos / 1e6;
}

/** Counters and histograms of runs, tasks and commits. */
export class LifecycleMetrics {
  readonly #runsStarted: Children1<CounterChild>;
  readonly #runsCompleted: Children2<CounterChild>;
  readonly #runFailures: Children2<CounterChild>;
  readonly #runDuration: Children2<HistogramChild>;
  readonly #runDurationHistogram: Histogram<"workflow" | "status">;
  readonly #attempts: Children1<CounterChild>;
  readonly #failures: Children2<CounterChild>;
  readonly #retries: Children1<CounterChild>;
  readonly #compensations: Children1<CounterChild>;
  readonly #compensationTasks: Children1<CounterChild>;
  readonly #scheduleToStart: Children1<HistogramChild>;
  readonly #handler: Children2<HistogramChild>;
  readonly #handlerHistogram: Histogram<"task_type" | "outcome">;
  readonly #batchRows: Histogram;
  readonly #commitSeconds: Histogram;
  /** Start time (ms) of running attempts by task run id. */
  readonly #started = new Map<string, number>();
  /** Due time (ms) of scheduled retries by task run id. */
  readonly #retryDue = new Map<string, number>();

  constructor(
    registry: Registry,
    private readonly activeRun: ActiveRunReader,
  ) {
    const registers = [registry];
    this.#runsStarted = new Children1(
      counterCells(
        new Counter({
          name: "nexusflow_runs_started_total",
          help: "Runs started, by workflow name.",
          labelNames: ["workflow"] as const,
          registers,
        }),
      ),
    );
    this.#runsCompleted = new Children2(
      counterCells(
        new Counter({
          name: "nexusflow_runs_completed_total",
          help: "Runs that reached a final state, by workflow name and final status.",
          labelNames: ["workflow", "status"] as const,
          registers,
        }),
      ),
    );
    this.#runFailures = new Children2(
      counterCells(
        new Counter({
          name: "nexusflow_run_failures_total",
          help: "Runs that ended other than SUCCEEDED with an error, by workflow name and the error's type (the failing step's, RUN_TIMEOUT, CANCELLED...).",
          labelNames: ["workflow", "error_type"] as const,
          registers,
        }),
      ),
    );
    this.#runDurationHistogram = new Histogram({
      name: "nexusflow_run_duration_seconds",
      help: "Time from a run's creation to its final state, by workflow name and final status.",
      labelNames: ["workflow", "status"] as const,
      buckets: [...DURATION_BUCKETS],
      enableExemplars: true,
      registers,
    });
    this.#runDuration = new Children2(histogramCells(this.#runDurationHistogram));
    this.#attempts = new Children1(
      counterCells(
        new Counter({
          name: "nexusflow_task_attempts_total",
          help: "Task attempts leased to an executor (steps and compensations), by task type.",
          labelNames: ["task_type"] as const,
          registers,
        }),
      ),
    );
    this.#failures = new Children2(
      counterCells(
        new Counter({
          name: "nexusflow_task_failures_total",
          help: "Failed task attempts, by task type and error type (TIMEOUT, EXIT_CODE, a handler's own type...).",
          labelNames: ["task_type", "error_type"] as const,
          registers,
        }),
      ),
    );
    this.#retries = new Children1(
      counterCells(
        new Counter({
          name: "nexusflow_task_retries_total",
          help: "Retries scheduled after a failed attempt, by task type.",
          labelNames: ["task_type"] as const,
          registers,
        }),
      ),
    );
    this.#compensations = new Children1(
      counterCells(
        new Counter({
          name: "nexusflow_run_compensations_total",
          help: "Runs that began rolling back (saga compensation), by workflow name.",
          labelNames: ["workflow"] as const,
          registers,
        }),
      ),
    );
    this.#compensationTasks = new Children1(
      counterCells(
        new Counter({
          name: "nexusflow_compensation_attempts_total",
          help: "Compensation task attempts leased, by task type.",
          labelNames: ["task_type"] as const,
          registers,
        }),
      ),
    );
    this.#scheduleToStart = new Children1(
      histogramCells(
        new Histogram({
          name: "nexusflow_task_schedule_to_start_seconds",
          help: "Time from a task attempt becoming ready (dependencies done, or retry due) to its start on an executor, by task type.",
          labelNames: ["task_type"] as const,
          buckets: [...LATENCY_BUCKETS],
          registers,
        }),
      ),
    );
    this.#handlerHistogram = new Histogram({
      name: "nexusflow_task_handler_duration_seconds",
      help: "Time from an attempt's start to its result, as the scheduler received them, by task type and outcome (succeeded, failed).",
      labelNames: ["task_type", "outcome"] as const,
      buckets: [...DURATION_BUCKETS],
      enableExemplars: true,
      registers,
    });
    this.#handler = new Children2(histogramCells(this.#handlerHistogram));
    this.#batchRows = new Histogram({
      name: "nexusflow_scheduler_commit_batch_rows",
      help: "Rows written per group commit (runs, tasks, attempts, outbox rows).",
      buckets: [...SIZE_BUCKETS],
      registers,
    });
    this.#commitSeconds = new Histogram({
      name: "nexusflow_scheduler_commit_duration_seconds",
      help: "Time of one group commit, from taking a connection to PostgreSQL's answer.",
      buckets: [...LATENCY_BUCKETS],
      registers,
    });
  }

  /** Records one committed statement of the batch writer. */
  observe(commit: CommitObservation): void {
    this.#batchRows.observe(commit.rows);
    this.#commitSeconds.observe(commit.seconds);
    for (const row of commit.events) this.#event(row.message, commit.tasks, commit.runs, row.run);
  }

  #event(
    e: LifecycleEvent,
    tasks: ReadonlyMap<string, TaskState>,
    runs: ReadonlyMap<string, RunState>,
    of: RunState | undefined,
  ): void {
    const ev = e.event;
    switch (ev.case) {
      case "runStarted":
        this.#runsStarted.get(e.workflowName).inc();
        return;
      case "runCompleted": {
        const status = RUN_STATUS_NAMES[ev.value.status] ?? "UNSPECIFIED";
        this.#runsCompleted.get(e.workflowName, status).inc();
        if (ev.value.status !== RunStatus.SUCCEEDED && ev.value.error !== undefined)
          this.#runFailures.get(e.workflowName, ev.value.error.type || "UNKNOWN").inc();
        const run = this.#run(of, runs, e.runId);
        if (run === undefined) return;
        const seconds = Math.max(0, millis(e) - run.createdAt.getTime()) / 1000;
        const traceId = recordedTraceId(run);
        if (traceId === undefined) this.#runDuration.get(e.workflowName, status).observe(seconds);
        else
          observeWithTrace(
            this.#runDurationHistogram,
            { workflow: e.workflowName, status },
            seconds,
            traceId,
          );
        return;
      }
      case "runCompensating":
        this.#compensations.get(e.workflowName).inc();
        return;
      case "taskLeased": {
        const type = typeOf(tasks, ev.value.taskRunId);
        this.#attempts.get(type).inc();
        if (ev.value.kind === TaskKind.COMPENSATION) this.#compensationTasks.get(type).inc();
        return;
      }
      case "taskStarted": {
        const now = millis(e);
        const id = ev.value.taskRunId;
        this.#track(this.#started, id, now);
        const ready = this.#readyAt(this.#run(of, runs, e.runId), id, ev.value);
        if (ready !== undefined)
          this.#scheduleToStart.get(typeOf(tasks, id)).observe(Math.max(0, now - ready) / 1000);
        return;
      }
      case "taskSucceeded":
        this.#ended(e, tasks, this.#run(of, runs, e.runId), ev.value.taskRunId, "succeeded");
        return;
      case "taskFailed": {
        const type = typeOf(tasks, ev.value.taskRunId);
        this.#failures.get(type, ev.value.error?.type || "UNKNOWN").inc();
        this.#ended(e, tasks, this.#run(of, runs, e.runId), ev.value.taskRunId, "failed");
        return;
      }
      case "taskRetryScheduled": {
        this.#retries.get(typeOf(tasks, ev.value.taskRunId)).inc();
        const due = ev.value.dueTime;
        if (due !== undefined)
          this.#track(this.#retryDue, ev.value.taskRunId, Number(due.seconds) * 1000 + due.nanos / 1e6);
        return;
      }
      case "taskCancelled":
        this.#started.delete(ev.value.taskRunId);
        this.#retryDue.delete(ev.value.taskRunId);
        return;
      default:
        return;
    }
  }

  #track(map: Map<string, number>, id: string, ms: number): void {
    if (map.size >= MAX_TRACKED) map.clear();
    map.set(id, ms);
  }

  /**
   * The run an event is about: the one its row was made from, else as the commit wrote it, else
   * the engine's. A commit is observed after its waiters went on (BatchWriter's observers), when
   * the run may have left the engine's memory (ended, parked, its partition released).
   */
  #run(
    of: RunState | undefined,
    runs: ReadonlyMap<string, RunState>,
    runId: string,
  ): Readonly<RunState> | undefined {
    return of ?? runs.get(runId) ?? this.activeRun(runId);
  }

  #ended(
    e: LifecycleEvent,
    tasks: ReadonlyMap<string, TaskState>,
    run: Readonly<RunState> | undefined,
    id: string,
    outcome: string,
  ): void {
    const started = this.#started.get(id);
    if (started === undefined) return;
    this.#started.delete(id);
    const type = typeOf(tasks, id);
    const seconds = Math.max(0, millis(e) - started) / 1000;
    // The attempt's spans are in its run's trace.
    const traceId = recordedTraceId(run);
    if (traceId === undefined) this.#handler.get(type, outcome).observe(seconds);
    else observeWithTrace(this.#handlerHistogram, { task_type: type, outcome }, seconds, traceId);
  }

  /** When the attempt became ready, if the events tell (see the module comment). */
  #readyAt(
    run: Readonly<RunState> | undefined,
    id: string,
    { stepId, attempt, kind }: { stepId: string; attempt: number; kind: TaskKind },
  ): number | undefined {
    const due = this.#retryDue.size === 0 ? undefined : this.#retryDue.get(id);
    if (due !== undefined) {
      this.#retryDue.delete(id);
      return due;
    }
    if (attempt !== 1 || kind !== TaskKind.STEP) return undefined;
    if (run === undefined) return undefined;
    let ready = run.createdAt.getTime();
    const deps = run.workflow.dependencies.get(stepId);
    if (deps !== undefined) {
      for (const dep of deps) {
        const ended = run.tasks.get(dep)?.endedAt;
        if (ended !== null && ended !== undefined && ended.getTime() > ready) ready = ended.getTime();
      }
    }
    return ready;
  }
}

/** The type of a task written by the same statement as its event ("unknown" should it not be). */
function typeOf(tasks: ReadonlyMap<string, TaskState>, id: string): string {
  return tasks.get(id)?.type ?? "unknown";
}
