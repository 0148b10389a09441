/**
 * The scheduler engine: owns active runs in memory (a cache of PostgreSQL), turns DAG evaluation
 * into task state, hands leases to executor sessions, judges their reports by fencing token, and
 * persists every change through the group-commit writer before anyone outside acts on it.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ApiError, Code, UnavailableError, errorToProto, jsonToValue, type Logger } from "@nexusflow/common";
import { isArtifactError, toArtifactRef } from "@nexusflow/common/artifacts";
import { RunStatus, SessionResponseSchema, TaskKind, type LeaseKey } from "@nexusflow/gen";
import {
  compensationOrder,
  evaluateRun,
  isRetryableError,
  renderCompensationInput,
  retryDelayMs,
  validateRunInput,
  type StepState,
} from "../dag/index.js";
import { failRefusedRun } from "../persistence/refused-run.js";
import { BatchWriter } from "../persistence/batch-writer.js";
import type { Database } from "../persistence/database.js";
import { IdempotencyKeyStore } from "../persistence/idempotency-keys.js";
import { DefinitionStore } from "./definitions.js";
import { Dispatcher, type SessionHandle } from "./dispatcher.js";
import { lifecycleEvent, type EventInit } from "./events.js";
import { KeyedStarts } from "./keyed-starts.js";
import { UnservedTypes } from "./pending.js";
import {
  ACTIVE_LEASE,
  STORAGE_REFUSED,
  TERMINAL_RUN_STATUSES,
  TERMINAL_TASK_STATUSES,
  newRunState,
  newTaskState,
  type AttemptState,
  type ErrorInfo,
  type RunState,
  type TaskState,
  type TaskStatusName,
} from "./model.js";

/** Options of the {@link Engine}. */
export interface EngineOptions {
  db: Database;
  log: Logger;
  /** How often executors should heartbeat. @default 2000 */
  heartbeatIntervalMs?: number;
  /** Silence after which a session is dead, and grace before its leases expire. @default 10000 */
  sessionTimeoutMs?: number;
  /** Longest wait for a commit before an API call answers UNAVAILABLE. @default 5000 */
  commitTimeoutMs?: number;
  /**
   * Reads an offloaded output (claim check, `Completed.output_ref`) back from the artifact store,
   * e.g. `(ref) => resolveOutputRef(store, ref)`. Dependents of such a step wait until it is read.
   * @default none: offloaded outputs read as null
   */
  resolveOutput?: ((ref: unknown) => Promise<unknown>) | undefined;
  /**
   * How long a StartRun idempotency key names its run; after that the same key starts a new run.
   * @default 86400000 (24 hours)
   */
  idempotencyKeyRetentionMs?: number;
}

/** Engine lifecycle. */
export type EngineState = "CREATED" | "RECOVERING" | "RUNNING" | "STOPPING" | "STOPPED";

/** Why a report was not accepted; sent back as `Rejected`. */
export interface Rejection {
  code: "FAILED_PRECONDITION" | "NOT_FOUND" | "INVALID_ARGUMENT" | "RESOURCE_EXHAUSTED";
  message: string;
}

/** Input of {@link Engine.startRun}. */
export interface StartRunInput {
  workflowName: string;
  workflowVersion: number;
  input: unknown;
  idempotencyKey: string;
  labels: Record<string, string>;
}

/** How long a Started report may wait for another commit to ride along with. */
const STARTED_FLUSH_DELAY_MS = 20;

/** Extra grace after a scheduler restart: executors back off up to 5 s between reconnects. */
const RECONNECT_ALLOWANCE_MS = 6000;

function stepState(t: TaskState): StepState {
  switch (t.status) {
    case "PENDING":
      return { status: "pending" };
    case "QUEUED":
    case "LEASED":
    case "RUNNING":
    case "RETRY_WAIT":
      return { status: "active", input: t.input };
    case "SUCCEEDED":
      // An offloaded output counts once it has been read back (see Engine.resolveOffloaded).
      if (t.outputRef !== null && t.outputRef !== undefined) {
        return t.resolvedOutput === undefined
          ? { status: "active", input: t.input }
          : { status: "succeeded", output: t.resolvedOutput, input: t.input };
      }
      return { status: "succeeded", output: t.output, input: t.input };
    case "FAILED":
      return { status: "failed", input: t.input };
    case "SKIPPED":
      return { status: "skipped", skipReason: t.skipReason ?? "upstream" };
    case "CANCELLED":
      return { status: "cancelled" };
  }
}

function keyMatches(task: TaskState, key: LeaseKey): boolean {
  return task.attempt === key.attempt && task.fencingToken === Number(key.fencingToken);
}

/** The scheduler's core. */
export class Engine {
  private readonly log: Logger;
  private readonly db: Database;
  /** The group-commit writer (exposed for statistics). */
  readonly writer: BatchWriter;
  /** Workflow definitions. */
  readonly definitions: DefinitionStore;
  /** Sessions and ready queues. */
  readonly dispatcher = new Dispatcher();
  private readonly runs = new Map<string, RunState>();
  private readonly tasks = new Map<string, TaskState>();
  /** StartRun calls with an idempotency key. */
  private readonly keyed: KeyedStarts;
  /** Logs task types with ready tasks that no executor advertises. */
  private readonly unserved: UnservedTypes;
  /** Leases without a session (session lost, or scheduler restarted): expiry timers by task id. */
  private readonly orphans = new Map<string, NodeJS.Timeout>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly watchers = new Map<string, Set<() => void>>();
  private readonly eventListeners: (() => void)[] = [];
  private pumpScheduled = false;
  /** Runs with completions not yet evaluated; evaluated once per event-loop turn. */
  private readonly dirtyRuns = new Set<RunState>();
  private advanceScheduled = false;
  private livenessTimer: NodeJS.Timeout | undefined;
  private pingNonce = 0n;
  /** Heartbeat interval told to executors. */
  readonly heartbeatIntervalMs: number;
  /** Session timeout told to executors. */
  readonly sessionTimeoutMs: number;
  private readonly commitTimeoutMs: number;
  private readonly resolveOutput: ((ref: unknown) => Promise<unknown>) | undefined;
  private stateValue: EngineState = "CREATED";
  private stopping: Promise<void> | undefined;

  constructor(options: EngineOptions) {
    this.log = options.log;
    this.db = options.db;
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? 2000;
    this.sessionTimeoutMs = options.sessionTimeoutMs ?? 10_000;
    this.commitTimeoutMs = options.commitTimeoutMs ?? 5000;
    this.resolveOutput = options.resolveOutput;
    this.keyed = new KeyedStarts(
      new IdempotencyKeyStore(options.db.pool),
      options.idempotencyKeyRetentionMs ?? 24 * 60 * 60 * 1000,
    );
    this.writer = new BatchWriter({
      pool: options.db.writerPool,
      log: options.log,
      onCommit: (batch) => {
        for (const runId of batch.runIds) this.notify(runId);
        if (batch.events > 0) for (const l of this.eventListeners) l();
      },
      onRefused: (runId, error) => this.refused(runId, error),
    });
    this.definitions = new DefinitionStore(options.db, options.log);
    this.unserved = new UnservedTypes({ log: options.log });
  }

