/**
 * The scheduler engine, as a thin shell around the rules in ../core: it feeds them their inputs
 * (API calls, executor reports, timers, sessions coming and going) with the time, and carries out
 * the effects they report: rows and events go to the {@link EngineStore} and are committed before
 * anyone outside acts on them, leases go out through the dispatcher, timers are set here.
 */
import { ApiError, Code, UnavailableError, type Logger } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { tracingEnabled } from "@nexusflow/common/telemetry";
import type { LeaseKey } from "@nexusflow/gen";
import * as core from "../core/index.js";
import type { Core, Effects, Moment, Rejection } from "../core/index.js";
import type { EngineStore } from "../persistence/engine-store.js";
import {
  STORAGE_REFUSED,
  storedStepId,
  type ErrorInfo,
  type RunState,
  type TaskState,
} from "../model/run-state.js";
import { checkStartInput, type Definitions } from "./definitions.js";
import { ChildRuns } from "./children.js";
import { DEFAULT_PRIORITY_AGEING_MS, Dispatcher, type SessionHandle } from "./dispatcher.js";
import { type ExecutorView, describeSessions } from "./executors.js";
import { ExecutorSessions } from "./executor-sessions.js";
import { EngineTimers, commitWithin } from "./engine-timers.js";
import { lifecycleEvent } from "../persistence/outbox.js";
import { KeyedStarts } from "./keyed-starts.js";
import { LeasePump } from "./lease-pump.js";
import { cancelMessage } from "./messages.js";
import { OutputReader } from "./offloaded-outputs.js";
import { UnservedTypes } from "./pending.js";
import { SessionLiveness } from "./session-liveness.js";
import { Watchers } from "./watchers.js";
import { DurableWaits } from "./waits.js";
import { Parking, type ParkingOptions } from "./parking.js";
import { PartitionRuns, type HeldPartitions } from "./partition-load.js";
import type { ParkedRunStore } from "../persistence/parked-runs.js";
import { RateLimitAdmin, RateLimitPauses, storeHandlerPause } from "./rate-limit-admin.js";
import { confineCall, faultConfinement, faultSoon, type Confine } from "./faults.js";
import { dropRun } from "./dropped-runs.js";
import { RERUN_OF_LABEL, type RerunRunInput, rerunStart } from "./reruns.js";
import { AttemptSpans, inRunSpan, tracedWrites } from "./tracing.js";
import type { StartRunInput } from "../model/start-run.js";

export type { Rejection };
export type { RateLimitView } from "./rate-limit-admin.js";
export { RERUN_OF_LABEL, type RerunRunInput } from "./reruns.js";

/** Options of the {@link Engine}. */
export interface EngineOptions {
  /** Where runs, tasks, attempts and events are stored, and recovery reads. */
  store: EngineStore;
  /** Workflow definitions. */
  definitions: Definitions;
  log: Logger;
  /** How often executors should heartbeat. @default 2000 */
  heartbeatIntervalMs?: number;
  /** Silence after which a session is dead, and grace before its leases expire. @default 10000 */
  sessionTimeoutMs?: number;
  /** Longest wait for a commit before an API call answers UNAVAILABLE. @default 5000 */
  commitTimeoutMs?: number;
  /**
   * Longest wait of a call for a run (CancelRun, SignalRun) for the load of its partition, just
   * taken, before it answers UNAVAILABLE. @default 10000
   */
  partitionLoadWaitMs?: number;
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
  /**
   * The time waited that is worth one step priority level: a ready task waits at most this long
   * per level above its own before it is leased first (ageing, so that nothing starves).
   * @default 10000
   */
  priorityAgeingMs?: number;
  /**
   * When the restart began (`performance.now()`), e.g. when the scheduler started taking the
   * database: the leases recovery finds expire one session timeout after it unless reclaimed.
   * @default the moment {@link Engine.start} is called
   */
  restartedAt?: number;
  /** Runs that only wait leave memory, their rows in `store` (engine/parking.ts). @default none */
  parking?: (ParkingOptions & { store: ParkedRunStore }) | undefined;
  /** The partitions this replica holds: its runs are theirs (partition-load.ts). @default every run */
  partitions?: HeldPartitions | undefined;
  /**
   * A rate limit pause or resume made here was stored (an operator's, a handler's): in a cluster,
   * the other replicas are told to take it ({@link RateLimitAdmin.sync}). @default nothing
   */
  rateLimitPaused?: (() => void) | undefined;
}

