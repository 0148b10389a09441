/**
 * Group commit. Engine code changes its in-memory model synchronously and marks what changed; the
 * writer persists every marked run, task, attempt and outbox event in ONE statement (one implicit
 * transaction, one round trip, a prepared statement per shape of batch), while the next batch
 * accumulates behind it. A large batch is split by run into two statements that commit in
 * parallel on the writer's two connections; a run's changes and events always share one. Waiting
 * for `flush()` means "my change is durable". A failed commit (database down) is retried with
 * backoff, in order, until it succeeds or the writer is closed. A commit that PostgreSQL refuses for
 * its data (see {@link isDataError}) is split by run until the runs it cannot store are found; the
 * others commit, and each refused run's changes and events of that batch are handed to `onRefused`
 * instead of being retried forever (which would stop every later commit).
 */
import type pg from "pg";
import type { Logger } from "@nexusflow/common";
import type { AttemptState, RunState, TaskState } from "../model/run-state.js";
import { encodeRunBatches, type OutboxRow } from "./outbox.js";

/** What one committed batch contained, for watchers and metrics. */
export interface CommittedBatch {
  runIds: ReadonlySet<string>;
  taskIds: ReadonlySet<string>;
  events: number;
}

/**
 * One committed statement, as a {@link BatchWriter.observe} observer sees it (metrics). The runs
 * and tasks are the live objects: their state may have moved on since the statement was taken.
 */
export interface CommitObservation {
  /** Rows written (runs, tasks, attempts, outbox rows). */
  rows: number;
  /** Seconds from taking a connection to the statement's success. */
  seconds: number;
  /** The lifecycle events it committed, in order. */
  events: readonly OutboxRow[];
  /** The tasks it wrote, by id. */
  tasks: ReadonlyMap<string, TaskState>;
  /** The runs it wrote, by id. */
  runs: ReadonlyMap<string, RunState>;
}

/** Options of {@link BatchWriter}. */
export interface BatchWriterOptions {
  pool: pg.Pool;
  log: Logger;
  /** Called after each successful commit. */
  onCommit?: (batch: CommittedBatch) => void;
  /**
   * Called, before the batch's `flush()` waiters resolve, for a run whose changes PostgreSQL
   * refused for their data: they, the run's events of that batch and whatever was marked for the
   * run since are dropped (the run keeps its last committed state and events). Without it they
   * are logged and dropped.
   */
  onRefused?: (runId: string, error: Error) => void;
  /** First retry delay after a failed commit. @default 100 */
  retryInitialMs?: number;
  /** Longest retry delay. @default 2000 */
  retryMaxMs?: number;
}

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** Raised to flush() waiters when the writer is closed before their batch committed. */
export class WriterClosedError extends Error {
  override name = "WriterClosedError";
}

/**
 * Whether PostgreSQL refused a statement for the data it carries, so that retrying the same rows
 * can never succeed: SQLSTATE classes 22 (data exception, e.g. a NUL character), 23 (integrity
 * constraint violation) and 54 (program limit exceeded, e.g. a value too large or too deep).
 * Connection loss, shutdown, lack of resources and errors in the statement itself are not: those
 * are retried.
 */
export function isDataError(e: unknown): e is Error & { code: string } {
  const code = (e as { code?: unknown } | null)?.code;
  return e instanceof Error && typeof code === "string" && /^(22|23|54)/.test(code);
}

// Times travel as epoch milliseconds (numbers): JSON.stringify takes twice as long over Date
// objects (each one calls toJSON), and PostgreSQL parses a number faster than an ISO string.
// to_timestamp rounds to whole microseconds, so a millisecond time arrives exactly.
const ts = (column: string): string => `to_timestamp(${column} / 1000)`;

const RUN_COLUMNS = `id uuid, definition_id bigint, workflow_name text, workflow_version int, status text, input jsonb,
  output jsonb, error jsonb, idempotency_key text, labels jsonb, cancel_requested boolean, compensate_on_cancel boolean,
  event_seq bigint, deadline float8, created_at float8, ended_at float8, trace_parent text`;
