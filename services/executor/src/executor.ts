/**
 * The executor: holds one Session stream to the scheduler, grants credit for its free slots, runs
 * every leased task with its registered handler and reports back. It survives a broken stream
 * (reconnect with backoff, running tasks keep running and are re-claimed as held leases, reports
 * made meanwhile are delivered after the next AttachAck) and drains on `stop()`.
 *
 * Lifecycle: IDLE -> CONNECTING <-> ATTACHED -> DRAINING -> STOPPED, one union of states that carry
 * their own data (executor-state.ts); a session's own states are in scheduler-session.ts.
 */
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type Logger, SESSION_PROTOCOL_VERSION } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import {
  type AttachAck,
  AttachSchema,
  CreditSchema,
  DrainSchema,
  HeartbeatSchema,
  type Lease,
  type LeaseKey,
  LeaseKeySchema,
  PongSchema,
  type Rejected,
  ReleaseSchema,
  type SessionResponse,
  StartedSchema,
} from "@nexusflow/gen";
import { within } from "./changes.js";
import { ExecutorError } from "./errors.js";
import {
  type ExecutorState,
  type Run,
  type StartWaiter,
  type State,
  attached,
  attachedBefore,
  closing,
  draining,
  opened,
  publicState,
  reconnects,
  sessionEnded,
  sessionOf,
  takesWork,
} from "./executor-state.js";
import {
  type HandlerOptions,
  HandlerRegistry,
  type TaskHandler,
  registerBuiltins,
} from "./handlers/index.js";
import { type CompiledExecutorOptions, type ExecutorOptions, compileExecutorOptions } from "./options.js";
import { toValue } from "./payload.js";
import { type Report, ReportLedger, type SendReport } from "./report-ledger.js";
import {
  type RequestMessage,
  type SessionCall,
  SchedulerSession,
  type SessionEnd,
  openSessionCall,
} from "./scheduler-session.js";
import { RunningTasks, describeKey } from "./running-tasks.js";
import { advertisedTypes, servedHandler } from "./served-types.js";
import { runSessionLoop } from "./session-loop.js";
import { type AttemptOutcome, type TaskAttempt, leaseKeyId } from "./task-attempt.js";
import { TaskError } from "./handlers/task-error.js";
import { outcomeReport } from "./task-reports.js";
import { TurnBatch } from "./turn-batch.js";

export type { ExecutorState } from "./executor-state.js";

/** Called on every state change. */
export type StateListener = (state: ExecutorState, previous: ExecutorState) => void;

export { FATAL_ATTACH_CODES } from "./session-loop.js";

/** Used when AttachAck carries no heartbeat interval. */
const DEFAULT_HEARTBEAT_INTERVAL_MS = 2_000;
/** How long `stop()` waits for the scheduler to end the stream after the executor half-closed it. */
const CLOSE_TIMEOUT_MS = 2_000;

function hasKey(lease: Lease): lease is Lease & { key: LeaseKey } {
  return lease.key !== undefined;
}

/**
 * Runs tasks leased by a Nexusflow scheduler.
 *
 * ```ts
 * const executor = new Executor({ schedulerAddress: "scheduler:50051", slots: 8 });
 * executor.register("billing.charge", async (input, ctx) => charge(input, { signal: ctx.signal }));
 * await executor.start();           // resolves on the first AttachAck
 * process.once("SIGTERM", () => void executor.stop("SIGTERM"));
 * ```
 */
export class Executor {
  readonly #options: CompiledExecutorOptions;
  readonly #logger: Logger;
  readonly #registry = new HandlerRegistry();
  readonly #listeners = new Set<StateListener>();
  readonly #tasks: RunningTasks;
  /** Reports until the scheduler acknowledges them: queued while detached, resent on re-attach. */
  readonly #ledger = new ReportLedger();
  #state: State = { t: "idle" };
  #advertised: readonly string[] = [];
  /** Started of attempts begun, and slots freed, in this event-loop turn: sent at its end. */
  readonly #turn = new TurnBatch((started, freed) => this.#endOfTurn(started, freed));
  /** What `stop()` returns, once called (or once the executor stopped by itself). */
  #stopped: Promise<void> | undefined;