  /** Current lifecycle state. */
  get state(): EngineState {
    return this.stateValue;
  }

  // ---------------------------------------------------------------- lifecycle

  /** Rebuilds the in-memory model from the database and starts the timers. */
  async start(): Promise<void> {
    if (this.stateValue !== "CREATED") throw new Error(`engine cannot start from ${this.stateValue}`);
    this.stateValue = "RECOVERING";
    await this.recover();
    this.livenessTimer = setInterval(
      () => this.checkLiveness(),
      Math.max(100, Math.floor(this.heartbeatIntervalMs / 2)),
    );
    this.stateValue = "RUNNING";
    this.schedulePump();
  }

  /** Stops timers, closes sessions and commits what is pending. Safe to call more than once. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.stateValue = "STOPPING";
    clearInterval(this.livenessTimer);
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const t of this.orphans.values()) clearTimeout(t);
    this.orphans.clear();
    for (const s of this.dispatcher.sessions.values()) s.close("scheduler shutting down");
    await this.writer.close();
    this.stateValue = "STOPPED";
  }

  private setTimer(ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(
      () => {
        this.timers.delete(t);
        if (this.stateValue === "RUNNING" || this.stateValue === "RECOVERING") fn();
      },
      Math.max(0, ms),
    );
    this.timers.add(t);
    return t;
  }

  /** Waits for the commit of everything changed so far, or answers UNAVAILABLE. */
  private async committed(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.writer.flush(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new UnavailableError(
                  "the database is unavailable; the change will be committed when it returns",
                ),
              ),
            this.commitTimeoutMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async recover(): Promise<void> {
    const pool = this.db.pool;
    const runRows = await pool.query<{
      id: string;
      definition_id: number;
      workflow_name: string;
      status: RunState["status"];
      input: unknown;
      idempotency_key: string | null;
      labels: Record<string, string>;
      cancel_requested: boolean;
      compensate_on_cancel: boolean;
      error: unknown;
      last_event_seq: string;
      deadline: Date | null;
      created_at: Date;
    }>(
      // The run row's event_seq is written with the run's own changes only; events since then are
      // in the outbox (the relay never prunes an event the run row does not cover), so the next
      // sequence number continues from whichever is higher.
      `SELECT r.*, GREATEST(r.event_seq,
         COALESCE((SELECT max(o.last_sequence) FROM outbox_events o WHERE o.run_id = r.id), 0)) AS last_event_seq
         FROM workflow_runs r WHERE r.status IN ('PENDING', 'RUNNING', 'COMPENSATING') ORDER BY r.created_at`,
    );
    if (runRows.rowCount === 0) return;
    const ids = runRows.rows.map((r) => r.id);
    const keyed = await this.keyed.ofRuns(runRows.rows);
    const taskRows = await pool.query<{
      id: string;
      run_id: string;
      step_id: string;
      kind: TaskState["kind"];
      type: string;
      status: TaskStatusName;
      position: number;
      input: unknown;
      output: unknown;
      output_ref: unknown;
      error: ErrorInfo | null;
      skip_reason: TaskState["skipReason"];
      attempt: number;
      fencing_token: number;
      executor_id: string | null;
      lease_expires_at: Date | null;
      next_attempt_at: Date | null;
      queued_at: Date | null;
      created_at: Date;
      ended_at: Date | null;
      failures: number;
    }>(
      `SELECT t.*, (SELECT count(*)::int FROM task_attempts a WHERE a.task_run_id = t.id AND a.status = 'FAILED') AS failures
       FROM task_runs t WHERE t.run_id = ANY($1::uuid[]) ORDER BY t.run_id, t.position`,
      [ids],
    );
    const attemptRows = await pool.query<{
      task_run_id: string;
      run_id: string;
      number: number;
      fencing_token: number;
      executor_id: string;
      status: TaskStatusName;
      leased_at: Date;
      started_at: Date | null;
    }>(
      `SELECT a.* FROM task_attempts a JOIN task_runs t ON t.id = a.task_run_id AND t.attempt = a.number
       WHERE t.run_id = ANY($1::uuid[]) AND t.status IN ('LEASED', 'RUNNING')`,
      [ids],
    );
    const currentAttempts = new Map(attemptRows.rows.map((a) => [a.task_run_id, a]));
    for (const r of runRows.rows) {
      const workflow = await this.definitions.compiledById(r.definition_id);
      const run: RunState = {
        id: r.id,
        definitionId: r.definition_id,
        workflow,
        status: r.status,
        input: r.input,
        output: null,
        error: null,
        idempotencyKey: r.idempotency_key,
        requestHash: keyed.get(r.id)?.requestHash ?? null,
        labels: r.labels,
        cancelRequested: r.cancel_requested,
        compensateOnCancel: r.compensate_on_cancel,
        eventSeq: Number(r.last_event_seq),
        deadline: r.deadline,
        createdAt: r.created_at,
        endedAt: null,
        tasks: new Map(),
        compensations: new Map(),
        compensationWaves: null,
        rollbackError: r.error as ErrorInfo | null,
      };
      this.runs.set(run.id, run);
    }
    let queued = 0;
    let orphaned = 0;
    for (const t of taskRows.rows) {
      const run = this.runs.get(t.run_id);
      if (run === undefined) continue;
      const a = currentAttempts.get(t.id);
      const task: TaskState = {
        id: t.id,
        runId: t.run_id,
        stepId: t.step_id,
        kind: t.kind,
        type: t.type,
        position: t.position,
        status: t.status,
        input: t.input,
        output: t.output,
        outputRef: t.output_ref,
        error: t.error,
        skipReason: t.skip_reason,
        attempt: t.attempt,
        fencingToken: t.fencing_token,
        failures: t.failures,
        executorId: t.executor_id,
        sessionId: null,
        leaseExpiresAt: t.lease_expires_at,
        nextAttemptAt: t.next_attempt_at,
        queuedAt: t.queued_at,
        createdAt: t.created_at,
        endedAt: t.ended_at,
        current:
          a === undefined
            ? null
            : {
                taskRunId: t.id,
                runId: t.run_id,
                number: a.number,
                fencingToken: a.fencing_token,
                executorId: a.executor_id,
                status: a.status,
                error: null,
                logs: null,
                leasedAt: a.leased_at,
                startedAt: a.started_at,
                endedAt: null,
              },
        lastHeartbeat: performance.now(),
      };
      if (t.kind === "STEP") run.tasks.set(task.stepId, task);
      else run.compensations.set(task.stepId, task);
      this.tasks.set(task.id, task);
      if (task.status === "QUEUED") {
        this.dispatcher.enqueue(task);
        // The wait in the queue goes on across the restart: only what is left of it remains.
        const limit = this.scheduleToStartMs(task);
        if (limit !== null) {
          const waited = task.queuedAt === null ? 0 : Date.now() - task.queuedAt.getTime();
          this.armScheduleToStart(task, limit, limit - waited);
        }
        queued++;
      } else if (task.status === "RETRY_WAIT") {
        this.scheduleRetry(task);
      } else if (ACTIVE_LEASE.has(task.status)) {
        // Its executor may reconnect and claim it (Attach.held_leases) within the grace period,
        // which after a restart also covers the executors' reconnect backoff.
        this.orphan(task, this.sessionTimeoutMs + RECONNECT_ALLOWANCE_MS);
        orphaned++;
      }
    }
    for (const task of this.tasks.values()) {
      if (task.kind === "STEP" && task.status === "SUCCEEDED" && task.outputRef !== null)
        this.resolveOffloaded(task);
    }
    for (const run of this.runs.values()) {
      this.keyed.remember(run);
      if (run.deadline !== null)
        this.setTimer(run.deadline.getTime() - Date.now(), () => this.timeOutRun(run));
      if (run.status === "COMPENSATING") this.advanceCompensation(run);
      else this.advance(run);
    }
    await this.writer.flush();
    // Executors that were attached before the restart are reconnecting: no warning about types
    // they advertise until they have had the time to.
    if (queued > 0 || orphaned > 0) this.unserved.quietFor(this.sessionTimeoutMs + RECONNECT_ALLOWANCE_MS);
    this.log.info({ runs: this.runs.size, queued, orphanedLeases: orphaned }, "recovered active runs");
  }

  // ---------------------------------------------------------------- runs

  /**
   * Starts a run. With an idempotency key (scoped to the workflow name, valid for the retention):
   * the same key with the same input and labels returns the run it started, even when the calls
   * race; with a different input or labels it answers ALREADY_EXISTS naming that run.
   */
  async startRun(req: StartRunInput): Promise<{ runId: string; created: boolean }> {
    this.assertRunning();
    if (req.idempotencyKey === "") return this.startRunOnce(req, null);
    return this.keyed.start(req, (hash) => this.startRunOnce(req, hash));
  }

  private async startRunOnce(
    req: StartRunInput,
    hash: string | null,
  ): Promise<{ runId: string; created: boolean }> {
    const def = await this.definitions.resolve(req.workflowName, req.workflowVersion);
    const problems = validateRunInput(def.workflow, req.input ?? null);
    if (problems.length > 0) {
      throw new ApiError(
        Code.INVALID_ARGUMENT,
        `input does not match the input schema of ${def.workflow.name} v${def.workflow.version}: ${problems
          .map((p) => `${p.path}: ${p.message}`)
          .join("; ")}`,
        problems.map((p) => ({ field: `input${p.path.slice(1)}`, description: p.message })),
      );
    }
    const now = new Date();
    const run = newRunState({
      definitionId: def.id,
      workflow: def.workflow,
      input: req.input ?? null,
      idempotencyKey: req.idempotencyKey === "" ? null : req.idempotencyKey,
      requestHash: hash,
      labels: req.labels,
      now,
    });
    for (const step of def.workflow.steps) {
      const task = this.track(newTaskState(run.id, step.id, "STEP", step.type, step.order, now));
      run.tasks.set(step.id, task);
    }
    this.runs.set(run.id, run);
    this.keyed.remember(run);
    this.writer.markRun(run);
    this.emit(run, {
      case: "runStarted",
      value: { input: jsonToValue(run.input), idempotencyKey: req.idempotencyKey, labels: req.labels },
    });
    this.advance(run);
    if (run.deadline !== null) this.setTimer(run.deadline.getTime() - Date.now(), () => this.timeOutRun(run));
    await this.committed();
    // Refused by PostgreSQL in that commit (see refused): the run was never stored.
    if (run.error?.type === STORAGE_REFUSED)
      throw new ApiError(Code.INVALID_ARGUMENT, `the run was not created: ${run.error.message}`);
    return { runId: run.id, created: true };
  }

  /**
   * A run whose changes PostgreSQL refused for their data (the writer dropped them and their
   * events; retrying would fail forever). The run leaves memory: executors holding its leases are
   * told to stop (their reports no longer match a task), and a run that was stored before is
   * ended FAILED with STORAGE_REFUSED in the database, with its event. A new run was never stored:
   * its StartRun call, which holds the run, sees the error and answers INVALID_ARGUMENT.
   */
  private refused(runId: string, cause: Error): void {
    const run = this.runs.get(runId);
    if (run === undefined) return;
    const error: ErrorInfo = {
      type: STORAGE_REFUSED,
      message: `PostgreSQL refused to store the run's changes: ${cause.message}`,
      retryable: false,
    };
    for (const task of [...run.tasks.values(), ...run.compensations.values()]) {
      if (ACTIVE_LEASE.has(task.status))
        this.sendCancel(task, "the run failed: its changes cannot be stored");
      this.detach(task);
      task.status = "CANCELLED";
      this.tasks.delete(task.id);
    }
    this.dirtyRuns.delete(run);
    run.status = "FAILED";
    run.error = error;
    this.runs.delete(runId);
    this.keyed.forget(run);
    if (!this.writer.isStored(run)) return;
    failRefusedRun(this.db.pool, runId, error).then(
      (outcome) => {
        this.log.error({ runId, outcome }, "ended a run whose changes PostgreSQL refused");
        this.notify(runId);
        for (const l of this.eventListeners) l();
      },
      (e: unknown) =>
        this.log.error({ err: e, runId }, "could not end a run whose changes PostgreSQL refused"),
    );
  }

  /** Registers a new task run and marks it for the next commit. */
  private track(task: TaskState): TaskState {
    this.tasks.set(task.id, task);
    this.writer.markTask(task);
    return task;
  }

  /**
   * Cancels a run: pending work is cancelled, leased tasks are told to stop. With `compensate`,
   * the compensations of the steps that succeeded run afterwards. Idempotent; a run that is
   * already rolling back keeps rolling back.
   */
  async cancelRun(runId: string, reason: string, compensate = false): Promise<void> {
    this.assertRunning();
    const run = this.runs.get(runId);
    if (
      run === undefined ||
      TERMINAL_RUN_STATUSES.has(run.status) ||
      run.cancelRequested ||
      run.status === "COMPENSATING"
    )
      return;
    run.cancelRequested = true;
    run.compensateOnCancel = compensate;
    this.writer.markRun(run);
    this.emit(run, { case: "runCancelRequested", value: { reason, compensate } });
    const now = new Date();
    const error: ErrorInfo = { type: "CANCELLED", message: reason, retryable: false };
    this.stopActiveTasks(run, `run cancelled: ${reason}`, error, now);
    if (!compensate || !this.startCompensation(run, error, now))
      this.completeRun(run, "CANCELLED", null, error, now);
    await this.committed();
  }

  /** Cancels every unfinished step task of `run`, telling executors to stop leased ones. */
  private stopActiveTasks(run: RunState, reason: string, error: ErrorInfo, now: Date): void {
    for (const task of run.tasks.values()) {
      if (TERMINAL_TASK_STATUSES.has(task.status)) continue;
      if (ACTIVE_LEASE.has(task.status)) {
        this.sendCancel(task, reason);
        this.finishAttempt(task, "CANCELLED", error, now);
      }
      this.endTask(task, "CANCELLED", now);
      this.emit(run, { case: "taskCancelled", value: { taskRunId: task.id, stepId: task.stepId, reason } });
    }
  }

  /**
   * Starts the saga rollback when some succeeded step has a compensation: the run goes
   * COMPENSATING and the first wave is queued. Returns false when there is nothing to compensate.
   */
  private startCompensation(run: RunState, error: ErrorInfo, now: Date): boolean {
    const succeeded = [...run.tasks.values()].filter((t) => t.status === "SUCCEEDED").map((t) => t.stepId);
    const waves = compensationOrder(run.workflow, succeeded).filter((w) => w.length > 0);
    if (waves.length === 0) return false;
    run.status = "COMPENSATING";
    run.compensationWaves = waves;
    run.rollbackError = error;
    run.error = error;
    this.writer.markRun(run);
    this.emit(run, { case: "runCompensating", value: { stepIds: waves.flat(), reason: error.message } });
    for (const wave of waves) {
      for (const stepId of wave) {
        const step = run.workflow.stepsById.get(stepId);
        if (step?.compensate == null || run.compensations.has(stepId)) continue;
        run.compensations.set(
          stepId,
          this.track(newTaskState(run.id, stepId, "COMPENSATION", step.compensate.type, step.order, now)),
        );
      }
    }
    this.advanceCompensation(run);
    return true;
  }

  /** Queues the next wave of compensations once the previous one finished; completes the rollback. */
  advanceCompensation(run: RunState): void {
    if (run.status !== "COMPENSATING") return;
    const waves =
      run.compensationWaves ??
      (run.compensationWaves = compensationOrder(
        run.workflow,
        [...run.tasks.values()].filter((t) => t.status === "SUCCEEDED").map((t) => t.stepId),
      ).filter((w) => w.length > 0));
    const now = new Date();
    const states = new Map<string, StepState>();
    for (const t of run.tasks.values()) states.set(t.stepId, stepState(t));
    for (const wave of waves) {
      const tasks = wave
        .map((id) => run.compensations.get(id))
        .filter((t): t is TaskState => t !== undefined);
      let unfinished = false;
      for (const task of tasks) {
        if (task.status === "PENDING") {
          const rendered = renderCompensationInput(run.workflow, task.stepId, run.input ?? null, states, {
            id: run.id,
            workflow: run.workflow.name,
            version: run.workflow.version,
          });
          if (rendered.ok) {
            task.input = rendered.input;
            this.queueTask(task, now);
            unfinished = true;
          } else {
            // A compensation that cannot even be rendered fails alone; the others still run.
            this.failTerminally(
              run,
              task,
              { type: rendered.error.type, message: rendered.error.message, retryable: false },
              now,
            );
          }
        } else if (!TERMINAL_TASK_STATUSES.has(task.status)) {
          unfinished = true;
        }
      }
      if (unfinished) {
        this.schedulePump();
        return;
      }
    }
    const failed = [...run.compensations.values()].filter((t) => t.status !== "SUCCEEDED");
    const base = run.rollbackError ?? { type: "STEP_FAILED", message: "the run failed", retryable: false };
    if (failed.length === 0) {
      this.completeRun(run, "COMPENSATED", null, base, now);
    } else {
      this.completeRun(
        run,
        "COMPENSATION_FAILED",
        null,
        {
          type: "COMPENSATION_FAILED",
          message: `${base.message}; compensation of ${failed.map((t) => t.stepId).join(", ")} failed`,
          retryable: false,
        },
        now,
      );
    }
  }

  /** Moves a task to QUEUED and arms its schedule-to-start timeout. */
  private queueTask(task: TaskState, now: Date): void {
    task.status = "QUEUED";
    task.queuedAt = now;
    this.writer.markTask(task);
    this.dispatcher.enqueue(task);
    const limit = this.scheduleToStartMs(task);
    if (limit !== null) this.armScheduleToStart(task, limit, limit);
  }

  /** The schedule-to-start timeout of the task's step (or compensation), if it has one. */
  private scheduleToStartMs(task: TaskState): number | null {
    const step = this.runs.get(task.runId)?.workflow.stepsById.get(task.stepId);
    const timeouts = task.kind === "STEP" ? step?.timeouts : step?.compensate?.timeouts;
    return timeouts?.scheduleToStartMs ?? null;
  }

  /**
   * Fails the queued attempt with SCHEDULE_TO_START_TIMEOUT unless an executor takes it within
   * `limitMs`, of which `remainingMs` are left. That attempt had no lease, yet it counts against the
   * retry policy like any other, so it is recorded as an attempt without executor or start time
   * (its lease time is when it was queued): GetRun lists it, and recovery, which counts failed
   * attempts, does not forget it.
   */
  private armScheduleToStart(task: TaskState, limitMs: number, remainingMs: number): void {
    const attempt = task.attempt;
    this.setTimer(remainingMs, () => {
      if (task.status !== "QUEUED" || task.attempt !== attempt) return;
      const now = new Date();
      task.attempt++;
      task.fencingToken++;
      task.current = {
        taskRunId: task.id,
        runId: task.runId,
        number: task.attempt,
        fencingToken: task.fencingToken,
        executorId: "",
        status: "QUEUED",
        error: null,
        logs: null,
        leasedAt: task.queuedAt ?? now,
        startedAt: null,
        endedAt: null,
      };
      task.queuedAt = null;
      this.failAttempt(
        task,
        {
          type: "SCHEDULE_TO_START_TIMEOUT",
          message: `no executor started the task within ${limitMs} ms`,
          retryable: true,
        },
        0,
      );
    });
  }

  private timeOutRun(run: RunState): void {
    if (TERMINAL_RUN_STATUSES.has(run.status)) return;
    const now = new Date();
    const error: ErrorInfo = {
      type: "RUN_TIMEOUT",
      message: "the run exceeded its timeout",
      retryable: false,
    };
    this.stopActiveTasks(run, "run timed out", error, now);
    this.completeRun(run, "TIMED_OUT", null, error, now);
    void this.writer.flush().catch(() => undefined);
  }

  /** Evaluates the DAG and applies what became ready, skipped or failed; completes the run when done. */
  private advance(run: RunState): void {
    if (TERMINAL_RUN_STATUSES.has(run.status) || run.cancelRequested) return;
    const now = new Date();
    for (let round = 0; round < run.workflow.steps.length + 1; round++) {
      const states = new Map<string, StepState>();
      for (const t of run.tasks.values()) states.set(t.stepId, stepState(t));
      const ev = evaluateRun(run.workflow, run.input ?? null, states, {
        id: run.id,
        workflow: run.workflow.name,
        version: run.workflow.version,
      });
      for (const r of ev.ready) {
        const task = run.tasks.get(r.stepId);
        if (task === undefined || task.status !== "PENDING") continue;
        task.input = r.input;
        this.queueTask(task, now);
      }
      for (const s of ev.skip) {
        const task = run.tasks.get(s.stepId);
        if (task === undefined || task.status !== "PENDING") continue;
        task.skipReason = s.reason;
        this.endTask(task, "SKIPPED", now);
        this.emit(run, {
          case: "taskSkipped",
          value: { taskRunId: task.id, stepId: task.stepId, reason: s.reason },
        });
      }
      for (const f of ev.fail) {
        const task = run.tasks.get(f.stepId);
        if (task === undefined || task.status !== "PENDING") continue;
        this.failTerminally(
          run,
          task,
          { type: f.error.type, message: f.error.message, retryable: false },
          now,
        );
      }
      if (ev.outcome !== undefined) {
        if (ev.outcome.status === "succeeded")
          this.completeRun(run, "SUCCEEDED", ev.outcome.output, null, now);
        else {
          const failed = ev.outcome.failedSteps;
          const first = failed[0] === undefined ? undefined : run.tasks.get(failed[0]);
          const error: ErrorInfo =
            ev.outcome.error !== undefined
              ? {
                  type: ev.outcome.error.type,
                  message: `output mapping: ${ev.outcome.error.message}`,
                  retryable: false,
                }
              : {
                  type: first?.error?.type ?? "STEP_FAILED",
                  message: `step${failed.length === 1 ? "" : "s"} ${failed.join(", ")} failed${first?.error ? `: ${first.error.message}` : ""}`,
                  retryable: false,
                };
          if (!this.startCompensation(run, error, now)) this.completeRun(run, "FAILED", null, error, now);
        }
        break;
      }
      // Another round only when a render failure may have decided more steps.
      if (ev.fail.length === 0) break;
    }
    if (this.stateValue === "RUNNING") this.schedulePump();
  }

  private completeRun(
    run: RunState,
    status: RunState["status"],
    output: unknown,
    error: ErrorInfo | null,
    now: Date,
  ): void {
    run.status = status;
    run.output = output ?? null;
    run.error = error;
    run.endedAt = now;
    this.writer.markRun(run);
    this.emit(run, {
      case: "runCompleted",
      value: {
        status: RunStatus[status],
        ...(output === null || output === undefined ? {} : { output: jsonToValue(output) }),
        ...(error === null ? {} : { error: errorToProto(error) }),
      },
    });
    // Once committed, the run lives only in the database.
    this.writer.flush().then(
      () => {
        this.runs.delete(run.id);
        this.keyed.forget(run);
        for (const t of [...run.tasks.values(), ...run.compensations.values()]) {
          if (!ACTIVE_LEASE.has(t.status)) this.tasks.delete(t.id);
        }
      },
      () => undefined,
    );
  }

  /** Fails a task for good without an attempt of its own (render errors, unreadable outputs). */
  private failTerminally(run: RunState, task: TaskState, error: ErrorInfo, now: Date): void {
    task.error = error;
    this.endTask(task, "FAILED", now);
    this.emit(run, {
      case: "taskFailed",
      value: {
        taskRunId: task.id,
        stepId: task.stepId,
        attempt: task.attempt,
        final: true,
        kind: task.kind === "STEP" ? TaskKind.STEP : TaskKind.COMPENSATION,
        error: errorToProto(error),
      },
    });
  }

  private endTask(task: TaskState, status: TaskStatusName, now: Date): void {
    task.status = status;
    task.endedAt = now;
    task.nextAttemptAt = null;
    this.detach(task);
    this.writer.markTask(task);
  }

  /**
   * Appends an event. The run row is not rewritten for it: its event_seq rides along whenever the
   * run itself changes, recovery continues from the higher of that and the outbox, and the relay
   * prunes only events the run row covers, so a sequence number is never reused.
   */
  private emit(run: RunState, event: EventInit): void {
    this.writer.addEvent(lifecycleEvent(run, event));
  }

  private assertRunning(): void {
    if (this.stateValue !== "RUNNING")
      throw new ApiError(Code.UNAVAILABLE, `the scheduler is ${this.stateValue.toLowerCase()}`);
    if (!this.writer.isHealthy) throw new UnavailableError("the database is unavailable; retry shortly");
  }

  // ---------------------------------------------------------------- leases

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** Hands queued tasks to sessions with credit; leases are sent once committed. */
  private pump(): void {
    if (this.stateValue !== "RUNNING") return;
    const pairs = this.dispatcher.take();
    if (pairs.length === 0) {
      this.recordHolds();
      return;
    }
    const now = new Date();
    const granted: { session: SessionHandle; task: TaskState; token: number }[] = [];
    for (const { session, task } of pairs) {
      const run = this.runs.get(task.runId);
      if (run === undefined) {
        session.credit++;
        continue;
      }
      task.attempt++;
      task.fencingToken++;
      task.status = "LEASED";
      task.executorId = session.executorId;
      task.sessionId = session.id;
      task.queuedAt = null;
      const attempt: AttemptState = {
        taskRunId: task.id,
        runId: task.runId,
        number: task.attempt,
        fencingToken: task.fencingToken,
        executorId: session.executorId,
        status: "LEASED",
        error: null,
        logs: null,
        leasedAt: now,
        startedAt: null,
        endedAt: null,
      };
      task.current = attempt;
      const step = run.workflow.stepsById.get(task.stepId);
      const startToClose = step?.timeouts.startToCloseMs ?? null;
      task.leaseExpiresAt = startToClose === null ? null : new Date(now.getTime() + startToClose);
      session.leases.add(task.id);
      this.writer.markTask(task);
      this.writer.markAttempt(attempt);
      this.emit(run, {
        case: "taskLeased",
        value: {
          taskRunId: task.id,
          stepId: task.stepId,
          attempt: task.attempt,
          executorId: session.executorId,
          fencingToken: BigInt(task.fencingToken),
          kind: task.kind === "STEP" ? TaskKind.STEP : TaskKind.COMPENSATION,
        },
      });
      granted.push({ session, task, token: task.fencingToken });
    }
    this.writer.flush().then(
      () => {
        for (const { session, task, token } of granted) {
          if (
            task.sessionId !== session.id ||
            task.fencingToken !== token ||
            !ACTIVE_LEASE.has(task.status)
          ) {
            // Never sent (cancelled, refused or taken back while committing): the executor will not
            // return its slot, so the session gets it back here.
            if (this.dispatcher.sessions.get(session.id) === session) {
              session.credit++;
              this.schedulePump();
            }
            continue;
          }
          const run = this.runs.get(task.runId);
          const step = run?.workflow.stepsById.get(task.stepId);
          session.send(
            create(SessionResponseSchema, {
              message: {
                case: "lease",
                value: {
                  key: this.leaseKey(task),
                  runId: task.runId,
                  stepId: task.stepId,
                  taskType: task.type,
                  kind: task.kind === "STEP" ? TaskKind.STEP : TaskKind.COMPENSATION,
                  input: jsonToValue(task.input),
                  workflowName: run?.workflow.name ?? "",
                  heartbeatTimeoutMs: step?.timeouts.heartbeatMs ?? 0,
                  ...(task.leaseExpiresAt === null
                    ? {}
                    : { deadline: timestampFromDate(task.leaseExpiresAt) }),
                },
              },
            }),
          );
          if (task.leaseExpiresAt !== null) {
            const expires = task.leaseExpiresAt.getTime();
            this.setTimer(expires - Date.now(), () => {
              if (task.fencingToken === token && ACTIVE_LEASE.has(task.status)) {
                this.sendCancel(task, "start-to-close timeout");
                this.failAttempt(
                  task,
                  {
                    type: "TIMEOUT",
                    message: "the attempt exceeded its start-to-close timeout",
                    retryable: true,
                  },
                  0,
                );
              }
            });
          }
        }
      },
      (e: unknown) => this.log.warn({ err: e }, "leases not sent: commit failed"),
    );
    this.recordHolds();
    // More may fit (credit left, or tasks queued meanwhile).
    this.schedulePump();
  }

  /**
   * After a pass: records why the ready tasks it left wait (TaskRun.pending_reason), logs task
   * types that no executor advertises, and wakes the WatchRun streams of runs whose queued tasks
   * now wait for another reason (no commit would, since nothing stored changed).
   */
  private recordHolds(): void {
    for (const { type, hold } of this.dispatcher.recordHolds()) {
      this.unserved.update(type, hold, () => this.dispatcher.waiting(type).length);
      if (this.watchers.size === 0) continue;
      for (const runId of new Set(this.dispatcher.waiting(type).map((t) => t.runId))) this.notify(runId);
    }
  }

  /**
   * Why a task waits, in one line (TaskRun.pending_reason), or "" unless it is QUEUED here: the
   * reason the dispatcher recorded for its type in its latest pass, from the sessions attached at
   * that moment (no executor advertises the type; all that do are busy or draining). It is kept
   * in memory, not stored: it describes executor sessions of this process, changes with every
   * attach, credit and drain, and a restarted scheduler learns it again as executors reconnect.
   * Reasons of other kinds (#27: ExplainPending) can join it here, recorded at their decision.
   */
  pendingReason(taskRunId: string): string {
    const task = this.tasks.get(taskRunId);
    return task?.status === "QUEUED" ? this.dispatcher.pendingReason(task.type) : "";
  }

  private leaseKey(task: TaskState): { taskRunId: string; attempt: number; fencingToken: bigint } {
    return { taskRunId: task.id, attempt: task.attempt, fencingToken: BigInt(task.fencingToken) };
  }

  private sendCancel(task: TaskState, reason: string): void {
    const session = task.sessionId === null ? undefined : this.dispatcher.sessions.get(task.sessionId);
    session?.send(
      create(SessionResponseSchema, {
        message: { case: "cancel", value: { key: this.leaseKey(task), reason } },
      }),
    );
  }

  /** Removes the task's lease from its session (the session gets no credit back: the executor grants it). */
  private detach(task: TaskState): void {
    if (task.sessionId !== null) this.dispatcher.sessions.get(task.sessionId)?.leases.delete(task.id);
    task.sessionId = null;
    task.leaseExpiresAt = null;
    const orphan = this.orphans.get(task.id);
    if (orphan !== undefined) {
      clearTimeout(orphan);
      this.orphans.delete(task.id);
    }
  }

  private finishAttempt(
    task: TaskState,
    status: TaskStatusName,
    error: ErrorInfo | null,
    now: Date,
    logs?: unknown,
  ): void {
    const a = task.current;
    if (a === null) return;
    a.status = status;
    a.error = error;
    a.endedAt = now;
    if (logs !== undefined) a.logs = logs;
    this.writer.markAttempt(a);
    task.current = null;
  }

  /** Validates a report's lease key against the lease held by `session`. */
  private check(session: SessionHandle, key: LeaseKey | undefined): TaskState | Rejection {
    if (key === undefined || key.taskRunId === "") {
      return {
        code: "INVALID_ARGUMENT",
        message: "the report carries no lease key (task_run_id, attempt, fencing_token)",
      };
    }
    const task = this.tasks.get(key.taskRunId);
    if (task === undefined) return { code: "NOT_FOUND", message: `no active task run ${key.taskRunId}` };
    if (!keyMatches(task, key)) {
      return {
        code: "FAILED_PRECONDITION",
        message: `stale lease for task run ${key.taskRunId}: attempt ${key.attempt} token ${key.fencingToken}, current attempt ${task.attempt} token ${task.fencingToken}`,
      };
    }
    if (!ACTIVE_LEASE.has(task.status)) {
      return {
        code: "FAILED_PRECONDITION",
        message: `task run ${key.taskRunId} is ${task.status}; its result was already decided`,
      };
    }
    if (task.sessionId !== session.id) {
      return {
        code: "FAILED_PRECONDITION",
        message: `task run ${key.taskRunId} is not leased to this session`,
      };
    }
    return task;
  }

  /** Started report. */
  onStarted(session: SessionHandle, key: LeaseKey | undefined): Rejection | null {
    const task = this.check(session, key);
    if ("code" in task) return task;
    if (task.status !== "LEASED")
      return { code: "FAILED_PRECONDITION", message: `task run ${task.id} was already started` };
    this.markStarted(task, session);
    // No commit of its own when another is near: RUNNING rides along with it.
    this.writer.flushSoon(STARTED_FLUSH_DELAY_MS);
    return null;
  }

  /**
   * The attempt began: RUNNING, its start time and a taskStarted event. Also applied by a
   * Completed or Failed report for an attempt still LEASED, because an executor may leave out the
   * Started of an attempt that finished before Started was sent (the result implies the start).
   */
  private markStarted(task: TaskState, session: SessionHandle): void {
    const run = this.runs.get(task.runId);
    task.status = "RUNNING";
    task.lastHeartbeat = performance.now();
    if (task.current !== null) {
      task.current.status = "RUNNING";
      task.current.startedAt = new Date();
      this.writer.markAttempt(task.current);
    }
    this.writer.markTask(task);
    if (run !== undefined) {
      this.emit(run, {
        case: "taskStarted",
        value: {
          taskRunId: task.id,
          stepId: task.stepId,
          attempt: task.attempt,
          executorId: session.executorId,
          kind: task.kind === "STEP" ? TaskKind.STEP : TaskKind.COMPENSATION,
        },
      });
    }
  }

  /** Heartbeat report for a task. */
  onHeartbeat(session: SessionHandle, key: LeaseKey | undefined): Rejection | null {
    const task = this.check(session, key);
    if ("code" in task) return task;
    task.lastHeartbeat = performance.now();
    return null;
  }

  /** Completed report: accepted at most once per task. */
  onCompleted(
    session: SessionHandle,
    key: LeaseKey | undefined,
    output: unknown,
    outputRef: unknown,
    logs: unknown,
  ): Rejection | null {
    const task = this.check(session, key);
    if ("code" in task) return task;
    if (task.status === "LEASED") this.markStarted(task, session);
    const run = this.runs.get(task.runId);
    const now = new Date();
    this.finishAttempt(task, "SUCCEEDED", null, now, logs);
    task.output = output ?? null;
    task.outputRef = outputRef ?? null;
    this.endTask(task, "SUCCEEDED", now);
    if (task.kind === "STEP" && task.outputRef !== null) this.resolveOffloaded(task);
    if (run !== undefined) {
      this.emit(run, {
        case: "taskSucceeded",
        value: {
          taskRunId: task.id,
          stepId: task.stepId,
          attempt: task.attempt,
          ...(task.outputRef === null
            ? { output: jsonToValue(output) }
            : { outputRef: toArtifactRef(task.outputRef) }),
          kind: task.kind === "STEP" ? TaskKind.STEP : TaskKind.COMPENSATION,
        },
      });
      if (task.kind === "STEP") {
        this.advanceSoon(run);
        return null;
      }
      this.advanceCompensation(run);
    }
    void this.writer.flush().catch(() => undefined);
    return null;
  }

  /**
   * Evaluates `run` once the reports already received have been applied: the completions of a wide
   * fan-in that arrive together cost one evaluation, not one each. The commit follows the
   * evaluation, so a completion and the steps it makes ready are written together.
   */
  private advanceSoon(run: RunState): void {
    this.dirtyRuns.add(run);
    if (this.advanceScheduled) return;
    this.advanceScheduled = true;
    setImmediate(() => {
      this.advanceScheduled = false;
      const runs = [...this.dirtyRuns];
      this.dirtyRuns.clear();
      for (const r of runs) this.advance(r);
      void this.writer.flush().catch(() => undefined);
    });
  }

  /**
   * Reads a step's offloaded output back so templates, conditions and the output mapping see it;
   * until then the step counts as active and its dependents wait. A store that is unavailable is
   * retried with backoff; an output that is gone or corrupt fails the step (OUTPUT_UNAVAILABLE).
   * The value is kept in memory only: PostgreSQL keeps the claim check, and recovery reads it again.
   */
  private resolveOffloaded(task: TaskState, attempt = 1): void {
    const resolve = this.resolveOutput;
    if (resolve === undefined) {
      this.log.warn(
        { taskRunId: task.id },
        "an offloaded output cannot be read: no artifact store; using null",
      );
      task.resolvedOutput = null;
      return;
    }
    const advance = (): void => {
      const run = this.runs.get(task.runId);
      if (run === undefined || (this.stateValue !== "RUNNING" && this.stateValue !== "RECOVERING")) return;
      this.advance(run);
      void this.writer.flush().catch(() => undefined);
    };
    resolve(task.outputRef).then(
      (value) => {
        task.resolvedOutput = value ?? null;
        advance();
      },
      (e: unknown) => {
        if (this.stateValue === "STOPPING" || this.stateValue === "STOPPED") return;
        if (isArtifactError(e, "UNAVAILABLE")) {
          const wait = Math.min(30_000, 250 * 2 ** Math.min(attempt, 7));
          this.log.warn(
            { err: e, taskRunId: task.id, retryInMs: wait },
            "cannot read an offloaded output yet",
          );
          this.setTimer(wait, () => this.resolveOffloaded(task, attempt + 1));
          return;
        }
        const run = this.runs.get(task.runId);
        if (run === undefined || task.status !== "SUCCEEDED") return;
        this.failTerminally(
          run,
          task,
          {
            type: "OUTPUT_UNAVAILABLE",
            message: `the offloaded output of step ${task.stepId} cannot be read: ${e instanceof Error ? e.message : String(e)}`,
            retryable: false,
          },
          new Date(),
        );
        advance();
      },
    );
  }

  /** Failed report: retried per policy or failed for good. */
  onFailed(
    session: SessionHandle,
    key: LeaseKey | undefined,
    error: ErrorInfo,
    retryAfterMs: number,
    logs: unknown,
  ): Rejection | null {
    const task = this.check(session, key);
    if ("code" in task) return task;
    if (task.status === "LEASED") this.markStarted(task, session);
    this.failAttempt(task, error, retryAfterMs, logs);
    return null;
  }

  /** Release report: the lease goes back to the front of the queue without counting as a failure. */
  onRelease(session: SessionHandle, key: LeaseKey | undefined, reason: string): Rejection | null {
    const task = this.check(session, key);
    if ("code" in task) return task;
    const now = new Date();
    this.finishAttempt(
      task,
      "CANCELLED",
      { type: "RELEASED", message: reason || "released by the executor", retryable: true },
      now,
    );
    this.detach(task);
    task.status = "QUEUED";
    task.queuedAt = now;
    this.writer.markTask(task);
    this.dispatcher.requeue(task);
    this.schedulePump();
    return null;
  }

  private failAttempt(task: TaskState, error: ErrorInfo, retryAfterMs: number, logs?: unknown): void {
    const run = this.runs.get(task.runId);
    const now = new Date();
    this.finishAttempt(task, "FAILED", error, now, logs);
    this.detach(task);
    task.failures++;
    const step = run?.workflow.stepsById.get(task.stepId);
    const policy =
      step === undefined
        ? undefined
        : task.kind === "STEP"
          ? step.retry
          : (step.compensate?.retry ?? step.retry);
    let delay: number | null = null;
    if (
      policy !== undefined &&
      error.retryable &&
      isRetryableError(policy, error.type) &&
      run?.cancelRequested !== true
    ) {
      delay = retryDelayMs(policy, task.failures);
      if (delay !== null && retryAfterMs > 0) delay = Math.min(retryAfterMs, policy.maxIntervalMs);
    }
    const kind = task.kind === "STEP" ? TaskKind.STEP : TaskKind.COMPENSATION;
    if (run !== undefined) {
      this.emit(run, {
        case: "taskFailed",
        value: {
          taskRunId: task.id,
          stepId: task.stepId,
          attempt: task.attempt,
          error: errorToProto(error),
          final: delay === null,
          kind,
        },
      });
    }
    if (delay !== null && run !== undefined) {
      task.status = "RETRY_WAIT";
      task.nextAttemptAt = new Date(now.getTime() + delay);
      task.error = error;
      this.writer.markTask(task);
      this.emit(run, {
        case: "taskRetryScheduled",
        value: {
          taskRunId: task.id,
          stepId: task.stepId,
          nextAttempt: task.attempt + 1,
          dueTime: timestampFromDate(task.nextAttemptAt),
          kind,
        },
      });
      this.scheduleRetry(task);
    } else {
      task.error = error;
      this.endTask(task, "FAILED", now);
      if (run !== undefined) {
        if (task.kind === "COMPENSATION") this.advanceCompensation(run);
        else this.advance(run);
      }
    }
    void this.writer.flush().catch(() => undefined);
  }

  /** Arms the durable retry timer of a task in RETRY_WAIT (rebuilt from next_attempt_at on recovery). */
  private scheduleRetry(task: TaskState): void {
    const due = task.nextAttemptAt?.getTime() ?? Date.now();
    this.setTimer(due - Date.now(), () => {
      if (task.status !== "RETRY_WAIT") return;
      task.nextAttemptAt = null;
      this.queueTask(task, new Date());
      this.schedulePump();
    });
  }

  /** Starts the grace period of a lease without a session; it expires unless an executor reclaims it. */
  private orphan(task: TaskState, graceMs = this.sessionTimeoutMs): void {
    if (this.orphans.has(task.id)) return;
    task.sessionId = null;
    const token = task.fencingToken;
    const timer = setTimeout(() => {
      this.orphans.delete(task.id);
      if (task.fencingToken !== token || !ACTIVE_LEASE.has(task.status) || task.sessionId !== null) return;
      this.log.warn(
        { taskRunId: task.id, stepId: task.stepId, executorId: task.executorId },
        "lease expired: executor lost",
      );
      this.failAttempt(
        task,
        { type: "LEASE_EXPIRED", message: `executor ${task.executorId ?? "?"} was lost`, retryable: true },
        0,
      );
    }, graceMs);
    this.orphans.set(task.id, timer);
  }

  // ---------------------------------------------------------------- sessions

  /**
   * Resolves once everything changed so far is committed (a session acknowledges its reports
   * with it); rejects when the writer closes first.
   */
  whenCommitted(): Promise<void> {
    return this.writer.flush();
  }

  /** Registers an attached session; returns the held leases that are no longer valid. */
  attach(session: SessionHandle, held: readonly LeaseKey[]): LeaseKey[] {
    const revoked: LeaseKey[] = [];
    for (const key of held) {
      const task = this.tasks.get(key.taskRunId);
      if (
        task === undefined ||
        !keyMatches(task, key) ||
        !ACTIVE_LEASE.has(task.status) ||
        task.executorId !== session.executorId
      ) {
        revoked.push(key);
        continue;
      }
      const orphan = this.orphans.get(task.id);
      if (orphan !== undefined) {
        clearTimeout(orphan);
        this.orphans.delete(task.id);
      }
      if (task.sessionId !== null) this.dispatcher.sessions.get(task.sessionId)?.leases.delete(task.id);
      task.sessionId = session.id;
      session.leases.add(task.id);
    }
    // A re-attached executor replaces its earlier sessions, even ones whose connection never
    // reported closing (half-open TCP): they must not take new leases.
    for (const other of [...this.dispatcher.sessions.values()]) {
      if (other.executorId === session.executorId && other.id !== session.id) {
        other.close("superseded by a new session of the same executor");
        this.detachSession(other);
      }
    }
    this.dispatcher.sessions.set(session.id, session);
    this.log.info(
      {
        sessionId: session.id,
        executorId: session.executorId,
        types: [...session.types],
        reclaimed: held.length - revoked.length,
      },
      "executor attached",
    );
    this.unserved.attached(session.executorId, session.types, (type) => this.dispatcher.waiting(type).length);
    this.schedulePump();
    return revoked;
  }

  /** Credit report. */
  onCredit(session: SessionHandle, n: number): Rejection | null {
    if (!Number.isInteger(n) || n <= 0 || n > 100_000) {
      return { code: "INVALID_ARGUMENT", message: `credit must be between 1 and 100000, got ${n}` };
    }
    if (session.credit + n > 1_000_000)
      return { code: "RESOURCE_EXHAUSTED", message: "credit above 1000000" };
    session.credit += n;
    this.schedulePump();
    return null;
  }

  /** Drain report: no more leases on this session. */
  onDrain(session: SessionHandle): number {
    session.draining = true;
    // The next pass records that the types it alone ran now wait for it to finish draining.
    this.schedulePump();
    return session.leases.size;
  }

  /** The session's stream ended: its leases wait for a reconnect, then expire. */
  detachSession(session: SessionHandle): void {
    if (this.dispatcher.sessions.get(session.id) !== session) return;
    this.dispatcher.sessions.delete(session.id);
    for (const id of session.leases) {
      const task = this.tasks.get(id);
      if (task !== undefined && task.sessionId === session.id && ACTIVE_LEASE.has(task.status))
        this.orphan(task);
    }
    session.leases.clear();
    // The next pass records whether the types it ran are now without an executor.
    this.schedulePump();
    this.log.info({ sessionId: session.id, executorId: session.executorId }, "executor session ended");
  }

  private checkLiveness(): void {
    const now = performance.now();
    this.pingNonce++;
    this.unserved.tick((type) => this.dispatcher.waiting(type).length);
    for (const s of this.dispatcher.sessions.values()) {
      for (const id of s.leases) {
        const task = this.tasks.get(id);
        if (task?.status !== "RUNNING") continue;
        const step = this.runs.get(task.runId)?.workflow.stepsById.get(task.stepId);
        const limit =
          task.kind === "STEP" ? step?.timeouts.heartbeatMs : step?.compensate?.timeouts.heartbeatMs;
        if (limit != null && now - task.lastHeartbeat > limit) {
          this.sendCancel(task, "heartbeat timeout");
          this.failAttempt(
            task,
            { type: "HEARTBEAT_TIMEOUT", message: `no heartbeat within ${limit} ms`, retryable: true },
            0,
          );
        }
      }
      if (now - s.lastSeen > this.sessionTimeoutMs) {
        this.log.warn(
          { sessionId: s.id, executorId: s.executorId },
          "executor session silent too long; closing it",
        );
        s.close("no heartbeat within the session timeout");
        this.detachSession(s);
      } else {
        s.send(
          create(SessionResponseSchema, { message: { case: "ping", value: { nonce: this.pingNonce } } }),
        );
      }
    }
  }

  // ---------------------------------------------------------------- watching

  /** Calls `listener` after each commit that touched the run. Returns the unsubscribe function. */
  watch(runId: string, listener: () => void): () => void {
    let set = this.watchers.get(runId);
    if (set === undefined) {
      set = new Set();
      this.watchers.set(runId, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.watchers.delete(runId);
    };
  }

  private notify(runId: string): void {
    const set = this.watchers.get(runId);
    if (set === undefined) return;
    for (const l of set) l();
  }

  /** Calls `listener` after each commit that wrote lifecycle events (wakes the outbox relay). */
  onEventsCommitted(listener: () => void): void {
    this.eventListeners.push(listener);
  }

  /** The in-memory state of an active run (a read-only view for API responses). */
  activeRun(runId: string): Readonly<RunState> | undefined {
    return this.runs.get(runId);
  }

  /** Whether the run is still active in memory. */
  isActive(runId: string): boolean {
    return this.runs.has(runId);
  }

  /** Counts, for logs and metrics. */
  stats(): { activeRuns: number; sessions: number; queued: Record<string, number> } {
    return {
      activeRuns: this.runs.size,
      sessions: this.dispatcher.sessions.size,
      queued: this.dispatcher.depth(),
    };
  }
}