const RUN_SQL = `INSERT INTO workflow_runs (id, definition_id, workflow_name, workflow_version, status, input, output, error,
  idempotency_key, labels, cancel_requested, compensate_on_cancel, event_seq, deadline, created_at, updated_at, ended_at,
  trace_parent)
SELECT id, definition_id, workflow_name, workflow_version, status, input, output, error, idempotency_key, labels,
  cancel_requested, compensate_on_cancel, event_seq, ${ts("deadline")}, ${ts("created_at")}, now(), ${ts("ended_at")},
  trace_parent
FROM json_to_recordset($1::json) AS x(${RUN_COLUMNS})
ON CONFLICT (id) DO UPDATE SET status = excluded.status, output = excluded.output, error = excluded.error,
  cancel_requested = excluded.cancel_requested, compensate_on_cancel = excluded.compensate_on_cancel,
  event_seq = excluded.event_seq, updated_at = now(), ended_at = excluded.ended_at`;

const TASK_COLUMNS = `id uuid, run_id uuid, step_id text, kind text, type text, status text, position int, input jsonb,
  output jsonb, output_ref jsonb, error jsonb, skip_reason text, attempt int, fencing_token bigint, executor_id text,
  lease_expires_at float8, next_attempt_at float8, queued_at float8, created_at float8, ended_at float8`;
const TASK_SQL = `INSERT INTO task_runs (id, run_id, step_id, kind, type, status, position, input, output, output_ref, error,
  skip_reason, attempt, fencing_token, executor_id, lease_expires_at, next_attempt_at, queued_at, created_at, updated_at, ended_at)
SELECT id, run_id, step_id, kind, type, status, position, input, output, output_ref, error, skip_reason, attempt,
  fencing_token, executor_id, ${ts("lease_expires_at")}, ${ts("next_attempt_at")}, ${ts("queued_at")}, ${ts("created_at")},
  now(), ${ts("ended_at")}
FROM json_to_recordset($1::json) AS x(${TASK_COLUMNS})
ON CONFLICT (id) DO UPDATE SET status = excluded.status, input = excluded.input, output = excluded.output,
  output_ref = excluded.output_ref, error = excluded.error, skip_reason = excluded.skip_reason, attempt = excluded.attempt,
  fencing_token = excluded.fencing_token, executor_id = excluded.executor_id, lease_expires_at = excluded.lease_expires_at,
  next_attempt_at = excluded.next_attempt_at, queued_at = excluded.queued_at, updated_at = now(), ended_at = excluded.ended_at`;

const ATTEMPT_SQL = `INSERT INTO task_attempts (task_run_id, number, run_id, fencing_token, executor_id, status, error, logs,
  leased_at, started_at, ended_at)
SELECT task_run_id, number, run_id, fencing_token, executor_id, status, error, logs, ${ts("leased_at")}, ${ts("started_at")},
  ${ts("ended_at")}
FROM json_to_recordset($1::json) AS x(task_run_id uuid, number int, run_id uuid, fencing_token bigint, executor_id text,
  status text, error jsonb, logs jsonb, leased_at float8, started_at float8, ended_at float8)
ON CONFLICT (task_run_id, number) DO UPDATE SET status = excluded.status, error = excluded.error, logs = excluded.logs,
  started_at = excluded.started_at, ended_at = excluded.ended_at`;

// One row per run and commit: its events as one LifecycleEventBatch (the relay publishes each).
const EVENT_SQL = `INSERT INTO outbox_events (run_id, first_sequence, last_sequence, payload, trace_context)
SELECT run_id, first_sequence, last_sequence, decode(payload, 'base64'), trace_context
FROM json_to_recordset($1::json) AS x(run_id uuid, first_sequence bigint, last_sequence bigint, payload text,
  trace_context jsonb)`;

// A StartRun idempotency key, committed with the run it names. A key only ever moves to a newer run
// (one started after the key expired); writing a recovered run again leaves a newer one's key alone.
const KEY_SQL = `INSERT INTO idempotency_keys (workflow_name, idempotency_key, run_id, request_hash, created_at)
SELECT workflow_name, idempotency_key, run_id, request_hash, ${ts("created_at")}
FROM json_to_recordset($1::json) AS x(workflow_name text, idempotency_key text, run_id uuid, request_hash text,
  created_at float8)
ON CONFLICT (workflow_name, idempotency_key) DO UPDATE SET run_id = excluded.run_id,
  request_hash = excluded.request_hash, created_at = excluded.created_at
WHERE idempotency_keys.created_at <= excluded.created_at`;