/** Engine lifecycle. */
export type EngineState = "CREATED" | "RECOVERING" | "RUNNING" | "STOPPING" | "STOPPED";

/** Input of {@link Engine.startRun}. */
export type { StartRunInput };

/** How long a Started report may wait for another commit to ride along with. */
const STARTED_FLUSH_DELAY_MS = 20;

const ignore = (): undefined => undefined;

/** The scheduler's engine (see the module comment). */
export class Engine {
  private readonly log: Logger;
  private readonly store: EngineStore;
  /** Workflow definitions. */
  readonly definitions: Definitions;
  /** Sessions and ready queues (read through sessions() and waitingTasks()). */
  private readonly dispatcher: Dispatcher;
  /** The rules' state and where their effects go. */
  private readonly core: Core;
  /** StartRun calls with an idempotency key. */
  private readonly keyed: KeyedStarts;
  /** Logs task types with ready tasks that no executor advertises. */
  private readonly unserved: UnservedTypes;
  /** The rules' timers, and the grace timers of leases without a session. */
  private readonly timers: EngineTimers;
  private readonly watchers = new Watchers();
  private readonly outputs: OutputReader;
  private readonly children: ChildRuns;
  private readonly leases: LeasePump;
  /** Attempt spans (tracing on only: with tracing off the effects take no detour). */
  private readonly spans = tracingEnabled() ? new AttemptSpans() : undefined;
  /** Runs with completions not yet evaluated; evaluated once per event-loop turn. */
  private readonly dirtyRuns = new Set<RunState>();
  private advanceScheduled = false;
  private livenessTimer: NodeJS.Timeout | undefined;
  private readonly liveness: SessionLiveness;
  /** The attached sessions: attach, credit, drain, detach (executor-sessions.ts). */
  private readonly executorSessions: ExecutorSessions;
  /** Heartbeat interval told to executors. */
  readonly heartbeatIntervalMs: number;
  /** Session timeout told to executors. */
  readonly sessionTimeoutMs: number;
  /** Signals and events for the waits of the active runs (waits.ts). */
  readonly waits: DurableWaits;
  /** Runs that only wait, out of memory (parking.ts); undefined: every active run stays. */
  readonly parking: Parking | undefined;
  /** The runs of the partitions held: loaded as they are taken, unloaded as they go. */
  readonly partitions: PartitionRuns;
  private readonly commitTimeoutMs: number;
  private readonly restartedAt: number | undefined;
  private stateValue: EngineState = "CREATED";
  private stopping: Promise<void> | undefined;
  /** Pauses made here and taken from the store (rate-limit-admin.ts). */
  private readonly pauses: RateLimitPauses;
  /** The rate limits as RateLimitService, a cluster's notifications and the metrics see them. */
  readonly rateLimits: RateLimitAdmin;
  /** Rules applied to a run, a fault (a throw) confined to that run (faults.ts). */
  private readonly confined: Confine;

