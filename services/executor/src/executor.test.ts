/**
 * The executor against a scripted scheduler: a real grpc-js server on 127.0.0.1, port 0, that
 * implements ExecutorService.Session in this file, records what the executor sends and answers
 * what each test tells it to. Tests wait on messages and states, never on sleeps.
 */
import assert from "node:assert/strict";
import { EventEmitter, once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { type JsonValue, create, fromJson, toJson } from "@bufbuild/protobuf";
import { type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ELEMENT_FOLDERS_VERSION,
  type LogLevel,
  MIN_SESSION_PROTOCOL_VERSION,
  SESSION_PROTOCOL_VERSION,
  acknowledgedReports,
  createLogger,
  isAcknowledgedReport,
  serviceDefinition,
  versionRefusal,
} from "@nexusflow/common";
import { FilesystemArtifactStore } from "@nexusflow/common/artifacts";
import {
  AckedSchema,
  type Attach,
  type AttachAck,
  AttachAckSchema,
  CancelSchema,
  ExecutorService,
  type Lease,
  type LeaseKey,
  LeaseBatchSchema,
  LeaseSchema,
  PingSchema,
  RejectedSchema,
  type SessionRequest,
  type SessionResponse,
  SessionResponseSchema,
} from "@nexusflow/gen";
import { ArtifactLogSink } from "./artifact-log-sink.js";
import { isExecutorError } from "./errors.js";
import { Executor, type ExecutorState } from "./executor.js";
import { waitFor } from "./handlers/test-context.js";
import type { TaskContext } from "./handlers/types.js";
import { type LogSink, MemoryLogSink } from "./log-sink.js";
import type { ExecutorOptions } from "./options.js";
import { MAX_RETRY_AFTER_MS, TaskError } from "./handlers/task-error.js";

type Request = SessionRequest["message"];
type RequestCase = NonNullable<Request["case"]>;
type RequestValue<C extends RequestCase> = Extract<Request, { case: C }>["value"];
type ServerCall = grpc.ServerDuplexStream<SessionRequest, SessionResponse>;

const WAIT_MS = 5_000;

/** One Session stream as the fake scheduler sees it. */
class FakeSession {
  readonly received: Request[] = [];
  /** The number of items of each Reports message received, in order. */
  readonly reportFrames: number[] = [];
  readonly #taken = new Set<number>();
  readonly #events = new EventEmitter();
  ended = false;

  constructor(readonly call: ServerCall) {}

  record(message: Request): void {
    this.received.push(message);
    this.#events.emit("change");
  }

  markEnded(): void {
    this.ended = true;
    this.#events.emit("change");
  }

  send(message: SessionResponse["message"]): void {
    this.call.write(create(SessionResponseSchema, { message }));
  }

  /** Whether a message of `kind` matching `where` was received (taken or not). */
  has<C extends RequestCase>(kind: C, where: (value: RequestValue<C>) => boolean = () => true): boolean {
    return this.received.some((m) => m.case === kind && where(m.value as RequestValue<C>));
  }

  /** Position of the first message of `kind` matching `where`, or -1. */
  indexOf<C extends RequestCase>(kind: C, where: (value: RequestValue<C>) => boolean = () => true): number {
    return this.received.findIndex((m) => m.case === kind && where(m.value as RequestValue<C>));
  }

  /** The first not yet taken message of `kind` matching `where`, waiting for it if need be. */
  async take<C extends RequestCase>(
    kind: C,
    where: (value: RequestValue<C>) => boolean = () => true,
  ): Promise<RequestValue<C>> {
    await this.until(() => this.#find(kind, where) !== -1, `a ${kind} message`);
    const index = this.#find(kind, where);
    this.#taken.add(index);
    return this.received[index]?.value as RequestValue<C>;
  }

  /** Waits until `condition` holds, re-checking on every message and on the end of the stream. */
  async until(condition: () => boolean, what: string): Promise<void> {
    const signal = AbortSignal.timeout(WAIT_MS);
    while (!condition()) {
      try {
        await once(this.#events, "change", { signal });
      } catch {
        throw new Error(
          `timed out waiting for ${what}; received: ${this.received.map((m) => m.case).join(", ")}`,
        );
      }
    }
  }

  #find<C extends RequestCase>(kind: C, where: (value: RequestValue<C>) => boolean): number {
    return this.received.findIndex(
      (m, i) => !this.#taken.has(i) && m.case === kind && where(m.value as RequestValue<C>),
    );
  }
}

interface FakeSchedulerOptions {
  /** Answer Attach with AttachAck (default true). */
  autoAck?: boolean;
  /** Held leases to revoke in the AttachAck. */
  revoke?: (attach: Attach) => LeaseKey[];
  /** Acknowledge each report (Completed, Failed, Release) at once, as committed (default true). */
  ackReports?: boolean;
  /**
   * The protocol version the AttachAck names: 2 takes Reports (recorded item by item), 0 is a
   * scheduler older than versions (default: the suite's, {@link schedulerProtocolVersion}).
   */
  protocolVersion?: number;
  /**
   * The highest protocol version it speaks: an Attach naming a higher one ends its session with
   * FAILED_PRECONDITION naming the versions spoken, as a scheduler does (default: any).
   */
  speaks?: number;
}

/** The protocol version of the fake scheduler, unless a test names one. */
let schedulerProtocolVersion = 2;

/** A scripted scheduler: serves Session, records every stream. */
class FakeScheduler {
  readonly sessions: FakeSession[] = [];
  readonly #events = new EventEmitter();

  private constructor(
    readonly server: grpc.Server,
    readonly options: FakeSchedulerOptions,
    public port = 0,
  ) {}

  static async start(port = 0, options: FakeSchedulerOptions = {}): Promise<FakeScheduler> {
    const server = new grpc.Server();
    const scheduler = new FakeScheduler(server, options);
    server.addService(serviceDefinition(ExecutorService), {
      session: (call: ServerCall) => scheduler.#onSession(call),
    });
    scheduler.port = await bind(server, port);
    servers.push(server);
    return scheduler;
  }

  /** Session number `index` (from 0), once the executor opened it. */
  async session(index: number): Promise<FakeSession> {
    const signal = AbortSignal.timeout(WAIT_MS);
    while (this.sessions[index] === undefined) {
      try {
        await once(this.#events, "session", { signal });
      } catch {
        throw new Error(`timed out waiting for session ${index}`);
      }
    }
    return this.sessions[index];
  }

  /** Kills the server and every stream, as a crashed scheduler would. */
  kill(): void {
    this.server.forceShutdown();
  }

  #onSession(call: ServerCall): void {
    const session = new FakeSession(call);
    this.sessions.push(session);
    let reports = 0;
    const protocolVersion = this.options.protocolVersion ?? schedulerProtocolVersion;
    call.on("data", (request: SessionRequest) => {
      // A Reports message is recorded as its items, each as if it had come alone.
      const messages: Request[] =
        request.message.case === "reports"
          ? request.message.value.items.map((item) => item.report)
          : [request.message];
      if (request.message.case === "reports") session.reportFrames.push(request.message.value.items.length);
      for (const message of messages) {
        session.record(message);
        if (isAcknowledgedReport(message)) reports++;
      }
      const speaks = this.options.speaks;
      if (request.message.case === "attach" && speaks !== undefined) {
        const offered = request.message.value.protocolVersion;
        if (offered > speaks) {
          call.emit("error", {
            code: grpc.status.FAILED_PRECONDITION,
            details: versionRefusal(offered, MIN_SESSION_PROTOCOL_VERSION, speaks),
          });
          return;
        }
      }
      if (acknowledgedReports(request.message) > 0 && this.options.ackReports !== false)
        session.send({ case: "acked", value: create(AckedSchema, { through: BigInt(reports) }) });
      if (request.message.case === "attach" && this.options.autoAck !== false) {
        const ack: AttachAck = create(AttachAckSchema, {
          sessionId: `session-${this.sessions.length}`,
          heartbeatIntervalMs: 1_000,
          sessionTimeoutMs: 5_000,
          revoked: this.options.revoke?.(request.message.value) ?? [],
          protocolVersion,
        });
        session.send({ case: "attachAck", value: ack });
      }
    });
    // The executor half-closes on stop(); a scheduler then ends its side.
    call.on("end", () => {
      session.markEnded();
      call.end();
    });
    call.on("error", () => session.markEnded());
    call.on("cancelled", () => session.markEnded());
    this.#events.emit("session");
  }
}

function bind(server: grpc.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error, bound) => {
      if (error === null) resolve(bound);
      else reject(error);
    });
  });
}

