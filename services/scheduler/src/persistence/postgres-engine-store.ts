/**
 * The engine's store in PostgreSQL: changes go through the group-commit writer (batch-writer.ts),
 * recovery reads the active runs with three queries, idempotency keys come from their table
 * (idempotency-keys.ts), and a refused run is ended by refused-run.ts.
 */
import type { Logger } from "@nexusflow/common";
import type { PartitionFencedError, WriteFence } from "../cluster/partitioning.js";
import { BatchWriter } from "./batch-writer.js";
import type { Database } from "./database.js";
import type {
  EngineStore,
  EngineStoreListener,
  PartitionScope,
  RunOutcome,
  StoredActiveState,
  StoredRun,
  StoredRunRows,
  StoredTask,
} from "./engine-store.js";
import { IdempotencyKeyStore, type KeyRecord } from "./idempotency-keys.js";
import type { OutboxRow } from "./outbox.js";
import { failRefusedRun, type RefusedRunOutcome } from "./refused-run.js";
import type {
  AttemptState,
  ErrorInfo,
  RunState,
  RunStatusName,
  SignalState,
  TaskState,
  TaskStatusName,
} from "../model/run-state.js";
import { parseStoredStepId } from "../model/run-state.js";
import type { StoredBucket } from "../model/rate-limit-state.js";
import type { RateLimitPage, RateLimitPause, StoredPause } from "./engine-store.js";

interface RunRow {
  id: string;
  definition_id: number;
  workflow_name: string;
  status: RunStatusName;
  input: unknown;
  idempotency_key: string | null;
  labels: Record<string, string>;
  trace_parent: string | null;
  signals: SignalState[] | null;
  parent_run_id: string | null;
  parent_step_id: string | null;
  child_depth: number | null;
  rerun_of: string | null;
  rerun: { fromStep: string; reused: Record<string, string> } | null;
  cancel_requested: boolean;
  compensate_on_cancel: boolean;
  error: unknown;
  last_event_seq: string;
  deadline: Date | null;
  created_at: Date;
}

interface TaskRow {
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
}

interface AttemptRow {
  task_run_id: string;
  run_id: string;
  number: number;
  fencing_token: number;
  executor_id: string;
  status: TaskStatusName;
  leased_at: Date;
  started_at: Date | null;
}

// Every event is committed with a write of its run row (event_seq) or of one of its task rows
// (run_event_seq: the run's latest sequence then), so the next sequence number continues from the
// highest of them.
const RUN_COLUMNS_SQL = `SELECT r.*, GREATEST(r.event_seq,
   COALESCE((SELECT max(t.run_event_seq) FROM task_runs t WHERE t.run_id = r.id), 0)) AS last_event_seq
   FROM workflow_runs r`;
/**
 * The active runs for which `and` holds too. Parked runs (parked-runs.ts) stay in the database:
 * they are loaded back one by one when woken.
 */
const activeRunsSql = (and: string): string => `${RUN_COLUMNS_SQL}
   WHERE r.status IN ('PENDING', 'RUNNING', 'COMPENSATING') AND ${and}
   AND NOT EXISTS (SELECT 1 FROM parked_runs p WHERE p.run_id = r.id) ORDER BY r.created_at`;
const ACTIVE_RUNS_SQL = activeRunsSql("true");
/** The same, of some partitions ($1 the partition count, $2 the partitions). */
const ACTIVE_RUNS_OF_SQL = activeRunsSql("nexusflow_partition_of(r.id, $1) = ANY($2::int[])");
const ONE_RUN_SQL = `${RUN_COLUMNS_SQL} WHERE r.id = $1`;

const TASKS_SQL = `SELECT t.*, (SELECT count(*)::int FROM task_attempts a WHERE a.task_run_id = t.id AND a.status = 'FAILED') AS failures
 FROM task_runs t WHERE t.run_id = ANY($1::uuid[]) ORDER BY t.run_id, t.position`;

const CURRENT_ATTEMPTS_SQL = `SELECT a.* FROM task_attempts a JOIN task_runs t ON t.id = a.task_run_id AND t.attempt = a.number
 WHERE t.run_id = ANY($1::uuid[]) AND t.status IN ('LEASED', 'RUNNING')`;

/** Options of {@link PostgresEngineStore}. */
export interface PostgresEngineStoreOptions {
  db: Database;
  log: Logger;
  /** Fences every group commit with the partitions this replica holds (docs/replicas.md). @default none */
  fence?: WriteFence | undefined;
  /** Called for runs whose commit the fence refused (their changes were dropped). @default none */
  onFenced?: ((runIds: readonly string[], error: PartitionFencedError) => void) | undefined;
}