  constructor(options: EngineOptions) {
    this.log = options.log;
    this.store = options.store;
    this.definitions = options.definitions;
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? 2000;
    this.sessionTimeoutMs = options.sessionTimeoutMs ?? 10_000;
    this.commitTimeoutMs = options.commitTimeoutMs ?? 5000;
    this.dispatcher = new Dispatcher(options.priorityAgeingMs ?? DEFAULT_PRIORITY_AGEING_MS, (task, now) =>
      core.admitQueued(this.core, task, now),
    );
    this.restartedAt = options.restartedAt;
    this.pauses = new RateLimitPauses(options.rateLimitPaused);
    this.confined = faultConfinement({
      log: options.log,
      core: () => this.core,
      drop: (runId, cause, error) => this.refused(runId, cause, error),
    });
    this.unserved = new UnservedTypes({ log: options.log });
    this.timers = new EngineTimers({
      live: () => this.stateValue === "RUNNING" || this.stateValue === "RECOVERING",
      fired: (timer) =>
        this.confined(core.timerRun(this.core, timer), () =>
          core.timerFired(this.core, timer, this.moment()),
        ) ?? false,
      leaseExpired: (task) =>
        this.log.warn(
          { task_run_id: task.id, task: task.stepId, executor_id: task.executorId },
          "lease expired: executor lost",
        ),
      runLeft: (run) => this.spans?.runLeft(run),
    });
    this.leases = new LeasePump({
      log: options.log,
      dispatcher: this.dispatcher,
      store: this.store,
      unserved: this.unserved,
      watchers: this.watchers,
      core: () => this.core,
      running: () => this.stateValue === "RUNNING",
      traceContext: (task, run) => this.spans?.traceContext(task, run),
      confine: (run, fn) => this.confined(run, fn),
    });
    this.outputs = new OutputReader({
      log: options.log,
      resolve: options.resolveOutput,
      live: () => this.stateValue === "RUNNING" || this.stateValue === "RECOVERING",
      stopping: () => this.stateValue === "STOPPING" || this.stateValue === "STOPPED",
      after: (ms, fn) => this.timers.after(ms, fn),
      resolved: (task, value) => core.outputResolved(this.core, task, value, new Date()),
      unavailable: (task, reason) => core.outputUnavailable(this.core, task, reason, new Date()),
      confine: (task, fn) => void this.confined(this.core.runs.get(task.runId), fn),
    });
    this.children = new ChildRuns({
      store: this.store,
      definitions: this.definitions,
      log: options.log,
      core: () => this.core,
      live: () => this.stateValue === "RUNNING" || this.stateValue === "RECOVERING",
      confine: (run, fn) => this.confined(run, fn),
    });
    this.keyed = new KeyedStarts(
      { lookup: (name, key, notBefore) => this.store.lookupKey(name, key, notBefore) },
      options.idempotencyKeyRetentionMs ?? 24 * 60 * 60 * 1000,
      (runId) => this.committed([runId]),
    );
    this.store.listen({
      committed: (changes) => {
        this.parking?.touched(changes.runIds);
        for (const runId of changes.runIds) this.watchers.notify(runId);
        if (changes.events > 0) this.watchers.eventsCommitted();
      },
      refused: (runId, error) => this.refused(runId, error),
    });
    this.core = {
      runs: new Map(),
      tasks: new Map(),
      sessions: this.dispatcher.sessions,
      fairShares: this.dispatcher.shares,
      fx: this.effects(),
      sessionTimeoutMs: this.sessionTimeoutMs,
      newId: () => this.partitions.newId(),
    };
    this.rateLimits = new RateLimitAdmin({
      core: this.core,
      store: this.store,
      pauses: this.pauses,
      assertRunning: () => this.assertRunning(),
      running: () => this.stateValue === "RUNNING",
    });
    // What parking and the partitions' runs both need of the engine.
    const host = {
      core: this.core,
      store: this.store,
      definitions: this.definitions,
      log: options.log,
      children: this.children,
      keyed: this.keyed,
      timers: this.timers,
      dirty: this.dirtyRuns,
      live: () => this.stateValue === "RUNNING" || this.stateValue === "RECOVERING",
      moment: () => this.moment(),
      owns: (runId: string) => this.partitions.owns(runId),
      heldAt: (runId: string) => this.partitions.heldAt(runId),
    };
    const parking = options.parking;
    this.parking = parking && new Parking({ ...host, parking }, parking);
    this.partitions = new PartitionRuns({
      ...host,
      parking: this.parking,
      partitions: options.partitions,
      unserved: this.unserved,
      pump: () => this.schedulePump(),
      sessionTimeoutMs: this.sessionTimeoutMs,
      heartbeatIntervalMs: this.heartbeatIntervalMs,
      loadWaitMs: options.partitionLoadWaitMs ?? 10_000,
    });
    this.executorSessions = new ExecutorSessions({
      core: this.core,
      dispatcher: this.dispatcher,
      unserved: this.unserved,
      log: options.log,
      confined: this.confined,
      judges: (runId) => this.partitions.judges(runId),
      moment: () => this.moment(),
      pump: () => this.schedulePump(),
      stopping: () => this.stateValue === "STOPPING" || this.stateValue === "STOPPED",
    });
    this.liveness = new SessionLiveness({
      core: this.core,
      log: options.log,
      sessionTimeoutMs: this.sessionTimeoutMs,
      sessions: () => this.dispatcher.sessions.values(),
      moment: () => this.moment(),
      detach: (session) => this.detachSession(session),
      judges: (runId) => this.partitions.judges(runId),
      pump: () => this.schedulePump(),
      confine: (run, fn) => this.confined(run, fn),
    });
    this.waits = new DurableWaits({
      core: this.core,
      log: options.log,
      assertRunning: () => this.assertRunning(),
      committed: (runIds) => this.committed(runIds),
      parking: this.parking,
      confine: (run, fn) => this.confined(run, fn),
      load: (runId) => this.load(runId),
    });
  }