const servers: grpc.Server[] = [];
const executors: Executor[] = [];
const logger = createLogger(
  "executor-test",
  (process.env["TEST_LOG_LEVEL"] as LogLevel | undefined) ?? "silent",
);

function newExecutor(scheduler: FakeScheduler, options: ExecutorOptions = {}): Executor {
  const executor = new Executor({
    schedulerAddress: `127.0.0.1:${scheduler.port}`,
    executorId: "executor-1",
    slots: 4,
    reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
    drainTimeoutMs: 2_000,
    logger,
    ...options,
  });
  executors.push(executor);
  return executor;
}

/**
 * An executor attached to a scheduler that acknowledges no report, with a handler of type
 * "test.wait" that returns once `open` is called; its first credit taken.
 */
async function unackedWithGate(options: ExecutorOptions = {}) {
  let open: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const scheduler = await FakeScheduler.start(0, { ackReports: false });
  const executor = newExecutor(scheduler, options);
  executor.register("test.wait", async () => {
    await gate;
    return { ok: true };
  });
  await executor.start();
  const session = await scheduler.session(0);
  await session.take("credit");
  return { scheduler, executor, session, open };
}

let leases = 0;
function lease(taskType: string, input: JsonValue = null): Lease {
  const n = ++leases;
  return create(LeaseSchema, {
    key: { taskRunId: `task-run-${n}`, attempt: 1, fencingToken: BigInt(n) },
    runId: `run-${n}`,
    stepId: `step-${n}`,
    taskType,
    input: fromJson(ValueSchema, input),
    workflowName: "test-workflow",
  });
}

function keyOf(l: Lease): LeaseKey {
  assert.ok(l.key);
  return l.key;
}

function sameKey(a: LeaseKey | undefined, b: LeaseKey): boolean {
  return (
    a !== undefined &&
    a.taskRunId === b.taskRunId &&
    a.attempt === b.attempt &&
    a.fencingToken === b.fencingToken
  );
}

/** `levels` arrays, one in the other, around 1. */
function nested(levels: number): JsonValue {
  let value: JsonValue = 1;
  for (let i = 0; i < levels; i++) value = [value];
  return value;
}

function json(value: Value | undefined): JsonValue {
  return value === undefined ? null : toJson(ValueSchema, value);
}

/** A promise the test resolves, for handlers that must stay running until told otherwise. */
function gate(): { open: () => void; opened: Promise<void> } {
  let open = (): void => {};
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

function waitState(executor: Executor, state: ExecutorState): Promise<void> {
  if (executor.state === state) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`timed out waiting for state ${state} (state is ${executor.state})`));
    }, WAIT_MS);
    const unsubscribe = executor.onStateChange((next) => {
      if (next !== state) return;
      clearTimeout(timer);
      unsubscribe();
      resolve();
    });
  });
}

/** Starts a scheduler and an attached executor, and takes the first credit. */
async function attached(options: ExecutorOptions = {}, register?: (executor: Executor) => void) {
  const scheduler = await FakeScheduler.start();
  const executor = newExecutor(scheduler, options);
  register?.(executor);
  await executor.start();
  const session = await scheduler.session(0);
  const credit = await session.take("credit");
  return { scheduler, executor, session, credit };
}