// Rows already written once are updated with only the columns a transition can change: smaller
// parameters to build and parse, and no speculative insert. The id array ($2) lets the planner find
// the rows by primary key (an estimate it cannot make for json_to_recordset); the writer's
// connections never scan a table (database.ts).
// With fillfactor 70 (migration HotUpdates) most of these updates are HOT: no index is touched
// unless status changes on a run.
const RUN_UPDATE_SQL = `UPDATE workflow_runs AS r SET status = x.status, output = x.output, error = x.error,
  cancel_requested = x.cancel_requested, compensate_on_cancel = x.compensate_on_cancel, event_seq = x.event_seq,
  updated_at = now(), ended_at = ${ts("x.ended_at")}
FROM json_to_recordset($1::json) AS x(id uuid, status text, output jsonb, error jsonb, cancel_requested boolean,
  compensate_on_cancel boolean, event_seq bigint, ended_at float8)
WHERE r.id = x.id AND r.id = ANY($2::uuid[])`;

const TASK_UPDATE_SQL = `UPDATE task_runs AS t SET status = x.status,
  input = CASE WHEN x.set_input THEN x.input ELSE t.input END, output = x.output, output_ref = x.output_ref,
  error = x.error, skip_reason = x.skip_reason, attempt = x.attempt, fencing_token = x.fencing_token,
  executor_id = x.executor_id, lease_expires_at = ${ts("x.lease_expires_at")},
  next_attempt_at = ${ts("x.next_attempt_at")}, queued_at = ${ts("x.queued_at")}, updated_at = now(),
  ended_at = ${ts("x.ended_at")}
FROM json_to_recordset($1::json) AS x(id uuid, status text, set_input boolean, input jsonb, output jsonb,
  output_ref jsonb, error jsonb, skip_reason text, attempt int, fencing_token bigint, executor_id text,
  lease_expires_at float8, next_attempt_at float8, queued_at float8, ended_at float8)
WHERE t.id = x.id AND t.id = ANY($2::uuid[])`;

const ATTEMPT_UPDATE_SQL = `UPDATE task_attempts AS a SET status = x.status, error = x.error, logs = x.logs,
  started_at = ${ts("x.started_at")}, ended_at = ${ts("x.ended_at")}
FROM json_to_recordset($1::json) AS x(task_run_id uuid, number int, status text, error jsonb, logs jsonb,
  started_at float8, ended_at float8)
WHERE a.task_run_id = x.task_run_id AND a.number = x.number AND a.task_run_id = ANY($2::uuid[])`;

// Rows carry only the values that are set: json_to_recordset reads a missing key as NULL, exactly
// as it reads a JSON null, so leaving nulls out changes nothing but the size of the parameter
// (about half of a task row) and the time to build, stringify and parse it.
type Row = Record<string, unknown>;

function runUpdateRow(r: RunState, row: Row = {}): Row {
  row.id = r.id;
  row.status = r.status;
  row.cancel_requested = r.cancelRequested;
  row.compensate_on_cancel = r.compensateOnCancel;
  row.event_seq = r.eventSeq;
  if (r.output !== null && r.output !== undefined) row.output = r.output;
  if (r.error !== null) row.error = r.error;
  if (r.endedAt !== null) row.ended_at = r.endedAt.getTime();
  return row;
}

function taskUpdateRow(t: TaskState, setInput: boolean, row: Row = {}): Row {
  row.id = t.id;
  row.status = t.status;
  row.attempt = t.attempt;
  row.fencing_token = t.fencingToken;
  if (setInput) {
    row.set_input = true;
    if (t.input !== null && t.input !== undefined) row.input = t.input;
  }
  if (t.output !== null && t.output !== undefined) row.output = t.output;
  if (t.outputRef !== null && t.outputRef !== undefined) row.output_ref = t.outputRef;
  if (t.error !== null) row.error = t.error;
  if (t.skipReason !== null) row.skip_reason = t.skipReason;
  if (t.executorId !== null) row.executor_id = t.executorId;
  if (t.leaseExpiresAt !== null) row.lease_expires_at = t.leaseExpiresAt.getTime();
  if (t.nextAttemptAt !== null) row.next_attempt_at = t.nextAttemptAt.getTime();
  if (t.queuedAt !== null) row.queued_at = t.queuedAt.getTime();
  if (t.endedAt !== null) row.ended_at = t.endedAt.getTime();
  return row;
}