  /** Creates an executor; throws {@link ExecutorError} `INVALID_OPTIONS` for a bad option. */
  constructor(options: ExecutorOptions = {}) {
    this.#options = compileExecutorOptions(options);
    this.#logger = this.#options.logger.child({ executor_id: this.#options.executorId });
    if (this.#options.builtins !== false) registerBuiltins(this.#registry, this.#options.builtins);
    const { logSink, maxPayloadBytes, artifacts, offloadThresholdBytes, maxOffloadBytes } = this.#options;
    this.#tasks = new RunningTasks({
      logger: this.#logger,
      attempts: {
        logSink,
        maxPayloadBytes,
        artifacts,
        offload:
          artifacts === undefined
            ? undefined
            : { store: artifacts, thresholdBytes: offloadThresholdBytes, maxBytes: maxOffloadBytes },
        sendHeartbeat: (key, progress) => {
          const value = create(HeartbeatSchema, { key });
          if (progress !== undefined) value.progress = toValue(progress);
          // With the turn's reports; dropped when not attached (worthless later).
          this.#liveSession()?.report({ case: "heartbeat", value });
        },
      },
      handlerFor: (type) => servedHandler(this.#registry, this.#advertised, type),
      onDone: (attempt, outcome) => this.#onTaskDone(attempt, outcome),
    });
  }

  /** The current lifecycle state. */
  get state(): ExecutorState {
    return publicState(this.#state);
  }

  /** The handlers, built-ins included; register (or load a module into it) before `start()`. */
  get registry(): HandlerRegistry {
    return this.#registry;
  }

  /** Id of the attached session, while attached. */
  get sessionId(): string | undefined {
    return sessionOf(this.#state)?.id;
  }

  /** The task types advertised to the scheduler (empty before `start()`). */
  get taskTypes(): readonly string[] {
    return this.#advertised;
  }

  /** Tasks running now. */
  get runningTasks(): number {
    return this.#tasks.size;
  }

  /** Registers the handler of a task type; see `HandlerRegistry.register`. Only before `start()`. */
  register<I, O>(type: string, handler: TaskHandler<I, O>, options?: HandlerOptions): this {
    if (this.#state.t !== "idle") {
      throw new ExecutorError(
        "ALREADY_STARTED",
        `cannot register task type "${type}": the executor has already started`,
      );
    }
    this.#registry.register(type, handler, options);
    return this;
  }

  /** Calls `listener` on every state change; returns a function that unsubscribes it. */
  onStateChange(listener: StateListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Opens the session and keeps it open (reconnecting with backoff) until {@link Executor.stop}.
   * Resolves on the first AttachAck, however many attempts that takes. Rejects with an
   * {@link ExecutorError}: `ALREADY_STARTED`; `UNKNOWN_TASK_TYPES` when `taskTypes` names an
   * unregistered type; `ATTACH_REFUSED` when the scheduler refuses the first session with one of
   * {@link FATAL_ATTACH_CODES} (the executor is then STOPPED); `STOPPED` when `stop()` is called
   * before the first attach. Always handle the returned promise.
   */
  start(): Promise<void> {
    if (this.#state.t !== "idle") {
      return Promise.reject(new ExecutorError("ALREADY_STARTED", "start() was already called"));
    }
    let client: grpc.Client;
    try {
      this.#advertised = advertisedTypes(this.#registry, this.#options.taskTypes);
      const { schedulerAddress, credentials, channelOptions } = this.#options;
      client = new grpc.Client(schedulerAddress, credentials, channelOptions);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    const run: Run = { client, closing: new AbortController(), loop: Promise.resolve(), sessions: 0 };
    const firstAttach = new Promise<void>((resolve, reject) => {
      this.#enter({ t: "connecting", run, session: undefined, start: { resolve, reject } });
    });
    this.#logger.debug(
      { scheduler_address: this.#options.schedulerAddress, task_types: this.#advertised },
      "connecting to the scheduler",
    );
    run.loop = this.#connectLoop(run).catch((e: unknown) => {
      // Not expected: the loop handles every stream outcome. Fail loudly rather than hang.
      this.#logger.error({ err: e }, "the session loop failed");
      this.#pendingStart()?.reject(e instanceof Error ? e : new Error(String(e)));
    });
    return firstAttach;
  }

  /**
   * Drains and stops: sends Drain (with `reason`, e.g. "SIGTERM"), takes no new tasks (leases
   * still arriving are Released), waits up to `drainTimeoutMs` for running tasks, then aborts the
   * rest with a retryable EXECUTOR_SHUTDOWN error (reported as Failed; a handler that ignores its
   * signal for `abortGraceMs` is reported failed without it), delivers the remaining reports,
   * closes the stream and the client. Idempotent; never rejects.
   */
  stop(reason = "stop"): Promise<void> {
    this.#stopped ??= this.#shutdown(reason).catch((e: unknown) => {
      this.#logger.error({ err: e }, "error while stopping the executor");
      const state = this.#state;
      if (state.t !== "idle" && state.t !== "stopped") {
        state.run.closing.abort();
        state.session?.cancel();
        state.run.client.close();
      }
      this.#enter({ t: "stopped" });
    });
    return this.#stopped;
  }

