/**
 * Test support for the scheduler's integration tests: a real embedded PostgreSQL per test file, a
 * real scheduler on port 0, typed Connect clients over gRPC, and a raw session client for protocol
 * tests. Everything is torn down by `close()`.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Client, type Code } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import {
  clientConstructor,
  createLogger,
  jsonToValue,
  lifecycleEventId,
  type Logger,
} from "@nexusflow/common";
import { createMetricsRegistry } from "@nexusflow/common/metrics";
import {
  EventService,
  ExecutorService,
  type LeaseKeySchema,
  LifecycleEventBatchSchema,
  RunStatus,
  ScheduleService,
  SessionRequestSchema,
  WorkflowService,
  type LifecycleEvent,
  type Run,
  type SessionRequest,
  type SessionResponse,
} from "@nexusflow/gen";
import { Executor, type ExecutorOptions } from "@nexusflow/executor";
import type pg from "pg";
import { after, before } from "node:test";
import { openDatabase, type Database } from "../src/persistence/database.js";
import { startEmbeddedPostgres, type EmbeddedDatabase } from "../src/persistence/embedded-postgres.js";
import { randomUUID } from "node:crypto";
import type { CompiledWorkflow } from "../src/dag/index.js";
import { newRunState, newTaskState, type RunState, type TaskState } from "../src/model/run-state.js";
import type { BatchWriter } from "../src/persistence/batch-writer.js";
import { lifecycleEvent, rowTraceContexts } from "../src/persistence/outbox.js";
import { Scheduler, type SchedulerOptions } from "../src/scheduler.js";

/** A quiet logger for tests (LOG_LEVEL overrides). */
export function testLogger(name = "test"): Logger {
  return createLogger(name, (process.env["TEST_LOG_LEVEL"] as "warn" | undefined) ?? "warn");
}