/** The engine's store in PostgreSQL (see the module comment). */
export class PostgresEngineStore implements EngineStore {
  /** The group-commit writer (its statistics are the benchmark's). */
  readonly writer: BatchWriter;
  private readonly keys: IdempotencyKeyStore;
  private readonly db: Database;
  private readonly fence: WriteFence | undefined;
  private listener: EngineStoreListener | undefined;

  constructor(options: PostgresEngineStoreOptions) {
    this.db = options.db;
    this.fence = options.fence;
    this.keys = new IdempotencyKeyStore(options.db.pool);
    this.writer = new BatchWriter({
      pool: options.db.writerPool,
      log: options.log,
      onCommit: (batch) => this.listener?.committed(batch),
      onRefused: (runId, error) => this.listener?.refused(runId, error),
      fence: options.fence,
      ...(options.onFenced === undefined ? {} : { onFenced: options.onFenced }),
    });
  }

  listen(listener: EngineStoreListener): void {
    this.listener = listener;
  }

  get isHealthy(): boolean {
    return this.writer.isHealthy;
  }

  isStored(row: object): boolean {
    return this.writer.isStored(row);
  }

  markRun(run: RunState): void {
    this.writer.markRun(run);
  }

  markTask(task: TaskState): void {
    this.writer.markTask(task);
  }

  markAttempt(attempt: AttemptState): void {
    this.writer.markAttempt(attempt);
  }

  addEvent(event: OutboxRow): void {
    this.writer.addEvent(event);
  }

  flush(): Promise<void> {
    return this.writer.flush();
  }

  flushSoon(delayMs: number): void {
    this.writer.flushSoon(delayMs);
  }

  released(ids: Iterable<string>): void {
    this.writer.forgetExpected(ids);
  }

  retire(runs: readonly RunState[], tasks: readonly TaskState[]): void {
    this.writer.retire(runs, tasks);
  }

  async runOutcome(runId: string): Promise<RunOutcome | undefined> {
    const found = await this.db.pool.query<{ status: RunStatusName; output: unknown; error: unknown }>(
      "SELECT status, output, error FROM workflow_runs WHERE id = $1",
      [runId],
    );
    const row = found.rows[0];
    return row === undefined
      ? undefined
      : { status: row.status, output: row.output ?? null, error: (row.error as ErrorInfo | null) ?? null };
  }

  async loadRun(runId: string): Promise<StoredRunRows | undefined> {
    const pool = this.db.pool;
    const row = (await pool.query<RunRow>(ONE_RUN_SQL, [runId])).rows[0];
    if (row === undefined) return undefined;
    const taskRows = await pool.query<TaskRow>(TASKS_SQL, [[runId]]);
    const current = await pool.query<AttemptRow>(CURRENT_ATTEMPTS_SQL, [[runId]]);
    const attempts = new Map(current.rows.map((a) => [a.task_run_id, a]));
    this.writer.expectStored([runId, ...taskRows.rows.map((t) => t.id)]);
    return { run: storedRun(row), tasks: taskRows.rows.map((t) => storedTask(t, attempts.get(t.id))) };
  }

  async loadActive(scope?: PartitionScope): Promise<StoredActiveState> {
    const pool = this.db.pool;
    const runRows =
      scope === undefined
        ? await pool.query<RunRow>(ACTIVE_RUNS_SQL)
        : await pool.query<RunRow>(ACTIVE_RUNS_OF_SQL, [scope.count, scope.partitions]);
    if (runRows.rowCount === 0) return { runs: [], tasks: [] };
    const ids = runRows.rows.map((r) => r.id);
    const taskRows = await pool.query<TaskRow>(TASKS_SQL, [ids]);
    const attemptRows = await pool.query<AttemptRow>(CURRENT_ATTEMPTS_SQL, [ids]);
    const current = new Map(attemptRows.rows.map((a) => [a.task_run_id, a]));
    // Their rows exist: the writer upserts them when they are next written.
    this.writer.expectStored([...ids, ...taskRows.rows.map((t) => t.id)]);
    return {
      runs: runRows.rows.map(storedRun),
      tasks: taskRows.rows.map((t) => storedTask(t, current.get(t.id))),
    };
  }