  /** Current lifecycle state. */
  get state(): EngineState {
    return this.stateValue;
  }

  /** The store's health as metrics read it (false while commits fail). */
  get writerHealthy(): boolean {
    return this.store.isHealthy;
  }

  /** The tasks of `type` still QUEUED, oldest first (read-only; for metrics). */
  waitingTasks(type: string): readonly Readonly<TaskState>[] {
    return this.dispatcher.waiting(type);
  }

  /** The attached executor sessions (read-only; for tests and metrics). */
  sessions(): readonly Readonly<SessionHandle>[] {
    return [...this.dispatcher.sessions.values()];
  }

  /** The attached executor sessions as ListExecutors shows them (see executors.ts). */
  executors(): ExecutorView[] {
    return describeSessions(this.dispatcher.sessions.values(), {
      taskType: (id) => this.core.tasks.get(id)?.type,
      queued: (type) => this.dispatcher.waiting(type).length,
      wallNow: Date.now(),
      monoNow: performance.now(),
    });
  }

  /** How the engine carries out the rules' effects. */
  private effects(): Effects {
    const store = this.store;
    const spans = this.spans;
    const fx: Effects = {
      writeRun: (run) => store.markRun(run),
      writeTask: (task) => store.markTask(task),
      writeAttempt: (attempt) => store.markAttempt(attempt),
      // The run row is not rewritten for an event: its event_seq rides along whenever the run
      // itself changes, recovery continues from the higher of that and the outbox, and the relay
      // prunes only events the run row covers, so a sequence number is never reused.
      event: (run, event) => store.addEvent(lifecycleEvent(run, event)),
      offer: (task, front) => {
        // Its step's (a compensation's too) priority; its rate limits' keys, if the step declares
        // any, are evaluated when the task would first be leased (a compensation is not limited).
        const step = this.core.runs.get(task.runId)?.workflow.stepsById.get(task.stepId);
        if (task.rate === undefined && task.kind === "STEP" && (step?.rateLimits?.length ?? 0) > 0)
          task.rate = null;
        const path = core.sharePath(this.core, task);
        if (front) this.dispatcher.requeue(task, path);
        else this.dispatcher.enqueue(task, step?.priority ?? 0, path);
      },
      pump: () => this.schedulePump(),
      cancelLease: (task, reason) => {
        const session = task.sessionId === null ? undefined : this.dispatcher.sessions.get(task.sessionId);
        // A task already out of memory is being unloaded (core/unload.ts): its partition moved.
        session?.send(cancelMessage(task, reason, this.core.tasks.get(task.id) !== task));
      },
      leaseEnded: (task) => this.timers.leaseEnded(task),
      setTimer: (timer, delayMs) => this.timers.set(timer, delayMs),
      pauseRateLimit: (bucket) => storeHandlerPause(this.store, this.pauses, this.log, bucket),
      resolveOutput: (task) => this.outputs.read(task),
      advanceSoon: (run) => this.advanceSoon(run),
      startChild: (run, task) => void this.children.start(run.id, storedStepId(task)),
      rollbackChild: (run, task, childId) => void this.children.rollBack(run.id, task.stepId, childId),
      runEnded: (run) => {
        // Once committed, the run lives only in the database (and a parked parent learns it).
        const tellParent = this.parking?.childEnding(run);
        this.partitions.whenCommitted([run.id], () => {
          spans?.runEnded(run);
          core.forgetRun(this.core, run);
          this.keyed.forget(run);
          tellParent?.();
        });
      },
      commit: () => void store.flush().catch(ignore),
      commitSoon: () => store.flushSoon(STARTED_FLUSH_DELAY_MS),
      fault: (run, error) => faultSoon(this.log, this.core, this.confined, run, error),
    };
    // Tracing on: attempt spans follow the attempts written, events carry their span's context.
    return spans === undefined ? fx : { ...fx, ...tracedWrites(spans, store, () => this.core) };
  }