function attemptUpdateRow(a: AttemptState, row: Row = {}): Row {
  row.task_run_id = a.taskRunId;
  row.number = a.number;
  row.status = a.status;
  if (a.error !== null) row.error = a.error;
  if (a.logs !== null && a.logs !== undefined) row.logs = a.logs;
  if (a.startedAt !== null) row.started_at = a.startedAt.getTime();
  if (a.endedAt !== null) row.ended_at = a.endedAt.getTime();
  return row;
}

// A row's first write: the update columns plus those fixed at creation (extra keys such as
// set_input are ignored by json_to_recordset).
function runRow(r: RunState): Row {
  const row: Row = {
    definition_id: r.definitionId,
    workflow_name: r.workflow.name,
    workflow_version: r.workflow.version,
    labels: r.labels,
    created_at: r.createdAt.getTime(),
  };
  if (r.input !== null && r.input !== undefined) row.input = r.input;
  if (r.idempotencyKey !== null) row.idempotency_key = r.idempotencyKey;
  if (r.deadline !== null) row.deadline = r.deadline.getTime();
  if (r.traceParent !== null) row.trace_parent = r.traceParent;
  return runUpdateRow(r, row);
}

function taskRow(t: TaskState): Row {
  const row: Row = {
    run_id: t.runId,
    step_id: t.stepId,
    kind: t.kind,
    type: t.type,
    position: t.position,
    created_at: t.createdAt.getTime(),
  };
  return taskUpdateRow(t, true, row);
}

function attemptRow(a: AttemptState): Row {
  const row: Row = {
    run_id: a.runId,
    fencing_token: a.fencingToken,
    executor_id: a.executorId,
    leased_at: a.leasedAt.getTime(),
  };
  return attemptUpdateRow(a, row);
}

/** Base64 of a view, without copying it first. */
function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

/** A batch as one statement: its SQL, a name per shape (for the prepared statement), parameters. */
interface BatchStatement {
  name: string;
  sql: string;
  params: unknown[];
}

/**
 * One table's rows of a batch (one of PARTS), each with the run it belongs to, kept so that a
 * refused batch can be split by run from exactly the values it was taken with.
 */
interface Section {
  sql: string;
  rows: Row[];
  runIds: string[];
  /** Primary keys for the UPDATE parts' `= ANY($2)`, aligned with rows. */
  keys?: string[];
}

/** The statement of `sections` (which are in PARTS order), or undefined when they hold no row. */
function statementOf(sections: Section[]): BatchStatement | undefined {
  const used = sections.filter((x) => x.rows.length > 0);
  if (used.length === 0) return undefined;
  const params: unknown[] = [];
  for (const x of used) {
    params.push(JSON.stringify(x.rows));
    if (x.keys !== undefined) params.push(x.keys);
  }
  return { ...batchStatement(used.map((x) => x.sql)), params };
}

const PARTS = [
  RUN_SQL,
  RUN_UPDATE_SQL,
  TASK_SQL,
  TASK_UPDATE_SQL,
  ATTEMPT_SQL,
  ATTEMPT_UPDATE_SQL,
  EVENT_SQL,
  KEY_SQL,
];
/** Statement text and name by shape: which of PARTS a batch has (at most 2^8 shapes). */
const statements = new Map<string, { name: string; sql: string }>();

/** The one statement of data-modifying CTEs for the given parts, in order, parameters numbered in turn. */
function batchStatement(parts: string[]): { name: string; sql: string } {
  const key = parts.map((sql) => PARTS.indexOf(sql)).join("");
  let statement = statements.get(key);
  if (statement === undefined) {
    let base = 0;
    const ctes = parts.map((sql, i) => {
      const from = base;
      let own = 0;
      const numbered = sql.replace(/\$(\d)::/g, (_, k: string) => {
        own = Math.max(own, Number(k));
        return `$${from + Number(k)}::`;
      });
      base += own;
      return `w${i} AS (${numbered})`;
    });
    statement = { name: `nexusflow_batch_${key}`, sql: `WITH ${ctes.join(",\n")}\nSELECT 1` };
    statements.set(key, statement);
  }
  return statement;
}

/** Runs plus tasks in a batch from which it commits as two parts in parallel (see BatchWriter.take). */
const SPLIT_ROWS = 256;

