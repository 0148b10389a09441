/**
 * The executor: holds one Session stream to the scheduler, grants credit for its free slots, runs
 * every leased task with its registered handler and reports back. It survives a broken stream
 * (reconnect with backoff, running tasks keep running and are re-claimed as held leases, reports
 * made meanwhile are delivered after the next AttachAck) and drains on `stop()`.
 *
 * Lifecycle: IDLE -> CONNECTING <-> ATTACHED -> DRAINING -> STOPPED, one union of states that carry
 * their own data (executor-state.ts); a session's own states are in scheduler-session.ts.
 */
import { type JsonValue, create } from "@bufbuild/protobuf";
import { setTimeout as delay } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "@nexusflow/common";
import {
  type AttachAck,
  AttachSchema,
  type Cancel,
  CompletedSchema,
  CreditSchema,
  DrainSchema,
  FailedSchema,
  HeartbeatSchema,
  type Lease,
  type LeaseKey,
  LeaseKeySchema,
  PongSchema,
  type Rejected,
  ReleaseSchema,
  type SessionResponse,
  StartedSchema,
  TaskErrorSchema,
} from "@nexusflow/gen";
import { backoffDelay } from "./backoff.js";
import { Changes, within } from "./changes.js";
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
  type HandlerRegistration,
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
import { type AttemptOutcome, TaskAttempt, leaseKeyId } from "./task-attempt.js";
import { TaskError, toTaskFailure } from "./task-error.js";

export type { ExecutorState } from "./executor-state.js";

/** Called on every state change. */
export type StateListener = (state: ExecutorState, previous: ExecutorState) => void;

/**
 * Status codes that, before the first attach, mean retrying cannot help (wrong address or
 * service, bad credentials, a malformed Attach): `start()` rejects instead of retrying forever.
 * After a first attach they are retried like any other break (e.g. during a scheduler upgrade).
 */
export const FATAL_ATTACH_CODES: ReadonlySet<grpc.status> = new Set([
  grpc.status.UNIMPLEMENTED,
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.INVALID_ARGUMENT,
]);

/** Used when AttachAck carries no heartbeat interval. */
const DEFAULT_HEARTBEAT_INTERVAL_MS = 2_000;
/** How long `stop()` waits for the scheduler to end the stream after the executor half-closed it. */
const CLOSE_TIMEOUT_MS = 2_000;

interface RunningTask {
  readonly attempt: TaskAttempt;
  readonly done: Promise<void>;
}

function hasKey(lease: Lease): lease is Lease & { key: LeaseKey } {
  return lease.key !== undefined;
}