  /** Per task type, the tenants with the most ready tasks, with their leases (metrics; fair-shares.ts). */
  readonly fairShareStats = (): core.FairShareStat[] => core.fairShareStats(this.dispatcher.shares);

  /** The time of an input. */
  private moment(): Moment {
    return { now: new Date(), mono: performance.now(), jitter: Math.random() };
  }

  // ---------------------------------------------------------------- lifecycle

  /** Rebuilds the in-memory model from the store and starts the timers. */
  async start(): Promise<void> {
    if (this.stateValue !== "CREATED") throw new Error(`engine cannot start from ${this.stateValue}`);
    this.stateValue = "RECOVERING";
    await this.partitions.recoverAll(this.restartedAt ?? performance.now());
    this.livenessTimer = setInterval(
      () => {
        this.unserved.tick((type) => this.dispatcher.waiting(type).length);
        this.liveness.tick();
      },
      Math.max(100, Math.floor(this.heartbeatIntervalMs / 2)),
    );
    this.stateValue = "RUNNING";
    this.parking?.start();
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
    this.parking?.stop();
    this.timers.clear();
    for (const s of this.dispatcher.sessions.values()) s.close("scheduler shutting down");
    await this.store.close();
    this.stateValue = "STOPPED";
  }

  /** Waits for the commit so far, or UNAVAILABLE; given `runIds`, see PartitionRuns.flushFor. */
  private committed(runIds?: readonly string[]): Promise<void> {
    const flushed = runIds === undefined ? this.store.flush() : this.partitions.flushFor(runIds);
    return commitWithin(flushed, this.commitTimeoutMs);
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
    if (this.spans === undefined) return this.createRun(req, hash, null);
    return inRunSpan(
      req.workflowName,
      (traceParent) => this.createRun(req, hash, traceParent),
      (runId) => this.core.runs.get(runId),
    );
  }

  private async createRun(
    req: StartRunInput,
    hash: string | null,
    traceParent: string | null,
  ): Promise<{ runId: string; created: boolean }> {
    const def = await this.definitions.resolve(req.workflowName, req.workflowVersion);
    checkStartInput(def.workflow, req.input ?? null);
    this.partitions.assertKeyStays(req.workflowName, req.idempotencyKey);
    return this.startStored({
      definitionId: def.id,
      workflow: def.workflow,
      input: req.input ?? null,
      idempotencyKey: req.idempotencyKey === "" ? null : req.idempotencyKey,
      requestHash: hash,
      labels: req.labels,
      traceParent,
    });
  }