/** The executor's tests, run against a scheduler of each protocol version (see the end of the file). */
function executorTests(): void {
  after(async () => {
    await Promise.all(executors.map((e) => e.stop("test over")));
    for (const server of servers) server.forceShutdown();
  });

  it(
    "attaches with its identity and task types, then grants credit for every slot",
    { timeout: 10_000 },
    async () => {
      const { executor, session, credit } = await attached({ labels: { pool: "test" } });
      const attach = await session.take("attach");
      assert.equal(attach.executorId, "executor-1");
      assert.deepEqual(attach.taskTypes, ["http", "noop", "shell", "sleep"]);
      assert.equal(attach.slots, 4);
      assert.deepEqual(attach.labels, { pool: "test" });
      assert.deepEqual(attach.heldLeases, []);
      assert.ok(attach.version.length > 0);
      assert.equal(credit.n, 4);
      assert.equal(executor.state, "ATTACHED");
      assert.equal(executor.sessionId, "session-1");
    },
  );

  it(
    "runs a lease larger than grpc-js' 4 MiB default receive limit, on the session it has",
    { timeout: 20_000 },
    async () => {
      const { scheduler, session } = await attached({}, (e) =>
        e.register("test.size", (input: { text: string }) => ({ length: input.text.length })),
      );
      // A run input or an upstream output templated into the step: the scheduler sends any size.
      const l = lease("test.size", { text: "x".repeat(5 * 1024 * 1024) });
      session.send({ case: "lease", value: l });
      const completed = await session.take("completed", (c) => sameKey(c.key, keyOf(l)));
      assert.deepEqual(json(completed.output), { length: 5 * 1024 * 1024 });
      // Before, the executor refused the message: the session ended and the lease was lost.
      assert.equal(scheduler.sessions.length, 1);
    },
  );

  it(
    "reports a failure whose message is larger than a session frame cut, once, on the session it has",
    { timeout: 20_000 },
    async () => {
      const { scheduler, session } = await attached({}, (e) =>
        e.register("test.loud", () => {
          throw new Error("x".repeat(17 * 1024 * 1024));
        }),
      );
      const l = lease("test.loud");
      session.send({ case: "lease", value: l });
      const failed = await session.take("failed", (f) => sameKey(f.key, keyOf(l)));
      assert.equal(failed.error?.type, "Error");
      assert.match(failed.error?.message ?? "", /^x{16384}… \(17809408 more characters\)$/);
      // Before, the report ended every session it was sent on (larger than the scheduler takes).
      assert.equal(scheduler.sessions.length, 1);
    },
  );

  it(
    "stops when a finished task's log store never answers: the task is reported without its log",
    { timeout: 20_000 },
    async () => {
      // An artifact store that takes the connection and never answers: the log's close hangs.
      let closing = false;
      const logSink: LogSink = {
        open: () => ({
          append: () => undefined,
          close: () => {
            closing = true;
            return new Promise<never>(() => undefined);
          },
        }),
      };
      const { executor, session } = await attached({ logSink, drainTimeoutMs: 300, abortGraceMs: 200 });
      const l = lease("noop");
      session.send({ case: "lease", value: l });
      await waitFor(() => closing, "the log to be closing");
      await executor.stop("test over");
      assert.equal(executor.state, "STOPPED");
      const completed = await session.take("completed", (c) => sameKey(c.key, keyOf(l)));
      assert.equal(completed.logs, undefined);
    },
  );

  it(
    "reports a retry delay past what a report can carry as the longest it takes, and grants the slot again",
    { timeout: 10_000 },
    async () => {
      const { session } = await attached({ slots: 1 }, (e) =>
        e.register("test.later", () => {
          throw TaskError.retryable("SLOW_DOWN", "come back much later", { retryAfterMs: 1e20 });
        }),
      );
      const l = lease("test.later");
      session.send({ case: "lease", value: l });
      const failed = await session.take("failed", (f) => sameKey(f.key, keyOf(l)));
      assert.equal(failed.retryAfterMs, BigInt(MAX_RETRY_AFTER_MS));
      assert.equal((await session.take("credit")).n, 1, "its slot free again");
    },
  );

  it(
    "lists the leases it holds in a Pong when the Ping asks (running, and finished but not acknowledged), else none",
    { timeout: 10_000 },
    async () => {
      // Reports are not acknowledged: a finished lease stays held until they are.
      const { session, open } = await unackedWithGate();
      const running = lease("test.wait");
      const done = lease("noop");
      session.send({ case: "lease", value: running });
      session.send({ case: "lease", value: done });
      await session.take("started", (x) => sameKey(x.key, keyOf(running)));
      await session.take("completed", (c) => sameKey(c.key, keyOf(done)));
      // Asked: the running one and the finished one (its Completed not acknowledged), with their runs.
      session.send({ case: "ping", value: create(PingSchema, { nonce: 7n, listHeld: true }) });
      const pong = await session.take("pong", (p) => p.nonce === 7n);
      assert.deepEqual(
        pong.held?.keys.map((k) => [k.taskRunId, k.attempt, k.fencingToken, k.runId]).sort(),
        [running, done].map((l) => [keyOf(l).taskRunId, 1, keyOf(l).fencingToken, l.runId]).sort(),
      );
      // Not asked: no list.
      session.send({ case: "ping", value: create(PingSchema, { nonce: 8n }) });
      assert.equal((await session.take("pong", (p) => p.nonce === 8n)).held, undefined);
      open();
      await session.take("completed", (c) => sameKey(c.key, keyOf(running)));
    },
  );

  it(
    "lists a lease it released until the Release is acknowledged, in a Pong and in the next Attach, then sends the Release again",
    { timeout: 10_000 },
    async () => {
      const { scheduler, executor, session, open } = await unackedWithGate({ slots: 1 });
      const running = lease("test.wait");
      const extra = lease("test.wait");
      session.send({ case: "lease", value: running });
      await session.take("started", (x) => sameKey(x.key, keyOf(running)));
      // Beyond its one slot: given back, and the Release is not acknowledged.
      session.send({ case: "lease", value: extra });
      await session.take("release", (r) => sameKey(r.key, keyOf(extra)));
      // Unlisted, the scheduler would expire it (LEASE_EXPIRED, an attempt counted) before the
      // Release reaches it (sent on another link, or in flight when the session broke).
      session.send({ case: "ping", value: create(PingSchema, { nonce: 9n, listHeld: true }) });
      const pong = await session.take("pong", (p) => p.nonce === 9n);
      assert.deepEqual(
        pong.held?.keys.map((k) => k.taskRunId).sort(),
        [keyOf(running).taskRunId, keyOf(extra).taskRunId].sort(),
      );
      const connecting = waitState(executor, "CONNECTING");
      scheduler.kill();
      await connecting;
      const restarted = await FakeScheduler.start(scheduler.port);
      const next = await restarted.session(0);
      const attach = await next.take("attach");
      assert.deepEqual(
        attach.heldLeases.map((k) => k.taskRunId).sort(),
        [keyOf(running).taskRunId, keyOf(extra).taskRunId].sort(),
      );
      // The Release again, after the Attach that listed its lease: it gives the lease back free.
      await next.take("release", (r) => sameKey(r.key, keyOf(extra)));
      assert.ok(next.indexOf("attach") < next.indexOf("release", (r) => sameKey(r.key, keyOf(extra))));
      open();
      await next.take("completed", (c) => sameKey(c.key, keyOf(running)));
    },
  );

  it(
    "runs a lease: Started, then Completed with the handler's output, then one more credit",
    { timeout: 10_000 },
    async () => {
      const logSink = new MemoryLogSink();
      const { session } = await attached({ logSink }, (executor) => {
        executor.register("test.echo", (input, ctx: TaskContext) => {
          ctx.log.info("echoing", { attempt: ctx.attempt });
          ctx.log.write("stdout", "line one\nline ");
          ctx.log.write("stdout", "two\n");
          return { echoed: input, runId: ctx.runId, stepId: ctx.stepId };
        });
        executor.register("test.slow", async (input) => {
          await new Promise((r) => setTimeout(r, 50));
          return input;
        });
      });
      const slow = lease("test.slow", { hello: "world" });
      session.send({ case: "lease", value: slow });
      await session.take("started", (s) => sameKey(s.key, keyOf(slow)));
      const completed = await session.take("completed", (c) => sameKey(c.key, keyOf(slow)));
      assert.deepEqual(json(completed.output), { hello: "world" });
      assert.equal((await session.take("credit")).n, 1);
      assert.ok(
        session.indexOf("started", (s) => sameKey(s.key, keyOf(slow))) <
          session.indexOf("completed", (c) => sameKey(c.key, keyOf(slow))),
      );

      // A task that ends within its first event-loop turn sends only Completed: it implies Started.
      const noop = lease("noop", { hello: "again" });
      session.send({ case: "lease", value: noop });
      const done = await session.take("completed", (c) => sameKey(c.key, keyOf(noop)));
      assert.deepEqual(json(done.output), { hello: "again" });
      assert.ok(!session.has("started", (s) => sameKey(s.key, keyOf(noop))));

      const echo = lease("test.echo", [1, "two"]);
      session.send({ case: "lease", value: echo });
      const echoed = await session.take("completed", (c) => sameKey(c.key, keyOf(echo)));
      assert.deepEqual(json(echoed.output), { echoed: [1, "two"], runId: echo.runId, stepId: echo.stepId });
      const log = logSink.get(keyOf(echo).taskRunId, 1);
      assert.deepEqual(
        log?.lines.map((l) => [l.stream, l.text]),
        [
          ["log", "echoing"],
          ["stdout", "line one"],
          ["stdout", "line two"],
        ],
      );
    },
  );

  it(
    "reports failures: thrown errors are retryable, TaskError.terminal is not, unknown types are terminal",
    { timeout: 10_000 },
    async () => {
      const { session } = await attached({}, (executor) =>
        executor
          .register("test.throw", () => {
            throw new RangeError("boom");
          })
          .register("test.terminal", () =>
            Promise.reject(TaskError.terminal("CARD_DECLINED", "declined", { details: { code: 42 } })),
          )
          .register("test.later", () =>
            Promise.reject(TaskError.retryable("HTTP_503", "busy", { retryAfterMs: 1_500 })),
          ),
      );
      const thrown = lease("test.throw");
      const terminal = lease("test.terminal");
      const later = lease("test.later");
      const unknown = lease("test.nobody");
      for (const l of [thrown, terminal, later, unknown]) session.send({ case: "lease", value: l });

      const a = await session.take("failed", (f) => sameKey(f.key, keyOf(thrown)));
      assert.deepEqual(
        [a.error?.type, a.error?.message, a.error?.retryable, a.retryAfterMs],
        ["RangeError", "boom", true, 0n],
      );
      const b = await session.take("failed", (f) => sameKey(f.key, keyOf(terminal)));
      assert.deepEqual(
        [b.error?.type, b.error?.retryable, json(b.error?.details)],
        ["CARD_DECLINED", false, { code: 42 }],
      );
      const c = await session.take("failed", (f) => sameKey(f.key, keyOf(later)));
      assert.deepEqual([c.error?.type, c.error?.retryable, c.retryAfterMs], ["HTTP_503", true, 1_500n]);
      const d = await session.take("failed", (f) => sameKey(f.key, keyOf(unknown)));
      assert.deepEqual([d.error?.type, d.error?.retryable], ["UNKNOWN_TASK_TYPE", false]);
      // It failed before the end of its first event-loop turn: the Failed implies the start.
      assert.ok(!session.has("started", (s) => sameKey(s.key, keyOf(unknown))));
    },
  );

  it(
    "Cancel aborts a running sleep task, which reports CANCELLED (not retryable) and frees its slot",
    { timeout: 10_000 },
    async () => {
      const { session } = await attached();
      const sleeping = lease("sleep", { duration: "60s" });
      session.send({ case: "lease", value: sleeping });
      await session.take("started", (s) => sameKey(s.key, keyOf(sleeping)));
      session.send({
        case: "cancel",
        value: create(CancelSchema, { key: keyOf(sleeping), reason: "run cancelled" }),
      });
      const failed = await session.take("failed", (f) => sameKey(f.key, keyOf(sleeping)));
      assert.equal(failed.error?.type, "CANCELLED");
      assert.equal(failed.error?.retryable, false);
      assert.match(failed.error?.message ?? "", /run cancelled/);
      assert.equal((await session.take("credit")).n, 1);
    },
  );

  it(
    "sends throttled task heartbeats with the latest progress, and answers Ping with Pong",
    { timeout: 10_000 },
    async () => {
      const release = gate();
      const { session } = await attached({}, (executor) =>
        executor.register("test.progress", async (_input, ctx: TaskContext) => {
          ctx.heartbeat({ step: 1 });
          ctx.heartbeat({ step: 2 });
          ctx.heartbeat({ step: 3 });
          await release.opened;
          return "done";
        }),
      );
      const task = lease("test.progress");
      session.send({ case: "lease", value: task });
      const first = await session.take("heartbeat", (h) => sameKey(h.key, keyOf(task)));
      assert.deepEqual(json(first.progress), { step: 1 });
      const trailing = await session.take("heartbeat", (h) => sameKey(h.key, keyOf(task)));
      assert.deepEqual(
        json(trailing.progress),
        { step: 3 },
        "the throttled heartbeat carries the latest progress",
      );
      assert.ok(
        !session.has(
          "heartbeat",
          (h) => json(h.progress) !== null && (json(h.progress) as { step: number }).step === 2,
        ),
      );

      session.send({ case: "ping", value: create(PingSchema, { nonce: 7n }) });
      assert.equal((await session.take("pong")).nonce, 7n);
      release.open();
      await session.take("completed", (c) => sameKey(c.key, keyOf(task)));
    },
  );

  it(
    "reconnects after the scheduler dies, re-attaches with its held leases and delivers reports on the new session",
    { timeout: 15_000 },
    async () => {
      const gates = new Map([
        ["a", gate()],
        ["b", gate()],
      ]);
      const { scheduler, executor, session } = await attached({}, (e) =>
        e.register("test.block", async (input: { id: string }) => {
          await gates.get(input.id)?.opened;
          return { finished: input.id };
        }),
      );
      const a = lease("test.block", { id: "a" });
      const b = lease("test.block", { id: "b" });
      session.send({ case: "lease", value: a });
      session.send({ case: "lease", value: b });
      await session.take("started", (s) => sameKey(s.key, keyOf(a)));
      await session.take("started", (s) => sameKey(s.key, keyOf(b)));

      const connecting = waitState(executor, "CONNECTING");
      scheduler.kill();
      await connecting;
      // Task a finishes while there is no session: its report waits for the next one.
      gates.get("a")?.open();
      await waitFor(() => executor.runningTasks === 1, "task a to finish");

      const restarted = await FakeScheduler.start(scheduler.port);
      const next = await restarted.session(0);
      const attach = await next.take("attach");
      assert.deepEqual(
        attach.heldLeases.map((k) => k.taskRunId).sort(),
        [keyOf(a).taskRunId, keyOf(b).taskRunId].sort(),
        "held leases: b still runs, a's report is not delivered yet",
      );
      const completedA = await next.take("completed", (c) => sameKey(c.key, keyOf(a)));
      assert.deepEqual(json(completedA.output), { finished: "a" });
      const credit = await next.take("credit");
      assert.equal(credit.n, 3, "every slot but b's");
      assert.ok(
        next.indexOf("completed") < next.indexOf("credit"),
        "queued reports go first, right after the AttachAck",
      );
      await waitState(executor, "ATTACHED");

      gates.get("b")?.open();
      const completedB = await next.take("completed", (c) => sameKey(c.key, keyOf(b)));
      assert.deepEqual(json(completedB.output), { finished: "b" });
      assert.equal((await next.take("credit")).n, 1);
    },
  );

  it(
    "keeps each report until the scheduler acknowledges it, and sends the unacknowledged ones again on the next session",
    { timeout: 15_000 },
    async () => {
      const scheduler = await FakeScheduler.start(0, { ackReports: false });
      const executor = newExecutor(scheduler);
      await executor.start();
      const session = await scheduler.session(0);
      await session.take("credit");
      const a = lease("noop", { id: "a" });
      const b = lease("noop", { id: "b" });
      session.send({ case: "lease", value: a });
      await session.take("completed", (c) => sameKey(c.key, keyOf(a)));
      // a's change is committed; b's report arrives and the scheduler stops before committing it.
      session.send({ case: "acked", value: create(AckedSchema, { through: 1n }) });
      session.send({ case: "lease", value: b });
      await session.take("completed", (c) => sameKey(c.key, keyOf(b)));

      const connecting = waitState(executor, "CONNECTING");
      scheduler.kill();
      await connecting;
      const restarted = await FakeScheduler.start(scheduler.port, { ackReports: false });
      const next = await restarted.session(0);
      const attach = await next.take("attach");
      assert.deepEqual(
        attach.heldLeases.map((k) => k.taskRunId),
        [keyOf(b).taskRunId],
        "b's lease is held until its report is acknowledged; a's is not",
      );
      const again = await next.take("completed", (c) => sameKey(c.key, keyOf(b)));
      assert.deepEqual(json(again.output), { id: "b" });
      await next.take("credit", (c) => c.n === 4);
      assert.ok(!next.has("completed", (c) => sameKey(c.key, keyOf(a))), "a is not sent again");

      // Stopping waits for the acknowledgement of b's report (until the drain timeout).
      const stopped = executor.stop("test over");
      next.send({ case: "acked", value: create(AckedSchema, { through: 1n }) });
      await stopped;
      assert.equal(executor.state, "STOPPED");
    },
  );

  it(
    "aborts a held lease the scheduler revoked on re-attach, without reporting it",
    { timeout: 15_000 },
    async () => {
      const { scheduler, executor, session } = await attached();
      const sleeping = lease("sleep", { duration: "60s" });
      session.send({ case: "lease", value: sleeping });
      await session.take("started", (s) => sameKey(s.key, keyOf(sleeping)));

      const connecting = waitState(executor, "CONNECTING");
      scheduler.kill();
      await connecting;
      const restarted = await FakeScheduler.start(scheduler.port, { revoke: (attach) => attach.heldLeases });
      const next = await restarted.session(0);
      const attach = await next.take("attach");
      assert.deepEqual(
        attach.heldLeases.map((k) => k.taskRunId),
        [keyOf(sleeping).taskRunId],
      );
      await next.take("credit", (c) => c.n === 3);
      // The aborted task gives its slot back once it has stopped; it reports nothing.
      await next.take("credit", (c) => c.n === 1);
      assert.equal(executor.runningTasks, 0);
      assert.ok(!next.has("failed") && !next.has("completed"));
    },
  );

  it(
    "aborts a running task without reporting it when the scheduler rejects its lease",
    { timeout: 10_000 },
    async () => {
      const { executor, session } = await attached();
      const sleeping = lease("sleep", { duration: "60s" });
      session.send({ case: "lease", value: sleeping });
      await session.take("started", (s) => sameKey(s.key, keyOf(sleeping)));
      session.send({
        case: "rejected",
        value: create(RejectedSchema, {
          key: keyOf(sleeping),
          code: "FAILED_PRECONDITION",
          message: "stale fencing token",
        }),
      });
      await session.take("credit", (c) => c.n === 1);
      assert.equal(executor.runningTasks, 0);
      assert.ok(!session.has("failed") && !session.has("completed"));
    },
  );

  it(
    "stop() drains: sends Drain, releases new leases, lets running tasks finish and closes the stream",
    { timeout: 10_000 },
    async () => {
      const release = gate();
      const { executor, session } = await attached({}, (e) =>
        e.register("test.block", async () => {
          await release.opened;
          return "finished";
        }),
      );
      const states: ExecutorState[] = [];
      executor.onStateChange((state) => states.push(state));
      const running = lease("test.block");
      session.send({ case: "lease", value: running });
      await session.take("started", (s) => sameKey(s.key, keyOf(running)));

      const stopped = executor.stop("SIGTERM");
      assert.equal((await session.take("drain")).reason, "SIGTERM");
      assert.equal(executor.state, "DRAINING");
      const late = lease("noop");
      session.send({ case: "lease", value: late });
      const released = await session.take("release", (r) => sameKey(r.key, keyOf(late)));
      assert.match(released.reason, /draining/);

      release.open();
      await session.take("completed", (c) => sameKey(c.key, keyOf(running)));
      await stopped;
      assert.equal(executor.state, "STOPPED");
      assert.deepEqual(states, ["DRAINING", "STOPPED"]);
      await session.until(() => session.ended, "the executor to close the stream");
      assert.ok(!session.has("credit", (c) => c.n === 1), "no credit once draining");
      assert.ok(!session.has("started", (s) => sameKey(s.key, keyOf(late))));
    },
  );

  it(
    "stop() aborts tasks still running at the drain timeout and reports them as retryable EXECUTOR_SHUTDOWN",
    { timeout: 10_000 },
    async () => {
      const { executor, session } = await attached({ drainTimeoutMs: 50 });
      const sleeping = lease("sleep", { duration: "60s" });
      session.send({ case: "lease", value: sleeping });
      await session.take("started", (s) => sameKey(s.key, keyOf(sleeping)));
      await executor.stop("SIGTERM");
      const failed = await session.take("failed", (f) => sameKey(f.key, keyOf(sleeping)));
      assert.equal(failed.error?.type, "EXECUTOR_SHUTDOWN");
      assert.equal(failed.error?.retryable, true);
      assert.equal(executor.state, "STOPPED");
    },
  );

  it(
    "makes each session's metadata anew: a rotated token goes on the reconnect, a failing provider is retried",
    { timeout: 10_000 },
    async () => {
      const scheduler = await FakeScheduler.start();
      let token = "first";
      let calls = 0;
      const executor = newExecutor(scheduler, {
        metadata: () => {
          calls++;
          if (calls === 1) throw new Error("the token file is not there yet");
          const metadata = new grpc.Metadata();
          metadata.set("authorization", `Bearer ${token}`);
          return metadata;
        },
      });
      await executor.start();
      const first = await scheduler.session(0);
      assert.deepEqual(first.call.metadata.get("authorization"), ["Bearer first"]);
      assert.equal(calls, 2, "the failed attempt was retried");

      token = "rotated";
      const connecting = waitState(executor, "CONNECTING");
      scheduler.kill();
      await connecting;
      const restarted = await FakeScheduler.start(scheduler.port);
      const next = await restarted.session(0);
      assert.deepEqual(next.call.metadata.get("authorization"), ["Bearer rotated"]);
      await waitState(executor, "ATTACHED");
    },
  );

  it("stop() before the first AttachAck rejects start() with STOPPED", { timeout: 10_000 }, async () => {
    const scheduler = await FakeScheduler.start(0, { autoAck: false });
    const executor = newExecutor(scheduler);
    const starting = executor.start();
    const session = await scheduler.session(0);
    await session.take("attach");
    assert.equal(executor.state, "CONNECTING");
    await executor.stop();
    await assert.rejects(starting, (e) => isExecutorError(e, "STOPPED"));
    assert.equal(executor.state, "STOPPED");
  });

  it(
    "start() rejects with ATTACH_REFUSED when the server does not serve ExecutorService",
    { timeout: 10_000 },
    async () => {
      const server = new grpc.Server();
      servers.push(server);
      const port = await bind(server, 0);
      const executor = new Executor({ schedulerAddress: `127.0.0.1:${port}`, logger });
      executors.push(executor);
      await assert.rejects(
        executor.start(),
        (e) => isExecutorError(e, "ATTACH_REFUSED") && /UNIMPLEMENTED/.test(e.message),
      );
      assert.equal(executor.state, "STOPPED");
    },
  );

  it(
    "reports an output as deep as a report carries, and fails a deeper one INVALID_OUTPUT instead of losing the task",
    { timeout: 10_000 },
    async () => {
      const { session } = await attached({ slots: 1 }, (e) =>
        e.register("test.deep", (input: { levels: number }) => nested(input.levels)),
      );
      const fits = lease("test.deep", { levels: 48 });
      session.send({ case: "lease", value: fits });
      const completed = await session.take("completed", (c) => sameKey(c.key, keyOf(fits)));
      assert.deepEqual(json(completed.output), nested(48));
      assert.equal((await session.take("credit")).n, 1, "its slot free again");
      const deeper = lease("test.deep", { levels: 49 });
      session.send({ case: "lease", value: deeper });
      const failed = await session.take("failed", (f) => sameKey(f.key, keyOf(deeper)));
      assert.equal(failed.error?.type, "INVALID_OUTPUT");
      assert.equal(failed.error?.retryable, false);
      assert.match(failed.error?.message ?? "", /nested deeper than 48 levels of arrays and objects/);
      assert.equal((await session.take("credit")).n, 1, "its slot free again");
    },
  );

  it(
    "fails an http task whose 2xx JSON body is 100 levels deep, and grants its slot again",
    { timeout: 10_000 },
    async () => {
      const partner = createServer((_req, res) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end("[".repeat(100) + "]".repeat(100)); // 200 bytes
      });
      await new Promise<void>((resolve) => partner.listen(0, "127.0.0.1", resolve));
      try {
        const url = `http://127.0.0.1:${(partner.address() as AddressInfo).port}/deep`;
        const { session } = await attached({ slots: 1 });
        const l = lease("http", { url });
        session.send({ case: "lease", value: l });
        const failed = await session.take("failed", (f) => sameKey(f.key, keyOf(l)));
        assert.equal(failed.error?.type, "INVALID_OUTPUT");
        assert.equal(failed.error?.retryable, false);
        assert.equal((await session.take("credit")).n, 1, "its slot free again");
      } finally {
        partner.closeAllConnections();
        partner.close();
      }
    },
  );

  it(
    "sends heartbeats without progress nested too deep, from the throttle's timer too, and survives",
    { timeout: 10_000 },
    async () => {
      const { open, opened } = gate();
      const { session } = await attached({}, (e) =>
        e.register("test.progress", async (_input, ctx: TaskContext) => {
          ctx.heartbeat(nested(100)); // sent at once
          ctx.heartbeat(nested(100)); // throttled: sent from a timer, where a throw ends the process
          await opened;
          return { ok: true };
        }),
      );
      const l = lease("test.progress");
      l.heartbeatTimeoutMs = 200; // a throttle of 50 ms
      session.send({ case: "lease", value: l });
      const heartbeats = () =>
        session.received.filter((m) => m.case === "heartbeat" && sameKey(m.value.key, keyOf(l)));
      await session.until(() => heartbeats().length === 2, "two heartbeats");
      open();
      await session.take("completed", (c) => sameKey(c.key, keyOf(l)));
      assert.deepEqual(
        heartbeats().map((m) => m.case === "heartbeat" && m.value.progress),
        [undefined, undefined],
      );
    },
  );

  it(
    "ignores a lease sent again while its report is not acknowledged: it does not run twice",
    { timeout: 10_000 },
    async () => {
      const scheduler = await FakeScheduler.start(0, { ackReports: false });
      const executor = newExecutor(scheduler);
      let runs = 0;
      executor.register("test.count", () => ({ run: ++runs }));
      await executor.start();
      const session = await scheduler.session(0);
      await session.take("credit");
      const l = lease("test.count");
      session.send({ case: "lease", value: l });
      await session.take("completed", (c) => sameKey(c.key, keyOf(l)));
      session.send({ case: "lease", value: l }); // the same lease again, its Completed not acknowledged
      // Handled in order: once the Pong comes, the lease was (a handler starts on its lease).
      session.send({ case: "ping", value: create(PingSchema, { nonce: 42n }) });
      await session.take("pong", (p) => p.nonce === 42n);
      assert.equal(runs, 1, "the handler ran once");
      assert.equal(executor.runningTasks, 0);
    },
  );

  it("start() rejects when taskTypes names an unregistered type", async () => {
    const executor = new Executor({ schedulerAddress: "127.0.0.1:1", taskTypes: ["noop", "nope"], logger });
    await assert.rejects(
      executor.start(),
      (e) => isExecutorError(e, "UNKNOWN_TASK_TYPES") && /"nope"/.test(e.message),
    );
    assert.equal(executor.state, "IDLE");
  });
}