function describeKey(key: LeaseKey | undefined): Record<string, unknown> {
  return key === undefined
    ? {}
    : { taskRunId: key.taskRunId, attempt: key.attempt, fencingToken: String(key.fencingToken) };
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
  readonly #tasks = new Map<string, RunningTask>();
  readonly #tasksChanged = new Changes();
  /** Reports until the scheduler acknowledges them: queued while detached, resent on re-attach. */
  readonly #ledger = new ReportLedger();
  #state: State = { t: "idle" };
  #advertised: readonly string[] = [];
  /** Attempts begun this event-loop turn whose Started is not sent yet. */
  #startedDue: TaskAttempt[] = [];
  /** Slots freed since credit was last sent. */
  #creditDue = 0;
  /** An end-of-turn flush of the two above is scheduled. */
  #turnScheduled = false;
  /** What `stop()` returns, once called (or once the executor stopped by itself). */
  #stopped: Promise<void> | undefined;

  /** Creates an executor; throws {@link ExecutorError} `INVALID_OPTIONS` for a bad option. */
  constructor(options: ExecutorOptions = {}) {
    this.#options = compileExecutorOptions(options);
    this.#logger = this.#options.logger.child({ executorId: this.#options.executorId });
    if (this.#options.builtins !== false) registerBuiltins(this.#registry, this.#options.builtins);
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
      this.#advertised = this.#taskTypes();
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
      { schedulerAddress: this.#options.schedulerAddress, taskTypes: this.#advertised },
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

  #taskTypes(): string[] {
    const registered = this.#registry.types();
    const wanted = this.#options.taskTypes ?? registered;
    const unknown = wanted.filter((t) => !this.#registry.has(t));
    if (unknown.length > 0) {
      throw new ExecutorError(
        "UNKNOWN_TASK_TYPES",
        `no handler is registered for task type(s) ${unknown.map((t) => JSON.stringify(t)).join(", ")} (registered: ${registered.join(", ")})`,
      );
    }
    return [...wanted].sort();
  }

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
    this.#logger.info({ reason, runningTasks: this.#tasks.size }, "draining");

    const { drainTimeoutMs, abortGraceMs } = this.#options;
    if (!(await this.#tasksDone(drainTimeoutMs))) {
      const error = TaskError.retryable(
        "EXECUTOR_SHUTDOWN",
        `the executor is shutting down (${reason}) and the task did not finish within the drain timeout of ${drainTimeoutMs} ms`,
      );
      this.#logger.warn(
        { runningTasks: this.#tasks.size, drainTimeoutMs },
        "drain timeout: aborting the remaining tasks",
      );
      for (const { attempt } of this.#tasks.values()) attempt.abort(error);
      if (!(await this.#tasksDone(abortGraceMs))) {
        for (const { attempt } of this.#tasks.values()) {
          this.#logger.warn(
            { ...describeKey(attempt.key), taskType: attempt.lease.taskType },
            "the task's handler ignores its abort signal; reporting it failed",
          );
          attempt.forceSettle(toTaskFailure(error));
        }
      }
      await Promise.all([...this.#tasks.values()].map((t) => t.done));
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

  /** Resolves true once no task runs, false after `timeoutMs`. */
  #tasksDone(timeoutMs: number): Promise<boolean> {
    return within(timeoutMs, (signal) => this.#tasksChanged.until(() => this.#tasks.size === 0, signal));
  }

  // ---- the session ---------------------------------------------------------------------------

  async #connectLoop(run: Run): Promise<void> {
    let failures = 0;
    while (reconnects(this.#state)) {
      const end = await this.#runSession(run);
      if (!reconnects(this.#state)) return;
      if (!attachedBefore(this.#state) && FATAL_ATTACH_CODES.has(end.code)) {
        this.#refuse(run, end);
        return;
      }
      failures = end.attached ? 1 : failures + 1;
      const wait = backoffDelay(failures, this.#options.reconnect);
      const fields = {
        code: grpc.status[end.code],
        details: end.details,
        attempt: failures,
        retryInMs: wait,
      };
      if (end.attached) this.#logger.warn(fields, "session with the scheduler lost; reconnecting");
      else this.#logger.warn(fields, "could not attach to the scheduler; retrying");
      try {
        await delay(wait, undefined, { signal: run.closing.signal });
      } catch {
        // stop() cut the wait short; the loop condition ends it.
      }
    }
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
  async #runSession(run: Run): Promise<SessionEnd> {
    let metadata: grpc.Metadata;
    try {
      // Made for every session: a token rotated since the last one is sent on this one.
      metadata = await this.#options.metadata();
    } catch (e) {
      return {
        attached: false,
        code: grpc.status.UNAVAILABLE,
        details: `cannot make the session's metadata: ${e instanceof Error ? e.message : String(e)}`,
      };
    }
    if (!reconnects(this.#state))
      return { attached: false, code: grpc.status.CANCELLED, details: "stopping" };
    return this.#openSession(run, metadata);
  }

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
    for (const { attempt } of this.#tasks.values()) held.set(attempt.id, attempt.key);
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

  /** Writes reports on `session`; acknowledged ones are written only through the ledger, which counts them. */
  #sender(session: SchedulerSession): SendReport {
    return (report) => session.write(report);
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
      case "cancel":
        this.#onCancel(message.value);
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
    if (!session.attach(ack.sessionId, interval)) return;
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
    this.#creditDue = 0;
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
    const task = this.#tasks.get(leaseKeyId(key));
    if (task === undefined) return dropped ? "report" : "none";
    this.#logger.warn(describeKey(key), "the scheduler revoked a held lease; aborting its task");
    task.attempt.silence();
    task.attempt.abort(TaskError.terminal("LEASE_REVOKED", "the scheduler no longer recognises this lease"));
    return "task";
  }

  #onLease(lease: Lease): void {
    if (!hasKey(lease)) {
      this.#logger.warn(
        { taskType: lease.taskType, runId: lease.runId },
        "protocol: lease without a key ignored",
      );
      return;
    }
    const key = lease.key;
    const id = leaseKeyId(key);
    if (this.#tasks.has(id)) {
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
    this.#startTask(lease);
  }

  #startTask(lease: Lease & { key: LeaseKey }): void {
    // Built on first use: most attempts log nothing at the configured level.
    let child: Logger | undefined;
    const logger = (): Logger =>
      (child ??= this.#logger.child({
        runId: lease.runId,
        stepId: lease.stepId,
        taskRunId: lease.key.taskRunId,
        attempt: lease.key.attempt,
        taskType: lease.taskType,
      }));
    const attempt = new TaskAttempt(lease, {
      logSink: this.#options.logSink,
      logger,
      maxPayloadBytes: this.#options.maxPayloadBytes,
      artifacts: this.#options.artifacts,
      offload:
        this.#options.artifacts === undefined
          ? undefined
          : {
              store: this.#options.artifacts,
              thresholdBytes: this.#options.offloadThresholdBytes,
              maxBytes: this.#options.maxOffloadBytes,
            },
      sendHeartbeat: (key, progress) => {
        const value = create(HeartbeatSchema, { key });
        if (progress !== undefined) value.progress = toValue(progress);
        this.#sendLive({ case: "heartbeat", value });
      },
    });
    this.#reportStarted(attempt);
    if (this.#logger.isLevelEnabled("debug"))
      logger().debug({ workflow: lease.workflowName }, "task started");
    const { handler, heartbeat } = this.#handlerFor(lease.taskType);
    const done = attempt
      .run(handler, { autoHeartbeat: heartbeat === "auto" })
      .then((outcome) => this.#onTaskDone(attempt, outcome))
      .catch((e: unknown) => {
        logger().error({ err: e }, "failed to report a finished task");
        this.#tasks.delete(attempt.id);
        this.#tasksChanged.notify();
      });
    this.#tasks.set(attempt.id, { attempt, done });
  }

  #handlerFor(type: string): HandlerRegistration {
    if (!this.#advertised.includes(type)) {
      const error = TaskError.terminal(
        "UNKNOWN_TASK_TYPE",
        `this executor does not serve task type "${type}"`,
        {
          details: { taskType: type, served: this.#advertised },
        },
      );
      return {
        handler: () => {
          throw error;
        },
        heartbeat: "manual",
      };
    }
    return this.#registry.registration(type);
  }

  #onTaskDone(attempt: TaskAttempt, outcome: AttemptOutcome): void {
    this.#tasks.delete(attempt.id);
    const { key } = attempt;
    if (attempt.silenced) {
      this.#logger.debug(
        { ...describeKey(key), status: outcome.status },
        "task finished; not reported (its lease is gone)",
      );
    } else if (outcome.status === "completed") {
      // A claim check replaces the output: the value itself stays in the artifact store.
      const value =
        outcome.outputRef === undefined
          ? create(CompletedSchema, { key, output: toValue(outcome.output) })
          : create(CompletedSchema, { key, outputRef: outcome.outputRef });
      if (outcome.logs !== undefined) value.logs = outcome.logs;
      this.#report({ case: "completed", value });
      this.#logger.debug(describeKey(key), "task completed");
    } else {
      const { failure } = outcome;
      const error = create(TaskErrorSchema, {
        type: failure.type,
        message: failure.message,
        retryable: failure.retryable,
      });
      if (failure.details !== undefined) error.details = toValue(failure.details as JsonValue); // checked by TaskAttempt
      const value = create(FailedSchema, { key, error, retryAfterMs: BigInt(failure.retryAfterMs ?? 0) });
      if (outcome.logs !== undefined) value.logs = outcome.logs;
      this.#report({ case: "failed", value });
      this.#logger.info(
        { ...describeKey(key), errorType: failure.type, retryable: failure.retryable },
        "task failed",
      );
    }
    // A slot is free again. While disconnected nothing is sent: the next AttachAck grants every free slot.
    if (takesWork(this.#state)) this.#grantCredit();
    this.#tasksChanged.notify();
  }

  /**
   * Reports Started at the end of this event-loop turn, for attempts still running then. An attempt
   * that already finished sends only its Completed or Failed, which implies the start (the protocol
   * allows it): a fast task costs the session one message less.
   */
  #reportStarted(attempt: TaskAttempt): void {
    this.#startedDue.push(attempt);
    this.#endOfTurn();
  }

  /** Grants one more slot; slots freed in one turn go out as one Credit. */
  #grantCredit(): void {
    this.#creditDue++;
    this.#endOfTurn();
  }

  /** Sends what this turn accumulated: Started of attempts still running, then one Credit. */
  #endOfTurn(): void {
    if (this.#turnScheduled) return;
    this.#turnScheduled = true;
    setImmediate(() => {
      this.#turnScheduled = false;
      const due = this.#startedDue;
      this.#startedDue = [];
      for (const a of due) {
        if (this.#tasks.get(a.id)?.attempt !== a || a.silenced) continue;
        this.#report({ case: "started", value: create(StartedSchema, { key: a.key }) });
      }
      const n = this.#creditDue;
      this.#creditDue = 0;
      if (n > 0 && takesWork(this.#state))
        this.#sendLive({ case: "credit", value: create(CreditSchema, { n }) });
    });
  }

  #onCancel(cancel: Cancel): void {
    const task = cancel.key === undefined ? undefined : this.#tasks.get(leaseKeyId(cancel.key));
    if (task === undefined) {
      this.#logger.debug(
        { ...describeKey(cancel.key), reason: cancel.reason },
        "cancel for a task not running here",
      );
      return;
    }
    this.#logger.info(
      { ...describeKey(cancel.key), reason: cancel.reason },
      "the scheduler cancelled a task",
    );
    task.attempt.abort(
      TaskError.terminal("CANCELLED", `cancelled by the scheduler: ${cancel.reason || "no reason given"}`),
    );
  }

  #onRejected(rejected: Rejected): void {
    const fields = { ...describeKey(rejected.key), code: rejected.code, reason: rejected.message };
    this.#logger.warn(fields, "the scheduler rejected a report");
    if (
      rejected.key === undefined ||
      (rejected.code !== "FAILED_PRECONDITION" && rejected.code !== "NOT_FOUND")
    )
      return;
    const task = this.#tasks.get(leaseKeyId(rejected.key));
    if (task === undefined) return;
    // The lease is gone (stale token, already finished, unknown): the work is not ours any more.
    this.#logger.warn(fields, "aborting a task whose lease the scheduler no longer honours");
    task.attempt.silence();
    task.attempt.abort(
      TaskError.terminal(
        "LEASE_LOST",
        `the scheduler rejected a report: ${rejected.code}: ${rejected.message}`,
      ),
    );
  }
}