  /**
   * Starts a run (StartRun, RerunRun) and answers once it is committed. A fault in its rules
   * fails it SCHEDULER_ERROR (faults.ts) and the call answers INTERNAL; a run refused by
   * PostgreSQL, or dropped after a fault, before that commit was never stored (see refused).
   */
  private async startStored(start: Omit<core.RunStart, "id">): Promise<{ runId: string; created: boolean }> {
    const id = this.core.newId();
    const run = confineCall(
      this.confined,
      () => this.core.runs.get(id),
      "the run did not start",
      () => core.startRun(this.core, { ...start, id }, new Date()),
    );
    this.keyed.remember(run);
    await this.committed([run.id]);
    if (run.error?.type === STORAGE_REFUSED)
      throw new ApiError(Code.INVALID_ARGUMENT, `the run was not created: ${run.error.message}`);
    if (run.error?.type === TaskErrorType.SCHEDULER_ERROR && !this.store.isStored(run))
      throw new ApiError(Code.INTERNAL, `the run was not created: ${run.error.type}: ${run.error.message}`);
    return { runId: run.id, created: true };
  }

  /** A run that cannot go on leaves memory and is ended in storage (dropped-runs.ts). */
  private refused(runId: string, cause: Error, error?: ErrorInfo): void {
    const { core, store, log, keyed, watchers, dirtyRuns } = this;
    dropRun({ core, store, log, keyed, watchers, dirtyRuns }, runId, cause, error);
  }

  /**
   * RerunRun (core/reruns.ts): a new run of the original's workflow version and input that takes
   * over the steps the plan reuses and runs `fromStep` and everything downstream again, labelled
   * as the original plus `rerun-of`. An idempotency key (in the workflow's StartRun key space)
   * answers with the run it started for the same request, ALREADY_EXISTS for another.
   */
  async rerunRun(req: RerunRunInput): Promise<{ runId: string; created: boolean }> {
    this.assertRunning();
    if (this.core.runs.has(req.original.id))
      throw new ApiError(
        Code.FAILED_PRECONDITION,
        `run ${req.original.id} is still active: rerun it once it has ended (or cancel it first)`,
      );
    const labels = { ...req.original.labels, [RERUN_OF_LABEL]: req.original.id };
    const start = (hash: string | null): Promise<{ runId: string; created: boolean }> =>
      this.createRerun(req, labels, hash);
    if (req.idempotencyKey === "") return start(null);
    return this.keyed.start(
      {
        workflowName: req.original.workflowName,
        idempotencyKey: req.idempotencyKey,
        input: { rerunOf: req.original.id, fromStep: req.fromStep, stepInput: req.stepInput ?? null },
        labels,
      },
      start,
    );
  }

  private async createRerun(
    req: RerunRunInput,
    labels: Record<string, string>,
    hash: string | null,
  ): Promise<{ runId: string; created: boolean }> {
    const start = await rerunStart(this.definitions, req, labels, hash);
    this.partitions.assertKeyStays(req.original.workflowName, req.idempotencyKey);
    return this.startStored(start);
  }

  /**
   * Cancels a run: pending work is cancelled, leased tasks are told to stop. With `compensate`,
   * the compensations of the steps that succeeded run afterwards. Idempotent; a run that is
   * already rolling back keeps rolling back.
   */
  async cancelRun(runId: string, reason: string, compensate = false): Promise<void> {
    this.assertRunning();
    const run = await this.load(runId);
    if (run === undefined) return;
    // Loading it (a parked run, a partition just taken) may have outlasted the engine's run.
    this.assertRunning();
    // A fault in its rules fails it SCHEDULER_ERROR (faults.ts), and the call answers INTERNAL.
    const cancel = (): boolean => core.cancelRun(this.core, run, reason, compensate, new Date());
    if (!confineCall(this.confined, run, `run ${runId} was not cancelled`, cancel)) return;
    await this.committed([runId]);
  }

