/**
 * The executor: holds a Session stream to the scheduler (one to each scheduler replica that owns
 * partitions, when there are several: see replica-links.ts), grants credit for its free slots, runs
 * every leased task with its registered handler and reports back. It survives a broken stream
 * (reconnect with backoff, running tasks keep running and are re-claimed as held leases, reports
 * made meanwhile are delivered after the next AttachAck) and drains on `stop()`.
 *
 * Lifecycle: IDLE -> CONNECTING <-> ATTACHED -> DRAINING -> STOPPED, one union of states that carry
 * their own data (executor-state.ts); a session's own states are in scheduler-session.ts. What
 * becomes of each lease a session brings (run, released, ignored as a duplicate) and the slots it
 * takes are in lease-intake.ts.
 */
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type Logger, SESSION_PROTOCOL_VERSION } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import {
  type AttachAck,
  AttachSchema,
  type Cancel,
  CreditSchema,
  DrainSchema,
  HeartbeatSchema,
  type LeaseKey,
  PongSchema,
  type Rejected,
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
  stopReason,
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
import { type Report } from "./report-ledger.js";
import { IdleWatch } from "./idle-watch.js";
import { LeaseIntake } from "./lease-intake.js";
import { type Link, newLink } from "./replica-links.js";
import { ReplicaDiscovery } from "./replica-discovery.js";
import { type ReplicaMap } from "./replica-map.js";
import { ReplicaRouting } from "./replica-routing.js";
import {
  type SessionCall,
  SchedulerSession,
  type SessionEnd,
  fallbackVersion,
  openSessionCall,
  spokenLease,
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
  /** What becomes of each lease a session brings, and the slots (lease-intake.ts). */
  readonly #intake: LeaseIntake;
  #state: State = { t: "idle" };
  /** The sessions' links and where each report goes (replica-routing.ts). */
  readonly #routing = new ReplicaRouting({
    discovering: () => this.#replicas?.on === true,
    askSoon: () => this.#replicas?.soon(),
  });
  /** When the replicas are asked for (replica-discovery.ts); set up by start(). */
  #replicas: ReplicaDiscovery | undefined;
  /** Shares the slots again when a replica's session turns idle or busy (idle-watch.ts). */
  readonly #idle = new IdleWatch({
    links: () => this.#routing.links.values(),
    changed: () => this.#grant(true),
  });
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
          // With the turn's reports, to its run's replica; dropped when not attached (worthless later).
          const link = this.#routing.linkFor(key);
          if (link?.session?.live === true) link.session.report({ case: "heartbeat", value });
        },
      },
      handlerFor: (type) => servedHandler(this.#registry, this.#advertised, type),
      onDone: (attempt, outcome) => this.#onTaskDone(attempt, outcome),
    });
    this.#intake = new LeaseIntake({
      logger: this.#logger,
      slots: this.#options.slots,
      tasks: this.#tasks,
      routing: this.#routing,
      turn: this.#turn,
      refusing: () => stopReason(this.#state),
      takesWork: () => takesWork(this.#state),
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

  /** Id of the attached session (the one to `schedulerAddress`), while attached. */
  get sessionId(): string | undefined {
    return sessionOf(this.#state)?.id;
  }

  /**
   * The attached sessions by the scheduler replica they reached (AttachAck.replica_id; "" from a
   * scheduler without replicas): one per live replica, or the one session.
   */
  get replicaSessions(): ReadonlyMap<string, string> {
    return this.#routing.sessions();
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
    this.#routing.add(newLink("primary", true, this.#options.schedulerAddress, client, run.closing));
    this.#replicas = new ReplicaDiscovery({
      intervalMs: this.#options.replicaRefreshMs,
      logger: this.#logger,
      active: () => reconnects(this.#state),
      clients: () => [...this.#routing.links.values()].map((link) => link.client),
      metadata: this.#options.metadata,
      apply: (map) => this.#applyMap(map),
    });
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
        for (const link of this.#routing.links.values()) {
          link.closing.abort();
          link.session?.cancel();
          link.client.close();
        }
      }
      this.#replicas?.stop();
      this.#idle.stop();
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
    for (const link of this.#routing.links.values())
      if (link.session?.live === true)
        link.session.write({ case: "drain", value: create(DrainSchema, { reason }) });
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
    if (this.#routing.unacknowledged() > 0) {
      const left = Math.max(0, drainTimeoutMs - (Date.now() - started));
      if (!(await within(left, (signal) => this.#routing.whenSettled(signal)))) {
        this.#logger.warn(
          { unacknowledged: this.#routing.unacknowledged() },
          "stopping with unacknowledged reports; their leases will expire on the scheduler",
        );
      }
    }

    this.#enter(closing(this.#state));
    this.#replicas?.stop();
    this.#idle.stop();
    run.closing.abort();
    const links = [...this.#routing.links.values()];
    for (const link of links) link.closing.abort();
    await Promise.all(links.map((link) => link.session?.close(CLOSE_TIMEOUT_MS) ?? Promise.resolve()));
    // The primary link's loop is the run's.
    await Promise.all([run.loop, ...links.map((link) => link.loop)]);
    for (const link of links) link.client.close();
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
      openSession: (metadata) => this.#openSession(run, this.#routing.primary, metadata),
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

  /**
   * Opens a session of `link`, attaching with {@link SESSION_PROTOCOL_VERSION}, and resolves when
   * it ends (never rejects). A scheduler that does not speak that version (an older one, during a
   * rolling upgrade) refuses the Attach naming the versions it speaks: the session is opened again
   * at once with the highest of them this executor speaks (scheduler-session.ts fallbackVersion).
   * Each new session tries the newest version first, so an upgraded scheduler gets it.
   */
  async #openSession(run: Run, link: Link, metadata: grpc.Metadata): Promise<SessionEnd> {
    let version = SESSION_PROTOCOL_VERSION;
    for (;;) {
      const end = await this.#openSessionAt(run, link, metadata.clone(), version);
      const next = fallbackVersion(end, version);
      if (next === undefined || !reconnects(this.#state) || link.closing.signal.aborted || link.retired)
        return end;
      (link.primary ? this.#logger : this.#logger.child({ scheduler_address: link.address })).info(
        { protocolVersion: version, fallbackVersion: next, details: end.details },
        "the scheduler does not speak this session protocol version; attaching with an older one",
      );
      version = next;
    }
  }

  /** Opens one session of `link` attaching with `protocolVersion`; resolves when it ends (never rejects). */
  #openSessionAt(
    run: Run,
    link: Link,
    metadata: grpc.Metadata,
    protocolVersion: number,
  ): Promise<SessionEnd> {
    let call: SessionCall;
    try {
      call = openSessionCall(link.client, metadata);
    } catch (e) {
      const details = e instanceof Error ? e.message : String(e);
      return Promise.resolve({ attached: false, code: grpc.status.INTERNAL, details });
    }
    const session: SchedulerSession = new SchedulerSession(call, {
      number: ++run.sessions,
      attachTimeoutMs: this.#options.attachTimeoutMs,
      logger: link.primary ? this.#logger : this.#logger.child({ scheduler_address: link.address }),
      onMessage: (response) => this.#onResponse(link, session, response),
      onEnd: () => this.#endSession(link, session),
    });
    link.session = session;
    if (link.primary) this.#enter(opened(this.#state, session));
    session.write({
      case: "attach",
      value: create(AttachSchema, {
        executorId: this.#options.executorId,
        taskTypes: [...this.#advertised],
        slots: this.#options.slots,
        labels: { ...this.#options.labels },
        version: this.#options.version,
        heldLeases: this.#routing.heldLeases(this.#tasks.keys()),
        protocolVersion,
      }),
    });
    return session.ended;
  }

  #endSession(link: Link, session: SchedulerSession): void {
    if (link.session !== session) return;
    link.session = undefined;
    // The scheduler forgets a session's credit with it.
    link.credit = 0;
    // Reports the scheduler may not have committed go out again on the next session, first.
    link.ledger.detach();
    if (link.primary) this.#enter(sessionEnded(this.#state));
    if (this.#routing.clustered) {
      // Its reports go to their runs' owners, by a map asked for now.
      this.#routing.rebalance();
      this.#replicas?.soon();
    } else if (this.#replicas?.sole === true) this.#replicas.sessionEnded();
  }

  /** {@link ReplicaRouting.reportAttempt}. */
  #reportAttempt(report: Report, attempt: TaskAttempt): void {
    this.#routing.reportAttempt(report, attempt.id, attempt.lease.runId);
  }

  #onResponse(link: Link, session: SchedulerSession, response: SessionResponse): void {
    if (session !== link.session) return;
    const message = response.message;
    if (message.case === "ping") {
      // Asked, the leases held now (as in an Attach): the reports written before come first.
      const held = message.value.listHeld
        ? { keys: this.#routing.heldLeases(this.#tasks.keys()) }
        : undefined;
      session.write({ case: "pong", value: create(PongSchema, { nonce: message.value.nonce, held }) });
      return;
    }
    if (message.case === "attachAck") {
      this.#onAttachAck(link, session, message.value);
      return;
    }
    if (session.id === undefined) {
      this.#logger.warn({ message: message.case }, "protocol: message before AttachAck ignored");
      return;
    }
    switch (message.case) {
      case "lease":
        this.#intake.take(link, spokenLease(message.value, session));
        return;
      case "leases":
        // Each as if it had come alone, in order.
        for (const lease of message.value.leases) this.#intake.take(link, spokenLease(lease, session));
        return;
      case "cancel":
        this.#onCancel(message.value);
        return;
      case "rejected":
        this.#onRejected(link, message.value);
        return;
      case "acked":
        this.#onAcked(link, Number(message.value.through));
        return;
      case "drainAck":
        this.#logger.info({ outstanding: message.value.outstanding }, "the scheduler acknowledged the drain");
        return;
      default:
        this.#logger.debug({ message: message.case }, "ignoring an unknown message from the scheduler");
    }
  }

  #onAttachAck(link: Link, session: SchedulerSession, ack: AttachAck): void {
    if (session.id !== undefined) {
      this.#logger.warn("protocol: duplicate AttachAck ignored");
      return;
    }
    const interval = ack.heartbeatIntervalMs > 0 ? ack.heartbeatIntervalMs : DEFAULT_HEARTBEAT_INTERVAL_MS;
    // A session being closed stays closed: nothing more is written on it.
    if (!session.attach(ack.sessionId, interval, ack.protocolVersion)) return;
    const first = link.primary && !attachedBefore(this.#state);
    if (ack.sessionTimeoutMs > 0) link.sessionTimeoutMs = ack.sessionTimeoutMs;
    // One session per replica: another session of this executor may have reached that replica.
    const closing = this.#routing.reached(link, ack.replicaId);
    if (closing !== undefined) this.#retireSoon(closing);
    if (closing === link) return;

    // A revoked lease is a running task the scheduler gave away, or a report it already has (it
    // committed the report, but its Acked was lost with the previous session).
    let revokedTasks = 0;
    let alreadyTaken = 0;
    for (const key of ack.revoked) {
      const what = this.#revoke(link, key);
      if (what === "task") revokedTasks++;
      else if (what === "report") alreadyTaken++;
    }

    // The grant below covers every free slot, including those freed while detached.
    this.#turn.forgetFreedSlots();
    const delivered = link.ledger.resend((report) => session.report(report));
    const state = this.#state;
    if (state.t === "draining") {
      session.write({ case: "drain", value: create(DrainSchema, { reason: state.reason }) });
    }
    const start = link.primary ? this.#pendingStart() : undefined;
    if (link.primary) this.#enter(attached(state));
    this.#grant(true);
    if (this.#routing.clustered) this.#routing.rebalance();
    const fields = {
      sessionId: ack.sessionId,
      session: session.number,
      ...(ack.replicaId === "" ? {} : { replicaId: ack.replicaId }),
      ...(link.primary ? {} : { schedulerAddress: link.address }),
      heldLeases: this.#tasks.size,
      revoked: revokedTasks,
      reportsAlreadyTaken: alreadyTaken,
      deliveredReports: delivered,
      heartbeatIntervalMs: interval,
      protocolVersion: ack.protocolVersion,
    };
    if (first || link.attaches === 0) this.#logger.debug(fields, "attached to the scheduler");
    else this.#logger.info(fields, "re-attached to the scheduler");
    link.attaches++;
    start?.resolve();
    if (link.primary && ack.replicaId === "" && this.#replicas?.on === true) {
      // A scheduler that does not name its replica (older than replicas): sessions cannot be
      // told apart, so one session, as before.
      this.#logger.info("the scheduler does not name its replica in AttachAck; keeping one session");
      this.#replicas?.stop();
      for (const other of this.#routing.links.values()) if (!other.primary) this.#retireSoon(other);
    }
    // A fresh session is not idle before it had the time to lease.
    link.lastLeaseAt = performance.now();
    if (first) this.#replicas?.start();
  }

  /** The scheduler committed the session's first `through` reports: forget them. */
  #onAcked(link: Link, through: number): void {
    const ledger = link.ledger;
    const acked = ledger.ackedThrough;
    if (ledger.ack(through) === "ahead") {
      this.#logger.warn(
        { through, acked, unacked: ledger.unacknowledged },
        "protocol: Acked covers reports never sent; ignored",
      );
    }
  }

  /**
   * AttachAck says a held lease is gone: stop its task and never report it. Returns what the
   * lease was here: a running task, or a finished one whose report was waiting.
   */
  #revoke(link: Link, key: LeaseKey): "task" | "report" | "none" {
    const dropped = link.ledger.revoke(key);
    if (this.#tasks.revoke(key)) return "task";
    return dropped ? "report" : "none";
  }

  /**
   * An attempt ended (it has left the table): report it, unless its lease is gone, and free its
   * slot, even when reporting throws (RunningTasks then calls again with a failure: the slot is
   * freed once).
   */
  #onTaskDone(attempt: TaskAttempt, outcome: AttemptOutcome): void {
    const { key } = attempt;
    try {
      if (attempt.silenced) {
        this.#logger.debug(
          { ...describeKey(key), status: outcome.status },
          "task finished; not reported (its lease is gone)",
        );
      } else {
        this.#reportAttempt(outcomeReport(key, outcome), attempt);
        if (outcome.status === "completed") this.#logger.debug(describeKey(key), "task completed");
        else {
          const { type: errorType, retryable } = outcome.failure;
          this.#logger.info({ ...describeKey(key), error_type: errorType, retryable }, "task failed");
        }
      }
    } finally {
      this.#intake.free(attempt);
    }
  }

  /** The end of an event-loop turn: Started of the attempts begun in it that still run, then one Credit. */
  #endOfTurn(started: readonly TaskAttempt[], freed: number): void {
    for (const a of started) {
      if (this.#tasks.reportable(a))
        this.#reportAttempt({ case: "started", value: create(StartedSchema, { key: a.key }) }, a);
    }
    if (freed > 0) this.#grant();
  }

  /**
   * Grants the free slots (every slot neither running a task nor granted as credit on a live
   * session) to the live sessions, each replica's share about proportional to the partitions it
   * holds, an idle one's given to those with work (replica-links.ts creditShares, creditGrants).
   * With one session: every free slot, as always.
   */
  #grant(rebalance = false): void {
    if (!takesWork(this.#state)) return;
    const plan = this.#routing.planCredit(this.#options.slots, this.#tasks.size, rebalance);
    for (const [link, n] of plan.withdrawals)
      link.session?.write({ case: "credit", value: create(CreditSchema, { withdraw: n }) });
    for (const [link, n] of plan.grants)
      link.session?.write({ case: "credit", value: create(CreditSchema, { n }) });
  }

  /**
   * A Cancel: the task stops, unless its run's partition moved to another replica while this
   * executor has sessions to several: the new owner holds the lease in its grace, and a report
   * there (a Heartbeat once the map shows the owner) adopts it, so the task keeps running.
   */
  #onCancel(cancel: Cancel): void {
    const key = cancel.key;
    if (
      cancel.partitionMoved &&
      key !== undefined &&
      this.#replicas?.on === true &&
      this.#routing.clustered
    ) {
      const route = this.#routing.routes.get(leaseKeyId(key));
      if (route !== undefined) {
        route.sentTo = undefined;
        this.#logger.info(
          { ...describeKey(key), reason: cancel.reason },
          "the run's partition moved; the task goes on, reported to its new owner",
        );
        this.#replicas?.soon();
        return;
      }
    }
    this.#tasks.cancel(key, cancel.reason);
  }

  #onRejected(link: Link, rejected: Rejected): void {
    const fields = { ...describeKey(rejected.key), code: rejected.code, reason: rejected.message };
    if (
      rejected.code === "NOT_FOUND" &&
      rejected.key !== undefined &&
      this.#routing.misroutedTo(link, rejected.key)
    ) {
      this.#logger.info(fields, "a report reached a replica without its run; sending it to the run's owner");
      return;
    }
    this.#logger.warn(fields, "the scheduler rejected a report");
    // These codes say the lease is gone; others (a malformed report) leave the task running.
    if (
      rejected.key !== undefined &&
      (rejected.code === "FAILED_PRECONDITION" || rejected.code === "NOT_FOUND")
    )
      this.#tasks.lose(rejected.key, rejected);
  }

  // ---- replicas --------------------------------------------------------------------------------

  /** A new map: sessions opened to replicas not reached, closed to those that left; reports re-routed. */
  #applyMap(map: ReplicaMap): void {
    if (!reconnects(this.#state) || this.#replicas?.on !== true) return;
    this.#routing.setMap(map);
    const run = this.#state.t === "idle" || this.#state.t === "stopped" ? undefined : this.#state.run;
    if (run === undefined) return;
    for (const replica of map.replicas.values()) {
      const reached = this.#routing.byReplica.get(replica.id);
      if ((reached !== undefined && !reached.retired) || this.#routing.links.has(replica.id)) continue;
      // At the configured address: the primary link reaches it (a restarted scheduler has a new
      // replica id; its session re-attaches there with the reports it kept).
      if (replica.address === this.#routing.primaryIfSet?.address) continue;
      if (!takesWork(this.#state)) continue;
      this.#openLink(run, replica.id, replica.address);
    }
    for (const link of this.#routing.departed()) this.#retireSoon(link);
    this.#routing.rebalance();
    this.#grant(true);
  }

  /** Opens a link (and keeps its session open) to replica `replicaId` at `address`. */
  #openLink(run: Run, replicaId: string, address: string): void {
    const { credentials, channelOptions, reconnect } = this.#options;
    let client: grpc.Client;
    try {
      client = new grpc.Client(address, credentials, channelOptions);
    } catch (e) {
      this.#logger.warn({ err: e, scheduler_address: address }, "cannot connect to a scheduler replica");
      return;
    }
    const link = newLink(replicaId, false, address, client, new AbortController());
    this.#routing.add(link);
    // Slots are shared among sessions from now on: watch which ones are idle (no timer with one).
    this.#idle.start();
    this.#logger.info({ replicaId, scheduler_address: address }, "opening a session to a scheduler replica");
    const stop = (): void => link.closing.abort();
    run.closing.signal.addEventListener("abort", stop, { once: true });
    link.loop = runSessionLoop({
      reconnect,
      logger: this.#logger.child({ scheduler_address: address }),
      signal: link.closing.signal,
      wanted: () => !link.retired && reconnects(this.#state) && !link.closing.signal.aborted,
      // Refusals are retried: this replica may come to accept the executor (an upgrade).
      attachedBefore: () => true,
      metadata: this.#options.metadata,
      openSession: (metadata) => this.#openSession(run, link, metadata),
    })
      .then(() => undefined)
      .catch((e: unknown) => this.#logger.error({ err: e }, "a replica's session loop failed"))
      .finally(() => run.closing.signal.removeEventListener("abort", stop));
  }

  /**
   * Closes a link to a replica that left (or that another session reached), see
   * {@link ReplicaRouting.retire}; then shares the slots again. Its failure is logged.
   */
  #retireSoon(link: Link): void {
    if (link.primary || link.retired) return;
    this.#logger.info(
      { replicaId: link.replicaId || link.id, scheduler_address: link.address },
      "closing the session to a scheduler replica",
    );
    this.#routing
      .retire(link, this.#options.drainTimeoutMs, CLOSE_TIMEOUT_MS)
      .then(() => this.#grant(true))
      .catch((e: unknown) =>
        this.#logger.error({ err: e, scheduler_address: link.address }, "closing a replica's session failed"),
      );
  }
}