/** A batch, or one of its halves by run: what it holds and its statement. */
interface Part {
  runs: Map<string, RunState>;
  tasks: Map<string, TaskState>;
  attempts: Map<string, AttemptState>;
  events: OutboxRow[];
  sections: Section[];
  statement: BatchStatement | undefined;
  /** Rows it writes (runs, tasks, attempts), recorded as written once it commits. */
  written: Map<object, unknown>;
  /** Rows in the statement. */
  rows: number;
}

/** The runs a part touches. */
function runsOf(part: Part): string[] {
  const ids = new Set<string>();
  for (const x of part.sections) for (const id of x.runIds) ids.add(id);
  return [...ids];
}

/** The share of `part` that belongs to `runIds`, from the values the part was taken with. */
function subPart(part: Part, runIds: ReadonlySet<string>): Part {
  const sections = part.sections.map((x) => {
    const keep = x.runIds.map((id) => runIds.has(id));
    const pick = <T>(values: T[]): T[] => values.filter((_, i) => keep[i]);
    return {
      sql: x.sql,
      rows: pick(x.rows),
      runIds: pick(x.runIds),
      ...(x.keys === undefined ? {} : { keys: pick(x.keys) }),
    };
  });
  const byRun = <K, V>(m: Map<K, V>, runOf: (v: V) => string): Map<K, V> =>
    new Map([...m].filter(([, v]) => runIds.has(runOf(v))));
  const runs = byRun(part.runs, (r) => r.id);
  const tasks = byRun(part.tasks, (t) => t.runId);
  const attempts = byRun(part.attempts, (a) => a.runId);
  const kept = new Set<object>([...runs.values(), ...tasks.values(), ...attempts.values()]);
  return {
    runs,
    tasks,
    attempts,
    events: part.events.filter((e) => runIds.has(e.message.runId)),
    sections,
    statement: statementOf(sections),
    written: new Map([...part.written].filter(([row]) => kept.has(row))),
    rows: sections.reduce((n, x) => n + x.rows.length, 0),
  };
}

/** The group-commit writer. */
export class BatchWriter {
  private runs = new Map<string, RunState>();
  private tasks = new Map<string, TaskState>();
  private attempts = new Map<string, AttemptState>();
  private events: OutboxRow[] = [];
  private waiters: Waiter[] = [];
  /**
   * Rows known to exist in the database, and for tasks the input they were last written with.
   * Unknown rows (new, or loaded by recovery) take the full upsert, which is always correct.
   */
  private readonly written = new WeakMap<object, unknown>();
  private running = false;
  private closed = false;
  private healthy = true;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryWake: (() => void) | undefined;
  private soonTimer: NodeJS.Timeout | undefined;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly observers: ((commit: CommitObservation) => void)[] = [];
  /**
   * Statistics, for the benchmark and metrics. `rows` counts rows written (an outbox row holds a
   * run's events of one commit); `commits` counts statements (a split batch is two); `refusedRuns`
   * counts runs whose changes PostgreSQL refused for their data (see {@link isDataError}).
   */
  readonly stats = { commits: 0, failedCommits: 0, rows: 0, refusedRuns: 0 };

  constructor(private readonly options: BatchWriterOptions) {
    this.retryInitialMs = options.retryInitialMs ?? 100;
    this.retryMaxMs = options.retryMaxMs ?? 2000;
  }

  /** Calls `observer` after each committed statement (metrics); it must not throw. */
  observe(observer: (commit: CommitObservation) => void): void {
    this.observers.push(observer);
  }

  /** False while commits are failing (the database is unreachable). */
  get isHealthy(): boolean {
    return this.healthy;
  }

  /** Whether `row` (a run, task or attempt) has been committed once. */
  isStored(row: object): boolean {
    return this.written.has(row);
  }

  /** Marks a run as changed. */
  markRun(run: RunState): void {
    this.runs.set(run.id, run);
  }

  /** Marks a task as changed. */
  markTask(task: TaskState): void {
    this.tasks.set(task.id, task);
  }

  /** Marks an attempt as changed. */
  markAttempt(attempt: AttemptState): void {
    this.attempts.set(`${attempt.taskRunId}:${attempt.number}`, attempt);
  }

  /** Appends an outbox event (kept in order). */
  addEvent(event: OutboxRow): void {
    this.events.push(event);
  }

  /** Resolves when everything marked so far is committed. */
  flush(): Promise<void> {
    if (this.closed) return Promise.reject(new WriterClosedError("the batch writer is closed"));
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.kick();
    return done;
  }