/** A temporary embedded PostgreSQL for one test file. */
export async function startTestDatabase(): Promise<{
  url: string;
  server: EmbeddedDatabase;
  close(): Promise<void>;
}> {
  const dir = await mkdtemp(join(tmpdir(), "nf-test-"));
  const server = await startEmbeddedPostgres({ dir: join(dir, "pg"), log: testLogger("postgres") });
  return {
    url: server.url,
    server,
    async close() {
      await server.destroy();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A migrated test database for the tests of the calling suite: started (and the schema applied)
 * before them, closed after. Read `db` inside a test or hook.
 */
export function migratedTestDatabase(): { readonly db: Database; readonly url: string } {
  let server: Awaited<ReturnType<typeof startTestDatabase>> | undefined;
  let db: Database | undefined;
  before(async () => {
    server = await startTestDatabase();
    db = await openDatabase({ url: server.url, log: testLogger("db") });
  });
  after(async () => {
    await db?.close();
    await server?.close();
  });
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error("the test database is used before its suite started it");
    return value;
  };
  return {
    get db(): Database {
      return started(db);
    },
    get url(): string {
      return started(server).url;
    },
  };
}

/**
 * A new run of definition `definitionId` (named `name`, or by its id) with one queued task and its
 * runStarted event, marked on `writer` (the batch writer's tests); `prepare` sets the task up first.
 */
export function markQueuedRun(
  writer: BatchWriter,
  definitionId: number,
  name: string | ((runId: string) => string),
  options: { input?: unknown; prepare?: (task: TaskState) => void } = {},
): RunState {
  const now = new Date();
  const id = randomUUID();
  const run = newRunState({
    id,
    definitionId,
    workflow: {
      name: typeof name === "string" ? name : name(id),
      version: 1,
      timeoutMs: null,
    } as CompiledWorkflow,
    input: options.input ?? null,
    idempotencyKey: null,
    labels: {},
    now,
  });
  const task = newTaskState(run.id, "only", "STEP", "noop", 0, now);
  task.status = "QUEUED";
  task.queuedAt = now;
  options.prepare?.(task);
  run.tasks.set(task.stepId, task);
  writer.markRun(run);
  writer.markTask(task);
  writer.addEvent(lifecycleEvent(run, { case: "runStarted", value: {} }));
  return run;
}

/** Starts a scheduler in this process on a free port against `url`. */
export async function startTestScheduler(
  url: string,
  options: Partial<SchedulerOptions> = {},
): Promise<Scheduler> {
  const scheduler = new Scheduler({
    port: 0,
    databaseUrl: url,
    log: testLogger("scheduler"),
    heartbeatIntervalMs: 200,
    sessionTimeoutMs: 1500,
    ...options,
  });
  await scheduler.start();
  return scheduler;
}

/**
 * A scheduler as a deployment runs it for Prometheus: its metrics recorded and served on a free
 * port, and the outbox relay running without Kafka (events are passed and pruned), so that its
 * outbox gauges are there too. `options` override.
 */
export function startMeteredTestScheduler(
  url: string,
  options: Partial<SchedulerOptions> = {},
): Promise<Scheduler> {
  return startTestScheduler(url, {
    metrics: createMetricsRegistry(),
    metricsEndpoint: { host: "127.0.0.1", port: 0, explicit: true },
    events: {
      brokers: undefined,
      topic: "t",
      partitions: 1,
      replicationFactor: 1,
      clientId: "c",
      retentionMs: 3_600_000,
      pruneIntervalMs: 60_000,
      batchSize: 500,
    },
    ...options,
  });
}

/**
 * Starts an executor against `scheduler` (test logger; `options` override; `handlers` registers
 * the test's handlers before it starts) and waits until its session is attached with credit, so a
 * run started next is leased at once.
 */
export async function startTestExecutor(
  scheduler: Scheduler,
  options: Partial<ExecutorOptions> & { executorId: string },
  handlers?: (executor: Executor) => void,
): Promise<Executor> {
  const executor = new Executor({
    schedulerAddress: scheduler.address,
    logger: testLogger("executor"),
    ...options,
  });
  handlers?.(executor);
  await executor.start();
  await waitFor(`executor ${options.executorId}'s session`, () =>
    [...scheduler.engine.sessions()].some((s) => s.executorId === options.executorId && s.credit > 0)
      ? true
      : undefined,
  );
  return executor;
}

/** A typed WorkflowService client over gRPC. */
export function workflowClient(address: string): Client<typeof WorkflowService> {
  return createClient(WorkflowService, createGrpcTransport({ baseUrl: `http://${address}` }));
}

/** A typed ScheduleService client over gRPC. */
export function scheduleClient(address: string): Client<typeof ScheduleService> {
  return createClient(ScheduleService, createGrpcTransport({ baseUrl: `http://${address}` }));
}

/** A typed EventService client over gRPC. */
export function eventClient(address: string): Client<typeof EventService> {
  return createClient(EventService, createGrpcTransport({ baseUrl: `http://${address}` }));
}

/**
 * The most spans that overlapped in time (an unended span lasts for ever). Ends come before starts
 * at the same millisecond: a span started when another ends is no overlap.
 */
export function mostOverlapping(spans: readonly { start: Date; end: Date | null }[]): number {
  const edges: [number, number][] = [];
  for (const s of spans) {
    edges.push([s.start.getTime(), 1]);
    edges.push([s.end?.getTime() ?? Number.MAX_SAFE_INTEGER, -1]);
  }
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let most = 0;
  for (const [, d] of edges) most = Math.max(most, (now += d));
  return most;
}

/** The error of a call that must fail, as a ConnectError (fails the test if the call succeeds). */
export async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  assert.fail("expected the call to fail");
}

/** The code and message of a refused call (fails the test if the call succeeds). */
export async function refusal(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (e) {
    const err = ConnectError.from(e);
    return { code: err.code, message: err.rawMessage };
  }
  assert.fail("the call succeeded");
}

/** Registers a JSON workflow definition (must be new or identical). */
export async function registerSpec(
  client: Client<typeof WorkflowService>,
  spec: Record<string, unknown>,
): Promise<void> {
  await client.registerWorkflow({ definition: { case: "specJson", value: JSON.stringify(spec) } });
}

/** Starts a run of the latest version of `workflowName` with `input`; its id. */
export async function startRunOf(
  client: Client<typeof WorkflowService>,
  workflowName: string,
  input: unknown = {},
): Promise<string> {
  const { run } = await client.startRun({ workflowName, input: jsonToValue(input) });
  if (run === undefined) throw new Error(`StartRun of ${workflowName} answered no run`);
  return run.id;
}

export { waitFor } from "@nexusflow/common/testing";

import { waitFor } from "@nexusflow/common/testing";

const TERMINAL = new Set([
  RunStatus.SUCCEEDED,
  RunStatus.FAILED,
  RunStatus.CANCELLED,
  RunStatus.TIMED_OUT,
  RunStatus.COMPENSATED,
  RunStatus.COMPENSATION_FAILED,
]);

/** Waits for a run to reach a terminal state and returns it (with tasks). */
export async function waitForRun(
  client: Client<typeof WorkflowService>,
  runId: string,
  timeoutMs = 30_000,
): Promise<Run> {
  return waitFor(
    `run ${runId} to finish`,
    async () => {
      const { run } = await client.getRun({ runId });
      return run !== undefined && TERMINAL.has(run.status) ? run : undefined;
    },
    timeoutMs,
  );
}

/** A raw executor session for protocol tests: send messages, await the next response. */
export class RawSession {
  private readonly client: grpc.Client & {
    session(metadata?: grpc.Metadata): grpc.ClientDuplexStream<SessionRequest, SessionResponse>;
  };
  readonly stream: grpc.ClientDuplexStream<SessionRequest, SessionResponse>;
  private readonly inbox: SessionResponse[] = [];
  private waiters: ((m: SessionResponse) => void)[] = [];
  /** Whether pings are answered automatically (turn off to simulate a hung executor). */
  autoPong = true;
  /**
   * What an automatic Pong lists as held when its Ping asks (Ping.list_held); unset, it lists
   * nothing and leaves `held` unset, as an executor older than the field does.
   */
  held: (() => MessageInitShape<typeof LeaseKeySchema>[]) | undefined;
  /** Pings that asked for the held leases, so far. */
  listAsks = 0;
  /** The status the stream ended with, if it ended. */
  status: grpc.StatusObject | undefined;
  /** Error the stream ended with, if any. */
  error: (Error & { code?: number }) | undefined;

  /** `metadata` is sent when the stream opens (e.g. `authorization`). */
  constructor(address: string, metadata?: grpc.Metadata) {
    const Ctor = clientConstructor(ExecutorService);
    this.client = new Ctor(address, grpc.credentials.createInsecure()) as unknown as RawSession["client"];
    this.stream = this.client.session(metadata ?? new grpc.Metadata());
    this.stream.on("data", (m: SessionResponse) => {
      // Answer pings at once so the scheduler sees a live executor, as a real one would.
      if (m.message.case === "ping" && this.autoPong) {
        const listed = m.message.value.listHeld && this.held !== undefined ? this.held() : undefined;
        if (m.message.value.listHeld) this.listAsks++;
        this.send({
          case: "pong",
          value: {
            nonce: m.message.value.nonce,
            ...(listed === undefined ? {} : { held: { keys: listed } }),
          },
        });
      }
      const w = this.waiters.shift();
      if (w !== undefined) w(m);
      else this.inbox.push(m);
    });
    this.stream.on("status", (s: grpc.StatusObject) => (this.status = s));
    this.stream.on("error", (e: Error & { code?: number }) => (this.error = e));
  }

  /** Sends one message. */
  send(message: MessageInitShape<typeof SessionRequestSchema>["message"]): void {
    this.stream.write(
      create(SessionRequestSchema, { message } as MessageInitShape<typeof SessionRequestSchema>),
    );
  }

  /** The next response of the given case (others are skipped, pings answered), within `timeoutMs`. */
  async next<C extends NonNullable<SessionResponse["message"]["case"]>>(
    kind: C,
    timeoutMs = 10_000,
  ): Promise<Extract<SessionResponse["message"], { case: C }>["value"]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m =
        this.inbox.shift() ??
        (await new Promise<SessionResponse | undefined>((resolve) => {
          const t = setTimeout(
            () => {
              this.waiters = this.waiters.filter((w) => w !== done);
              resolve(undefined);
            },
            Math.max(0, deadline - Date.now()),
          );
          const done = (msg: SessionResponse): void => {
            clearTimeout(t);
            resolve(msg);
          };
          this.waiters.push(done);
        }));
      if (m === undefined) throw new Error(`no ${kind} within ${timeoutMs} ms`);
      if (m.message.case === "ping" && kind !== "ping") continue;
      if (m.message.case === kind) return m.message.value as never;
    }
  }

  /** Ends the stream and the client. */
  close(): void {
    this.stream.end();
    this.client.close();
  }
}