describe("Executor, with a scheduler of session protocol version 2", { timeout: 60_000 }, () => {
  before(() => (schedulerProtocolVersion = 2));
  executorTests();
});

describe("Executor, with a scheduler older than session protocol versions", { timeout: 60_000 }, () => {
  before(() => (schedulerProtocolVersion = 0));
  executorTests();
});

describe("Executor batches (session protocol version 2)", { timeout: 60_000 }, () => {
  after(async () => {
    await Promise.all(executors.map((e) => e.stop("test over")));
    for (const server of servers) server.forceShutdown();
  });

  /** An executor attached to a fake scheduler of `protocolVersion`, its four slots granted. */
  const start = async (protocolVersion: number, options: FakeSchedulerOptions = {}) => {
    const scheduler = await FakeScheduler.start(0, { ...options, protocolVersion });
    const executor = newExecutor(scheduler);
    await executor.start();
    const session = await scheduler.session(0);
    assert.equal((await session.take("credit")).n, 4);
    return { scheduler, executor, session };
  };

  it("start() rejects with ATTACH_REFUSED when the scheduler speaks none of its protocol versions", async () => {
    const server = new grpc.Server();
    servers.push(server);
    const details = versionRefusal(SESSION_PROTOCOL_VERSION, 7, 9);
    let attaches = 0;
    server.addService(serviceDefinition(ExecutorService), {
      session: (call: ServerCall) =>
        call.once("data", () => {
          attaches++;
          call.emit("error", { code: grpc.status.FAILED_PRECONDITION, details });
        }),
    });
    const port = await bind(server, 0);
    const executor = new Executor({ schedulerAddress: `127.0.0.1:${port}`, logger });
    executors.push(executor);
    await assert.rejects(
      executor.start(),
      (e) => isExecutorError(e, "ATTACH_REFUSED") && e.message.endsWith(`FAILED_PRECONDITION: ${details}`),
    );
    assert.equal(executor.state, "STOPPED");
    assert.equal(attaches, 1, "no version of its own to fall back to");
  });

  it("says which protocol version it speaks in the Attach", async () => {
    const { session } = await start(SESSION_PROTOCOL_VERSION);
    assert.equal((await session.take("attach")).protocolVersion, SESSION_PROTOCOL_VERSION);
  });

  it("runs each lease of a LeaseBatch and reports what one turn finished in one Reports message", async () => {
    const { session } = await start(2);
    const batch = [1, 2, 3, 4].map((i) => lease("noop", { i }));
    session.send({ case: "leases", value: create(LeaseBatchSchema, { leases: batch }) });
    for (const l of batch) {
      const done = await session.take("completed", (c) => sameKey(c.key, keyOf(l)));
      assert.deepEqual(json(done.output), json(l.input));
    }
    assert.equal((await session.take("credit")).n >= 1, true);
    // Four results in fewer messages than four: at least one Reports held several.
    assert.ok(
      session.reportFrames.some((n) => n > 1),
      `Reports sizes: ${session.reportFrames.join(", ")}`,
    );
  });

  it("sends a scheduler older than versions each report alone", async () => {
    const { session } = await start(0);
    const batch = [1, 2, 3].map((i) => lease("noop", { i }));
    for (const l of batch) session.send({ case: "lease", value: l });
    for (const l of batch) await session.take("completed", (c) => sameKey(c.key, keyOf(l)));
    assert.deepEqual(session.reportFrames, [], "no Reports message");
  });

  it(
    "sends the unacknowledged reports of a lost session again, batched, on the next one",
    { timeout: 15_000 },
    async () => {
      const { scheduler, executor, session } = await start(2, { ackReports: false });
      const batch = [1, 2, 3].map((i) => lease("noop", { i }));
      session.send({ case: "leases", value: create(LeaseBatchSchema, { leases: batch }) });
      for (const l of batch) await session.take("completed", (c) => sameKey(c.key, keyOf(l)));
      // The first result is committed; the scheduler is lost before the others are.
      session.send({ case: "acked", value: create(AckedSchema, { through: 1n }) });
      // The Pong follows the Acked's handling.
      session.send({ case: "ping", value: create(PingSchema, { nonce: 7n }) });
      await session.take("pong", (p) => p.nonce === 7n);
      const connecting = waitState(executor, "CONNECTING");
      scheduler.kill();
      await connecting;
      const restarted = await FakeScheduler.start(scheduler.port, { ackReports: false, protocolVersion: 2 });
      const next = await restarted.session(0);
      const attach = await next.take("attach");
      const ordered = session.received
        .filter((m) => m.case === "completed")
        .map((m) => (m.value as { key?: LeaseKey }).key?.taskRunId);
      assert.deepEqual(
        attach.heldLeases.map((k) => k.taskRunId),
        ordered.slice(1),
        "the leases of the unacknowledged reports are held",
      );
      for (const taskRunId of ordered.slice(1))
        await next.take("completed", (c) => c.key?.taskRunId === taskRunId);
      assert.deepEqual(next.reportFrames, [2], "both again, in one Reports, before the credit");
      await next.take("credit");
      assert.ok(next.indexOf("completed") < next.indexOf("credit"));
      const stopped = executor.stop("test over");
      next.send({ case: "acked", value: create(AckedSchema, { through: 2n }) });
      await stopped;
      assert.equal(executor.state, "STOPPED");
    },
  );
});