  private assertRunning(): void {
    if (this.stateValue !== "RUNNING")
      throw new ApiError(Code.UNAVAILABLE, `the scheduler is ${this.stateValue.toLowerCase()}`);
    if (!this.store.isHealthy) throw new UnavailableError("the database is unavailable; retry shortly");
  }

  /** Evaluates `run` once the reports already received have been applied, then commits. */
  private advanceSoon(run: RunState): void {
    this.dirtyRuns.add(run);
    if (this.advanceScheduled) return;
    this.advanceScheduled = true;
    setImmediate(() => {
      this.advanceScheduled = false;
      const runs = [...this.dirtyRuns];
      this.dirtyRuns.clear();
      const now = new Date();
      for (const r of runs) this.confined(r, () => core.advance(this.core, r, now));
      void this.store.flush().catch(ignore);
    });
  }

  // ---------------------------------------------------------------- leases

  private schedulePump(): void {
    this.leases.schedule();
  }

  /**
   * Why a task is not running, in one line (TaskRun.pending_reason): the gates that hold it now
   * (core/explain.ts), "" for a task nothing holds or that is not active here. The executor gates
   * are what the latest scheduling pass recorded for its type from the sessions attached to this
   * process (in memory, not stored: a restarted scheduler learns them again as executors
   * reconnect).
   */
  pendingReason(taskRunId: string): string {
    const task = this.core.tasks.get(taskRunId);
    const run = task === undefined ? undefined : this.core.runs.get(task.runId);
    if (task === undefined || run === undefined) return "";
    return core.pendingReason(core.explainPending(run, task, undefined, new Date()));
  }

  /**
   * ExplainPending for an active run: its step's task (or the step's compensation) and every
   * gate that holds it now; undefined when the run is not active here (finished, or unknown).
   * `task` is undefined when the run has no such task (no such step, or no compensation of it yet).
   */
  explainPending(
    runId: string,
    stepId: string,
    compensation: boolean,
  ):
    | { run: Readonly<RunState>; task: Readonly<TaskState> | undefined; gates: core.Gate[]; at: Date }
    | undefined {
    const run = this.core.runs.get(runId);
    if (run === undefined) return undefined;
    const task = compensation ? run.compensations.get(stepId) : run.tasks.get(stepId);
    const at = new Date();
    if (task === undefined) return { run, task, gates: [], at };
    return {
      run,
      task,
      gates: core.explainPending(run, task, () => this.dispatcher.ahead(task), at),
      at,
    };
  }

  /** A report's rules applied by `fn` and judged; a fault fails its run if the lease is this session's. */
  private report(
    session: SessionHandle,
    key: LeaseKey | undefined,
    fn: () => Rejection | null,
  ): Rejection | null {
    const task = key === undefined ? undefined : this.core.tasks.get(key.taskRunId);
    const run = task?.sessionId === session.id ? this.core.runs.get(task.runId) : undefined;
    return this.partitions.judged(key, this.confined(run, fn) ?? null);
  }

  /** Started report. */
  onStarted(session: SessionHandle, key: LeaseKey | undefined): Rejection | null {
    return this.report(session, key, () => core.started(this.core, session, key, this.moment()));
  }

  /** Heartbeat report for a task. */
  onHeartbeat(session: SessionHandle, key: LeaseKey | undefined): Rejection | null {
    return this.report(session, key, () => core.heartbeat(this.core, session, key, this.moment()));
  }