  /**
   * Commits what is marked within `delayMs` unless another flush takes it along first: for
   * changes nobody waits for (a task started), so they ride with the next commit when one is near.
   */
  flushSoon(delayMs: number): void {
    if (this.closed || this.soonTimer !== undefined) return;
    this.soonTimer = setTimeout(() => {
      this.soonTimer = undefined;
      this.kick();
    }, delayMs);
  }

  /** Starts a commit soon if none is running; changes made in the same tick share it. */
  private kick(): void {
    if (this.running || this.closed || this.retryTimer !== undefined) return;
    this.running = true;
    setImmediate(() => void this.commitLoop());
  }

  private hasWork(): boolean {
    return (
      this.runs.size + this.tasks.size + this.attempts.size + this.events.length > 0 ||
      this.waiters.length > 0
    );
  }

  private async commitLoop(): Promise<void> {
    let delay = this.retryInitialMs;
    while (this.hasWork() && !this.closed) {
      const waiters = this.waiters;
      const parts = this.take();
      this.waiters = [];
      // Parts hold disjoint runs: each commits on its own connection, in parallel, as its own
      // transaction; a run's changes and events are always in one part, so each run stays atomic.
      const results = await Promise.allSettled(parts.map((part) => this.commit(part.statement)));
      let failure: unknown;
      const failed: Part[] = [];
      for (const [i, result] of results.entries()) {
        const part = parts[i] as Part;
        if (result.status === "fulfilled") this.committedPart(part, result.value);
        else if (isDataError(result.reason)) {
          // Split by run until what PostgreSQL refuses is found; the rest commits now.
          const left = await this.isolate(part, result.reason);
          if (left !== undefined) {
            failure ??= left.error;
            failed.push(...left.parts);
          }
        } else {
          failure ??= result.reason;
          failed.push(part);
        }
      }
      // In reverse, so that each goes in front of the one after it, all in front of what is new.
      for (const part of failed.reverse()) this.putBack(part);
      if (failure === undefined) {
        if (!this.healthy) this.options.log.info("database commits succeed again");
        this.healthy = true;
        delay = this.retryInitialMs;
        for (const w of waiters) w.resolve();
        continue;
      }
      // What failed is back in front of what accumulated meanwhile (see putBack); its waiters wait
      // for the retry. Parts that committed stay committed: their rows are known now.
      this.waiters = [...waiters, ...this.waiters];
      this.stats.failedCommits++;
      if (this.healthy)
        this.options.log.error({ err: failure }, "database commit failed; retrying until it is back");
      this.healthy = false;
      if (this.closed) break;
      await new Promise<void>((resolve) => {
        this.retryWake = resolve;
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          resolve();
        }, delay);
      });
      this.retryWake = undefined;
      delay = Math.min(delay * 2, this.retryMaxMs);
    }
    this.running = false;
    if (this.closed) this.rejectAll();
  }

  /**
   * Takes everything marked, as one part, or as two parts by run when the batch is large: a
   * large statement keeps one PostgreSQL backend (one core) busy for tens of milliseconds while
   * the leases it carries wait; two halves on two connections commit in about half the time.
   */
  private take(): Part[] {
    const runs = this.runs;
    const tasks = this.tasks;
    const attempts = this.attempts;
    const events = this.events;
    this.runs = new Map();
    this.tasks = new Map();
    this.attempts = new Map();
    this.events = [];
    if (runs.size + tasks.size < SPLIT_ROWS) return [this.part(runs, tasks, attempts, events)];
    const empty = () => ({
      runs: new Map<string, RunState>(),
      tasks: new Map<string, TaskState>(),
      attempts: new Map<string, AttemptState>(),
      events: [] as OutboxRow[],
    });
    const halves = [empty(), empty()] as const;
    // The last hex digit of a run id (a random UUID) picks its half.
    const half = (runId: string) => halves[(runId.charCodeAt(runId.length - 1) & 1) as 0 | 1];
    for (const [id, r] of runs) half(id).runs.set(id, r);
    for (const [id, t] of tasks) half(t.runId).tasks.set(id, t);
    for (const [key, a] of attempts) half(a.runId).attempts.set(key, a);
    for (const e of events) half(e.message.runId).events.push(e);
    return halves.map((h) => this.part(h.runs, h.tasks, h.attempts, h.events));
  }

  private part(
    runs: Map<string, RunState>,
    tasks: Map<string, TaskState>,
    attempts: Map<string, AttemptState>,
    events: OutboxRow[],
  ): Part {
    return { runs, tasks, attempts, events, ...this.snapshot(runs, tasks, attempts, events) };
  }

  /**
   * Commits what it can of a part PostgreSQL refused for its data, halving it by run; a single run
   * it still refuses is dropped and reported to `onRefused`. Returns what is left when a commit
   * fails for another reason (connection lost meanwhile), to be retried as usual.
   */
  private async isolate(part: Part, error: Error): Promise<{ parts: Part[]; error: unknown } | undefined> {
    const runIds = runsOf(part);
    const [only] = runIds;
    // A part with rows always has a run; one with none has no statement, which cannot fail.
    if (only === undefined) return undefined;
    if (runIds.length === 1) {
      this.refused(only, part, error);
      return undefined;
    }
    const half = Math.ceil(runIds.length / 2);
    const halves = [runIds.slice(0, half), runIds.slice(half)].map((ids) => subPart(part, new Set(ids)));
    for (const [i, sub] of halves.entries()) {
      try {
        this.committedPart(sub, await this.commit(sub.statement));
      } catch (e) {
        const rest = halves.slice(i + 1);
        if (!isDataError(e)) return { parts: [sub, ...rest], error: e };
        const left = await this.isolate(sub, e);
        if (left !== undefined) return { parts: [...left.parts, ...rest], error: left.error };
      }
    }
    return undefined;
  }

  /** Drops a single run's share of a batch that PostgreSQL refuses for its data, and reports it. */
  private refused(runId: string, part: Part, error: Error): void {
    this.stats.refusedRuns++;
    this.options.log.error(
      { err: error, runId, code: (error as { code?: string }).code, rows: part.rows },
      "PostgreSQL refused a run's changes for their data; they and their events are dropped",
    );
    this.options.onRefused?.(runId, error);
    // Changes marked for the run while this batch was committing follow the dropped ones (their
    // events would leave a gap in its sequence): they go too.
    for (const [id, t] of this.tasks) if (t.runId === runId) this.tasks.delete(id);
    for (const [key, a] of this.attempts) if (a.runId === runId) this.attempts.delete(key);
    this.runs.delete(runId);
    this.events = this.events.filter((e) => e.message.runId !== runId);
  }

  private committedPart(part: Part, seconds: number): void {
    for (const [row, input] of part.written) this.written.set(row, input);
    if (part.statement !== undefined) this.stats.commits++;
    this.stats.rows += part.rows;
    if (part.statement !== undefined && this.observers.length > 0) {
      const commit = { rows: part.rows, seconds, events: part.events, tasks: part.tasks, runs: part.runs };
      for (const observer of this.observers) observer(commit);
    }
    this.options.onCommit?.({
      runIds: new Set([...part.runs.keys(), ...[...part.tasks.values()].map((t) => t.runId)]),
      taskIds: new Set(part.tasks.keys()),
      events: part.events.length,
    });
  }

  /**
   * Puts a part that failed back in front of what accumulated meanwhile, to be retried: the rows
   * carry full state, so re-marking is idempotent; events keep their order.
   */
  private putBack(part: Part): void {
    this.runs = new Map([...part.runs, ...this.runs]);
    this.tasks = new Map([...part.tasks, ...this.tasks]);
    this.attempts = new Map([...part.attempts, ...this.attempts]);
    this.events = [...part.events, ...this.events];
  }

  /**
   * Serializes a batch into ONE statement: each table's upsert is a data-modifying CTE over a JSON
   * parameter (read with json_to_recordset, which parses the text once; the jsonb variant first
   * builds a jsonb value of the whole batch, ~10% more of PostgreSQL's CPU per task). One statement
   * is one implicit transaction (atomic, foreign keys checked at its end) and one round trip. Called synchronously when the batch is taken, so the rows describe exactly
   * the state that the batch's events describe: changes made while the commit awaits belong to the
   * next batch, with their events.
   */
  private snapshot(
    runs: Map<string, RunState>,
    tasks: Map<string, TaskState>,
    attempts: Map<string, AttemptState>,
    events: OutboxRow[],
  ): Pick<Part, "sections" | "statement" | "written" | "rows"> {
    const sections: Section[] = [];
    // What this batch writes, recorded as written once it commits (never before: a failed batch
    // is retried with full upserts for its new rows).
    const written = new Map<object, unknown>();
    const split = <T extends object>(rows: Iterable<T>): [T[], T[]] => {
      const fresh: T[] = [];
      const known: T[] = [];
      for (const row of rows) (this.written.has(row) ? known : fresh).push(row);
      return [fresh, known];
    };
    // Parents before children: runs, tasks, attempts, then the events describing them.
    const [newRuns, knownRuns] = split(runs.values());
    const runIds = (list: RunState[]) => list.map((r) => r.id);
    sections.push({ sql: RUN_SQL, rows: newRuns.map(runRow), runIds: runIds(newRuns) });
    sections.push({
      sql: RUN_UPDATE_SQL,
      rows: knownRuns.map((r) => runUpdateRow(r)),
      runIds: runIds(knownRuns),
      keys: runIds(knownRuns),
    });
    for (const r of runs.values()) written.set(r, true);
    const [newTasks, knownTasks] = split(tasks.values());
    sections.push({ sql: TASK_SQL, rows: newTasks.map(taskRow), runIds: newTasks.map((t) => t.runId) });
    sections.push({
      sql: TASK_UPDATE_SQL,
      rows: knownTasks.map((t) => taskUpdateRow(t, this.written.get(t) !== t.input)),
      runIds: knownTasks.map((t) => t.runId),
      keys: knownTasks.map((t) => t.id),
    });
    for (const t of tasks.values()) written.set(t, t.input);
    const [newAttempts, knownAttempts] = split(attempts.values());
    sections.push({
      sql: ATTEMPT_SQL,
      rows: newAttempts.map(attemptRow),
      runIds: newAttempts.map((a) => a.runId),
    });
    sections.push({
      sql: ATTEMPT_UPDATE_SQL,
      rows: knownAttempts.map((a) => attemptUpdateRow(a)),
      runIds: knownAttempts.map((a) => a.runId),
      keys: knownAttempts.map((a) => a.taskRunId),
    });
    for (const a of attempts.values()) written.set(a, true);
    if (events.length > 0) {
      const batches = encodeRunBatches(events);
      sections.push({
        sql: EVENT_SQL,
        rows: batches.map((b) => ({
          run_id: b.runId,
          first_sequence: b.firstSequence,
          last_sequence: b.lastSequence,
          payload: base64(b.payload),
          trace_context: b.traceContext,
        })),
        runIds: batches.map((b) => b.runId),
      });
    }
    const keyed = newRuns.filter((r) => r.idempotencyKey !== null && r.requestHash !== null);
    if (keyed.length > 0) {
      sections.push({
        sql: KEY_SQL,
        rows: keyed.map((r) => ({
          workflow_name: r.workflow.name,
          idempotency_key: r.idempotencyKey,
          run_id: r.id,
          request_hash: r.requestHash,
          created_at: r.createdAt.getTime(),
        })),
        runIds: runIds(keyed),
      });
    }
    const rows = sections.reduce((n, x) => n + x.rows.length, 0);
    return { sections, statement: statementOf(sections), written, rows };
  }

  /** Commits one statement; resolves with the seconds it took (0 for none). */
  private async commit(statement: BatchStatement | undefined): Promise<number> {
    if (statement === undefined) return 0;
    const started = performance.now();
    // Connection errors while checked out are handled where clients are made (openDatabase).
    const client = await this.options.pool.connect();
    let broken = false;
    try {
      // Named: each connection parses and plans each shape of batch once, not on every commit.
      await client.query({ name: statement.name, text: statement.sql, values: statement.params });
      return (performance.now() - started) / 1000;
    } catch (e) {
      broken = true;
      throw e;
    } finally {
      client.release(broken);
    }
  }

  private rejectAll(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters)
      w.reject(new WriterClosedError("the batch writer closed before the change was committed"));
  }

  /** Commits what is pending (best effort, bounded by `timeoutMs`), then refuses new work. */
  async close(timeoutMs = 5000): Promise<void> {
    if (this.hasWork() && this.healthy) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.flush().catch(() => undefined),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
      ]);
      clearTimeout(timer);
    }
    this.closed = true;
    clearTimeout(this.soonTimer);
    if (this.retryTimer !== undefined) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.retryWake?.();
    if (!this.running) this.rejectAll();
  }
}