  async loadRateLimits(page?: RateLimitPage): Promise<StoredBucket[]> {
    // A page: the rows of its limit after its position, in the "C" collation (code point order,
    // as the engine merges them with the buckets in memory: engine-store.ts bucketOrder).
    const where =
      page === undefined
        ? ""
        : `WHERE ($1 = '' OR name = $1) AND ($2::text IS NULL OR (name COLLATE "C", key COLLATE "C") > ($2, $3))`;
    const found = await this.db.pool.query<{
      name: string;
      key: string;
      tokens: number;
      refilled_at: number;
      seq: string;
      full_at: number | null;
      paused_until: Date | null;
      paused_by: string;
      pause_note: string;
    }>(
      // A bucket's tokens: its snapshot with the highest seq among its grant rows (one per writer
      // shard) and its rate_limit_buckets row (a pause's, or a grant's written before the shards),
      // which also holds its pause. The snapshot of grant N counts every grant up to N. A bucket
      // that only a pause row names (no grant, or its grants purged: full again) gets the tokens it
      // had at the pause: never more than it has.
      `WITH latest AS (
         SELECT DISTINCT ON (name, key) name, key, tokens, refilled_at, seq, full_at
         FROM (SELECT name, key, tokens, refilled_at, seq, full_at FROM rate_limit_grants ${where}
               UNION ALL SELECT name, key, tokens, refilled_at, seq, full_at FROM rate_limit_buckets ${where}) AS s
         ORDER BY name, key, seq DESC)
       SELECT l.name, l.key, l.tokens, l.refilled_at, l.seq, l.full_at, b.paused_until,
         coalesce(b.paused_by, '') AS paused_by, coalesce(b.pause_note, '') AS pause_note
       FROM latest l LEFT JOIN rate_limit_buckets b ON b.name = l.name AND b.key = l.key
       ORDER BY l.name COLLATE "C", l.key COLLATE "C"${page === undefined ? "" : " LIMIT $4"}`,
      page === undefined ? [] : [page.name, page.after?.name ?? null, page.after?.key ?? null, page.limit],
    );
    return found.rows.map((r) => ({
      name: r.name,
      key: r.key,
      tokens: r.tokens,
      refilledAt: r.refilled_at,
      seq: Number(r.seq),
      fullAt: r.full_at,
      pausedUntil: r.paused_until === null ? null : r.paused_until.getTime(),
      pausedBy: r.paused_by,
      pauseNote: r.pause_note,
    }));
  }

  async loadRateLimitPauses(): Promise<StoredPause[]> {
    const found = await this.db.pool.query<{
      name: string;
      key: string;
      paused_until: Date;
      paused_by: string;
      pause_note: string;
    }>(
      `SELECT name, key, paused_until, paused_by, pause_note FROM rate_limit_buckets
       WHERE paused_until > now()`,
    );
    return found.rows.map((r) => ({
      name: r.name,
      key: r.key,
      pausedUntil: r.paused_until.getTime(),
      pausedBy: r.paused_by,
      pauseNote: r.pause_note,
    }));
  }

  async pauseRateLimit(p: RateLimitPause): Promise<void> {
    await this.db.pool.query(
      `INSERT INTO rate_limit_buckets (name, key, tokens, refilled_at, seq, paused_until, paused_by, pause_note, full_at)
VALUES ($1, $2, $3, $4, 0, to_timestamp($5::float8 / 1000), $6, $7, $8)
ON CONFLICT (name, key) DO UPDATE SET paused_until = excluded.paused_until, paused_by = excluded.paused_by,
  pause_note = excluded.pause_note, updated_at = now()`,
      [
        p.name,
        p.key,
        p.tokens,
        p.refilledAt,
        p.until,
        p.until === null ? "" : p.by,
        p.until === null ? "" : p.note,
        p.fullAt,
      ],
    );
  }

  lookupKey(workflowName: string, key: string, notBefore: Date): Promise<KeyRecord | undefined> {
    return this.keys.lookup(workflowName, key, notBefore);
  }

  keysOfRuns(
    runs: readonly { id: string; workflowName: string; key: string }[],
  ): Promise<Map<string, KeyRecord>> {
    return this.keys.ofRuns(runs);
  }

  failRefusedRun(runId: string, error: ErrorInfo): Promise<RefusedRunOutcome> {
    return failRefusedRun(this.db.pool, runId, error, this.fence);
  }

  close(): Promise<void> {
    return this.writer.close();
  }
}

function storedRun(r: RunRow): StoredRun {
  return {
    id: r.id,
    definitionId: r.definition_id,
    workflowName: r.workflow_name,
    status: r.status,
    input: r.input,
    idempotencyKey: r.idempotency_key,
    labels: r.labels,
    traceParent: r.trace_parent,
    signals: r.signals ?? [],
    parent:
      r.parent_run_id === null || r.parent_step_id === null
        ? null
        : { runId: r.parent_run_id, stepId: r.parent_step_id, depth: r.child_depth ?? 1 },
    ...(r.rerun_of === null || r.rerun === null
      ? {}
      : { rerun: { of: r.rerun_of, fromStep: r.rerun.fromStep, reused: r.rerun.reused } }),
    cancelRequested: r.cancel_requested,
    compensateOnCancel: r.compensate_on_cancel,
    error: r.error as ErrorInfo | null,
    lastEventSeq: Number(r.last_event_seq),
    deadline: r.deadline,
    createdAt: r.created_at,
  };
}

function storedTask(t: TaskRow, a: AttemptRow | undefined): StoredTask {
  return {
    id: t.id,
    runId: t.run_id,
    ...parseStoredStepId(t.step_id),
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
  };
}