/** One event of the outbox, decoded from its row's payload. */
export interface OutboxEventRow {
  runId: string;
  sequence: number;
  type: string;
  eventId: string;
  published: boolean;
  /** The outbox row holding it (the events of one commit). */
  rowId: number;
  /** The trace context it is published with, if any. */
  traceContext: Readonly<Record<string, unknown>> | null;
  /** The whole event. */
  message: LifecycleEvent;
}

/**
 * The outbox events of `runIds`, by run then sequence: each row holds a commit's events (of any
 * runs) as a LifecycleEventBatch, which this splits and decodes.
 */
export async function outboxEvents(
  pool: { query: pg.Pool["query"] },
  runIds: readonly string[],
): Promise<OutboxEventRow[]> {
  const { rows } = await pool.query<{
    id: string;
    run_id: string;
    payload: Buffer;
    trace_context: unknown;
    event_traces: Buffer | null;
    published: boolean;
  }>(
    `SELECT id::text, run_id, payload, trace_context, event_traces, published_at IS NOT NULL AS published
       FROM outbox_events ORDER BY id`,
  );
  const wanted = new Set(runIds);
  return rows
    .flatMap((r) =>
      fromBinary(LifecycleEventBatchSchema, r.payload).events.map((message, i, all) => ({
        runId: message.runId === "" ? r.run_id : message.runId,
        traceContext: rowTraceContexts(r, all.length)[i] ?? null,
        sequence: Number(message.sequence),
        type: message.event.case ?? "unknown",
        // The outbox leaves event ids out; the relay derives them so.
        eventId: message.eventId || lifecycleEventId(message.runId || r.run_id, message.sequence),
        published: r.published,
        rowId: Number(r.id),
        message,
      })),
    )
    .filter((e) => wanted.has(e.runId))
    .sort((a, b) => (a.runId < b.runId ? -1 : a.runId > b.runId ? 1 : a.sequence - b.sequence));
}

/** The most intervals open at one instant (an end before a start at the same instant: touching intervals do not overlap). */
export function maxOverlap(spans: [number, number][]): number {
  const points = spans.flatMap(([s, e]) => [
    [s, 1],
    [e, -1],
  ]);
  points.sort((a, b) => (a[0] as number) - (b[0] as number) || (a[1] as number) - (b[1] as number));
  let open = 0;
  let most = 0;
  for (const [, d] of points) {
    open += d as number;
    most = Math.max(most, open);
  }
  return most;
}