  /** Completed report: accepted at most once per task. */
  onCompleted(
    session: SessionHandle,
    key: LeaseKey | undefined,
    output: unknown,
    outputRef: unknown,
    logs: unknown,
  ): Rejection | null {
    return this.report(session, key, () =>
      core.completed(this.core, session, key, output, outputRef, logs, this.moment()),
    );
  }

  /** Failed report: retried per policy or failed for good. */
  onFailed(
    session: SessionHandle,
    key: LeaseKey | undefined,
    error: ErrorInfo,
    retryAfterMs: number,
    logs: unknown,
    pauseKeyUntilMs = 0,
  ): Rejection | null {
    return this.report(session, key, () =>
      core.failed(this.core, session, key, error, retryAfterMs, logs, this.moment(), pauseKeyUntilMs),
    );
  }

  /** Release report: the lease goes back to the front of the queue without counting as a failure. */
  onRelease(session: SessionHandle, key: LeaseKey | undefined, reason: string): Rejection | null {
    return this.report(session, key, () => core.released(this.core, session, key, reason, this.moment()));
  }

  // ---------------------------------------------------------------- sessions

  /**
   * Resolves once everything changed so far is committed (a session acknowledges its reports
   * with it); rejects when the store closes first.
   */
  whenCommitted(): Promise<void> {
    return this.store.flush();
  }

  /**
   * Registers an attached session (its executor id already authorised); returns the held leases
   * that are no longer valid (executor-sessions.ts).
   */
  attach(session: SessionHandle, held: readonly LeaseKey[]): LeaseKey[] {
    return this.executorSessions.attach(session, held);
  }

  /** Credit report. */
  onCredit(session: SessionHandle, n: number): Rejection | null {
    return this.executorSessions.credit(session, n);
  }

  /** Drain report: no more leases on this session; returns the leases it still holds. */
  onDrain(session: SessionHandle): number {
    return this.executorSessions.drain(session);
  }

  /** The session's stream ended: its leases wait for a reconnect until the session timeout. */
  detachSession(session: SessionHandle): void {
    this.executorSessions.detach(session);
  }

  /** A Pong (SessionLiveness.onPong: an answer listing the executor's leases expires those it leaves out). */
  onPong(session: SessionHandle, nonce: bigint, held: readonly LeaseKey[] | undefined): number {
    return this.liveness.onPong(session, nonce, held);
  }

  // ---------------------------------------------------------------- watching

  /** Calls `listener` after each commit that touched the run. Returns the unsubscribe function. */
  watch(runId: string, listener: () => void): () => void {
    return this.watchers.watch(runId, listener);
  }

  /** Calls `listener` after each commit that wrote lifecycle events (wakes the outbox relay). */
  onEventsCommitted(listener: () => void): void {
    this.watchers.onEvents(listener);
  }

  /** The in-memory state of an active run (a read-only view for API responses). */
  activeRun(runId: string): Readonly<RunState> | undefined {
    return this.core.runs.get(runId);
  }

  /**
   * The active run `runId`, loaded back when parked (parking.ts); undefined when not active here.
   * A run of a partition just taken is waited for while its runs are read (PartitionRuns.settled:
   * UNAVAILABLE when that outlasts `partitionLoadWaitMs`).
   */
  async load(runId: string): Promise<Readonly<RunState> | undefined> {
    const run = this.core.runs.get(runId);
    if (run !== undefined) return run;
    await this.partitions.settled(runId);
    return this.core.runs.get(runId) ?? (await this.parking?.load(runId));
  }

  /** Whether the run is still active in memory. */
  isActive(runId: string): boolean {
    return this.core.runs.has(runId);
  }

  /** Counts, for logs and metrics. */
  stats(): { activeRuns: number; sessions: number; queued: Record<string, number> } {
    return {
      activeRuns: this.core.runs.size,
      sessions: this.dispatcher.sessions.size,
      queued: this.dispatcher.depth(),
    };
  }
}

/** A workflow's concurrency keys must be strings or numbers for `input`: INVALID_ARGUMENT naming the key otherwise. */