  // ---- lifecycle -------------------------------------------------------------------------------

  /**
   * The one place the state changes. Listeners hear of changes of the public state; nothing
   * follows STOPPED.
   */
  #enter(next: State): void {
    const previous = this.#state;
    if (previous.t === "stopped") return;
    this.#state = next;
    const [from, to] = [publicState(previous), publicState(next)];
    if (from === to) return;
    this.#logger.debug({ state: to, previous: from }, "executor state");
    for (const listener of [...this.#listeners]) {
      try {
        listener(to, from);
      } catch (e) {
        this.#logger.error({ err: e }, "a state listener threw");
      }
    }
  }

  /** `start()`, while it waits for the first AttachAck; whoever leaves that state settles it. */
  #pendingStart(): StartWaiter | undefined {
    return this.#state.t === "connecting" ? this.#state.start : undefined;
  }

  async #shutdown(reason: string): Promise<void> {
    const state = this.#state;
    if (state.t === "idle") {
      this.#enter({ t: "stopped" });
      return;
    }
    if (state.t !== "connecting" && state.t !== "attached") return;
    const { run } = state;
    const started = Date.now();
    const start = this.#pendingStart();
    this.#enter(draining(state, reason));
    start?.reject(
      new ExecutorError("STOPPED", "the executor was stopped before it attached to the scheduler"),
    );
    this.#liveSession()?.write({ case: "drain", value: create(DrainSchema, { reason }) });
    this.#logger.info({ reason, running_tasks: this.#tasks.size }, "draining");

    const { drainTimeoutMs, abortGraceMs } = this.#options;
    if (!(await within(drainTimeoutMs, (signal) => this.#tasks.whenEmpty(signal)))) {
      const error = TaskError.retryable(
        TaskErrorType.EXECUTOR_SHUTDOWN,
        `the executor is shutting down (${reason}) and the task did not finish within the drain timeout of ${drainTimeoutMs} ms`,
      );
      this.#logger.warn(
        { running_tasks: this.#tasks.size, drain_timeout_ms: drainTimeoutMs },
        "drain timeout: aborting the remaining tasks",
      );
      await this.#tasks.abortAll(error, abortGraceMs);
    }

    // Reports matter until the scheduler committed them (otherwise the task runs again after a
    // lease timeout): give the reconnect loop what is left of the drain timeout to deliver them
    // and the scheduler to acknowledge them.
    if (this.#ledger.size > 0) {
      const left = Math.max(0, drainTimeoutMs - (Date.now() - started));
      if (!(await within(left, (signal) => this.#ledger.whenEmpty(signal)))) {
        this.#logger.warn(
          { unacknowledged: this.#ledger.size },
          "stopping with unacknowledged reports; their leases will expire on the scheduler",
        );
      }
    }

    this.#enter(closing(this.#state));
    run.closing.abort();
    await sessionOf(this.#state)?.close(CLOSE_TIMEOUT_MS);
    await run.loop;
    run.client.close();
    this.#enter({ t: "stopped" });
    this.#logger.info({ reason }, "executor stopped");
  }

  // ---- the session ---------------------------------------------------------------------------

  /** Keeps a session open until the executor closes, or the scheduler refuses it for good. */
  async #connectLoop(run: Run): Promise<void> {
    const refused = await runSessionLoop({
      reconnect: this.#options.reconnect,
      logger: this.#logger,
      signal: run.closing.signal,
      wanted: () => reconnects(this.#state),
      attachedBefore: () => attachedBefore(this.#state),
      metadata: this.#options.metadata,
      openSession: (metadata) => this.#openSession(run, metadata),
    });
    if (refused !== undefined) this.#refuse(run, refused);
  }

  /** The scheduler refused the first session for good: reject start() and stop. */
  #refuse(run: Run, end: SessionEnd): void {
    const error = new ExecutorError(
      "ATTACH_REFUSED",
      `the scheduler at ${this.#options.schedulerAddress} refused the session: ${grpc.status[end.code]}: ${end.details}`,
    );
    this.#logger.error(
      { code: grpc.status[end.code], details: end.details },
      "the scheduler refused the session",
    );
    this.#stopped ??= Promise.resolve();
    run.client.close();
    const start = this.#pendingStart();
    this.#enter({ t: "stopped" });
    start?.reject(error);
  }

  /** Opens one session and resolves when it ends (never rejects). */
  #openSession(run: Run, metadata: grpc.Metadata): Promise<SessionEnd> {
    let call: SessionCall;
    try {
      call = openSessionCall(run.client, metadata);
    } catch (e) {
      const details = e instanceof Error ? e.message : String(e);
      return Promise.resolve({ attached: false, code: grpc.status.INTERNAL, details });
    }
    const session: SchedulerSession = new SchedulerSession(call, {
      number: ++run.sessions,
      attachTimeoutMs: this.#options.attachTimeoutMs,
      logger: this.#logger,
      onMessage: (response) => this.#onResponse(session, response),
      onEnd: () => this.#endSession(session),
    });
    this.#enter(opened(this.#state, session));
    session.write({
      case: "attach",
      value: create(AttachSchema, {
        executorId: this.#options.executorId,
        taskTypes: [...this.#advertised],
        slots: this.#options.slots,
        labels: { ...this.#options.labels },
        version: this.#options.version,
        heldLeases: this.#heldLeases(),
        protocolVersion: SESSION_PROTOCOL_VERSION,
      }),
    });
    return session.ended;
  }

  #endSession(session: SchedulerSession): void {
    if (sessionOf(this.#state) !== session) return;
    // Reports the scheduler may not have committed go out again on the next session, first.
    this.#ledger.detach();
    this.#enter(sessionEnded(this.#state));
  }

  /** Leases this executor still holds: running tasks and finished ones whose report is queued. */
  #heldLeases(): LeaseKey[] {
    const held = new Map<string, LeaseKey>();
    for (const key of this.#tasks.keys()) held.set(leaseKeyId(key), key);
    for (const key of this.#ledger.heldLeases()) {
      const id = leaseKeyId(key);
      if (!held.has(id)) held.set(id, key);
    }
    return [...held.values()].map((key) => create(LeaseKeySchema, key));
  }

  /** The session, if attached and not closing. */
  #liveSession(): SchedulerSession | undefined {
    const session = sessionOf(this.#state);
    return session?.live === true ? session : undefined;
  }

  /** Sends a report now, or queues it for the next attached session. */
  #report(report: Report): void {
    const session = this.#liveSession();
    this.#ledger.record(report, session === undefined ? undefined : this.#sender(session));
  }

  /**
   * Sends reports on `session` (with the turn's others, see SchedulerSession.report); acknowledged
   * ones go only through the ledger, which counts them in the order the scheduler receives them.
   */
  #sender(session: SchedulerSession): SendReport {
    return (report) => session.report(report);
  }

  /** Sends a message that is worthless later (heartbeat, credit, pong) if attached; drops it otherwise. */
  #sendLive(message: RequestMessage): void {
    this.#liveSession()?.write(message);
  }

  #onResponse(session: SchedulerSession, response: SessionResponse): void {
    if (session !== sessionOf(this.#state)) return;
    const message = response.message;
    if (message.case === "ping") {
      session.write({ case: "pong", value: create(PongSchema, { nonce: message.value.nonce }) });
      return;
    }
    if (message.case === "attachAck") {
      this.#onAttachAck(session, message.value);
      return;
    }
    if (session.id === undefined) {
      this.#logger.warn({ message: message.case }, "protocol: message before AttachAck ignored");
      return;
    }
    switch (message.case) {
      case "lease":
        this.#onLease(message.value);
        return;
      case "leases":
        // Each as if it had come alone, in order.
        for (const lease of message.value.leases) this.#onLease(lease);
        return;
      case "cancel":
        this.#tasks.cancel(message.value.key, message.value.reason);
        return;
      case "rejected":
        this.#onRejected(message.value);
        return;
      case "acked":
        this.#onAcked(Number(message.value.through));
        return;
      case "drainAck":
        this.#logger.info({ outstanding: message.value.outstanding }, "the scheduler acknowledged the drain");
        return;
      default:
        this.#logger.debug({ message: message.case }, "ignoring an unknown message from the scheduler");
    }
  }

  #onAttachAck(session: SchedulerSession, ack: AttachAck): void {
    if (session.id !== undefined) {
      this.#logger.warn("protocol: duplicate AttachAck ignored");
      return;
    }
    const interval = ack.heartbeatIntervalMs > 0 ? ack.heartbeatIntervalMs : DEFAULT_HEARTBEAT_INTERVAL_MS;
    // A session being closed stays closed: nothing more is written on it.
    if (!session.attach(ack.sessionId, interval, ack.protocolVersion)) return;
    const first = !attachedBefore(this.#state);

    // A revoked lease is a running task the scheduler gave away, or a report it already has (it
    // committed the report, but its Acked was lost with the previous session).
    let revokedTasks = 0;
    let alreadyTaken = 0;
    for (const key of ack.revoked) {
      const what = this.#revoke(key);
      if (what === "task") revokedTasks++;
      else if (what === "report") alreadyTaken++;
    }

    // The grant below covers every free slot, including those freed while detached.
    this.#turn.forgetFreedSlots();
    const delivered = this.#ledger.resend(this.#sender(session));
    const state = this.#state;
    if (state.t === "draining") {
      session.write({ case: "drain", value: create(DrainSchema, { reason: state.reason }) });
    } else {
      const free = this.#options.slots - this.#tasks.size;
      if (free > 0) session.write({ case: "credit", value: create(CreditSchema, { n: free }) });
    }
    const start = this.#pendingStart();
    this.#enter(attached(state));
    const fields = {
      sessionId: ack.sessionId,
      session: session.number,
      heldLeases: this.#tasks.size,
      revoked: revokedTasks,
      reportsAlreadyTaken: alreadyTaken,
      deliveredReports: delivered,
      heartbeatIntervalMs: interval,
      protocolVersion: ack.protocolVersion,
    };
    if (first) this.#logger.debug(fields, "attached to the scheduler");
    else this.#logger.info(fields, "re-attached to the scheduler");
    start?.resolve();
  }

  /** The scheduler committed the session's first `through` reports: forget them. */
  #onAcked(through: number): void {
    const acked = this.#ledger.ackedThrough;
    if (this.#ledger.ack(through) === "ahead") {
      this.#logger.warn(
        { through, acked, unacked: this.#ledger.unacknowledged },
        "protocol: Acked covers reports never sent; ignored",
      );
    }
  }

  /**
   * AttachAck says a held lease is gone: stop its task and never report it. Returns what the
   * lease was here: a running task, or a finished one whose report was waiting.
   */
  #revoke(key: LeaseKey): "task" | "report" | "none" {
    const dropped = this.#ledger.revoke(key);
    if (this.#tasks.revoke(key)) return "task";
    return dropped ? "report" : "none";
  }

  #onLease(lease: Lease): void {
    if (!hasKey(lease)) {
      this.#logger.warn(
        { task_type: lease.taskType, run_id: lease.runId },
        "protocol: lease without a key ignored",
      );
      return;
    }
    const key = lease.key;
    if (this.#tasks.get(key) !== undefined) {
      this.#logger.warn(describeKey(key), "protocol: duplicate lease ignored");
      return;
    }
    const state = this.#state;
    if (state.t === "draining" || state.t === "closing") {
      this.#report({
        case: "release",
        value: create(ReleaseSchema, { key, reason: `executor draining (${state.reason})` }),
      });
      return;
    }
    if (this.#tasks.size >= this.#options.slots) {
      this.#logger.warn(
        { ...describeKey(key), slots: this.#options.slots },
        "protocol: lease beyond the credit granted; releasing it",
      );
      this.#report({ case: "release", value: create(ReleaseSchema, { key, reason: "no free slot" }) });
      return;
    }
    this.#turn.started(this.#tasks.start(lease));
  }

  /** An attempt ended (it has left the table): report it, unless its lease is gone, and free its slot. */
  #onTaskDone(attempt: TaskAttempt, outcome: AttemptOutcome): void {
    const { key } = attempt;
    if (attempt.silenced) {
      this.#logger.debug(
        { ...describeKey(key), status: outcome.status },
        "task finished; not reported (its lease is gone)",
      );
    } else {
      this.#report(outcomeReport(key, outcome));
      if (outcome.status === "completed") this.#logger.debug(describeKey(key), "task completed");
      else {
        const { type: errorType, retryable } = outcome.failure;
        this.#logger.info({ ...describeKey(key), error_type: errorType, retryable }, "task failed");
      }
    }
    // A slot is free again. While disconnected nothing is sent: the next AttachAck grants every free slot.
    if (takesWork(this.#state)) this.#turn.slotFreed();
  }

  /** The end of an event-loop turn: Started of the attempts begun in it that still run, then one Credit. */
  #endOfTurn(started: readonly TaskAttempt[], freed: number): void {
    for (const a of started) {
      if (this.#tasks.reportable(a))
        this.#report({ case: "started", value: create(StartedSchema, { key: a.key }) });
    }
    if (freed > 0 && takesWork(this.#state))
      this.#sendLive({ case: "credit", value: create(CreditSchema, { n: freed }) });
  }

  #onRejected(rejected: Rejected): void {
    const fields = { ...describeKey(rejected.key), code: rejected.code, reason: rejected.message };
    this.#logger.warn(fields, "the scheduler rejected a report");
    // These codes say the lease is gone; others (a malformed report) leave the task running.
    if (
      rejected.key !== undefined &&
      (rejected.code === "FAILED_PRECONDITION" || rejected.code === "NOT_FOUND")
    )
      this.#tasks.lose(rejected.key, rejected);
  }
}