describe("Executor, map elements' folders by session protocol version", { timeout: 60_000 }, () => {
  let root: string;
  let store: FilesystemArtifactStore;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), "nf-executor-element-folders-"));
    store = new FilesystemArtifactStore({ root });
    await store.ensureReady();
  });
  after(async () => {
    await Promise.all(executors.map((e) => e.stop("test over")));
    for (const server of servers) server.forceShutdown();
    await rm(root, { recursive: true, force: true });
  });

  /** An executor storing in `store` (outputs over 64 bytes offloaded) attached to `scheduler`. */
  const started = async (scheduler: FakeScheduler) => {
    const executor = newExecutor(scheduler, {
      artifacts: store,
      logSink: new ArtifactLogSink({ store }),
      offloadThresholdBytes: 64,
    });
    executor.register("element", (input: { i: number }, ctx) => {
      ctx.log.info(`element ${input.i}`);
      return { i: input.i, pad: "x".repeat(200) };
    });
    await executor.start();
    return executor;
  };

  /** Sends element 3 of a map step on `session` and returns the folder its Completed names. */
  const runElement = async (session: FakeSession): Promise<{ folder: string; l: Lease }> => {
    await session.take("credit");
    const l = lease("element", { i: 3 });
    l.elementIndex = 3;
    session.send({ case: "lease", value: l });
    const done = await session.take("completed", (c) => sameKey(c.key, keyOf(l)));
    const output = done.outputRef?.key ?? "";
    assert.ok(output.endsWith("output.json"), "offloaded");
    assert.equal(done.logs?.key, output.replace(/output\.json$/, "logs.jsonl"));
    return { folder: output.slice(0, -"output.json".length), l };
  };

  it(`stores a map element in its own folder on a session of version ${ELEMENT_FOLDERS_VERSION}`, async () => {
    const scheduler = await FakeScheduler.start(0, { protocolVersion: ELEMENT_FOLDERS_VERSION });
    await started(scheduler);
    const session = await scheduler.session(0);
    assert.equal((await session.take("attach")).protocolVersion, SESSION_PROTOCOL_VERSION);
    const { folder, l } = await runElement(session);
    assert.equal(folder, `runs/${l.runId}/${l.stepId}/element-3/attempt-1/`);
  });

  it("attaches again with the version an older scheduler speaks, then stores map elements in the step's folder", async () => {
    const scheduler = await FakeScheduler.start(0, { protocolVersion: 2, speaks: 2 });
    const executor = await started(scheduler);
    const refused = await scheduler.session(0);
    assert.equal((await refused.take("attach")).protocolVersion, SESSION_PROTOCOL_VERSION);
    const session = await scheduler.session(1);
    assert.equal((await session.take("attach")).protocolVersion, 2);
    assert.equal(executor.state, "ATTACHED");
    const { folder, l } = await runElement(session);
    // What the older scheduler's check takes: the step's attempt folder, as before element folders.
    assert.equal(folder, `runs/${l.runId}/${l.stepId}/attempt-1/`);
    assert.equal(scheduler.sessions.length, 2, "one refused session, one attached");
  });

  it("without the versions in the refusal, tries the version below its own", async () => {
    const server = new grpc.Server();
    servers.push(server);
    const offered: number[] = [];
    server.addService(serviceDefinition(ExecutorService), {
      session: (call: ServerCall) =>
        call.once("data", (request: SessionRequest) => {
          const version = request.message.case === "attach" ? request.message.value.protocolVersion : 0;
          offered.push(version);
          call.emit("error", {
            code: grpc.status.FAILED_PRECONDITION,
            details: `attach.protocol_version: version ${version} is not spoken here`,
          });
        }),
    });
    const port = await bind(server, 0);
    const executor = new Executor({ schedulerAddress: `127.0.0.1:${port}`, logger });
    executors.push(executor);
    await assert.rejects(executor.start(), (e) => isExecutorError(e, "ATTACH_REFUSED"));
    assert.deepEqual(
      offered,
      Array.from({ length: SESSION_PROTOCOL_VERSION }, (_, i) => SESSION_PROTOCOL_VERSION - i),
      "each version it speaks once, newest first",
    );
  });
});
