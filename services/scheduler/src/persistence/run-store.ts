/**
 * The read side of runs: GetRun, ListRuns and WatchRun read committed state from PostgreSQL in
 * plain SQL (the database's read pool), so what clients see is exactly what survives a crash. Rows
 * come back with camelCase keys, JSON columns parsed, timestamps as Dates and int8 as numbers
 * (database.ts sets pg's parser).
 */
import { ApiError } from "@nexusflow/common";
import { type Listing, decodeToken, encodeToken, pageSizeOf } from "./page-token.js";
import type { Database } from "./database.js";

/** A run row as read (workflow_runs). */
export interface RunRow {
  id: string;
  definitionId: number;
  workflowName: string;
  workflowVersion: number;
  status: string;
  input: unknown;
  output: unknown;
  error: unknown;
  idempotencyKey: string | null;
  labels: Record<string, string>;
  traceParent: string | null;
  signals: unknown;
  /** The run this one reruns (RerunRun); null for other runs. */
  rerunOf: string | null;
  /** A rerun's `{fromStep, reused: {stepId: original task run id}}` (migration RunReruns). */
  rerun: unknown;
  parentRunId: string | null;
  parentStepId: string | null;
  childDepth: number;
  cancelRequested: boolean;
  compensateOnCancel: boolean;
  eventSeq: number;
  deadline: Date | null;
  createdAt: Date;
  updatedAt: Date;
  endedAt: Date | null;
}

/** A task row as read (task_runs): one step or compensation; `attempt` and `fencingToken` describe the current lease. */
export interface TaskRow {
  id: string;
  runId: string;
  stepId: string;
  kind: string;
  type: string;
  status: string;
  position: number;
  input: unknown;
  output: unknown;
  outputRef: unknown;
  error: unknown;
  skipReason: string | null;
  attempt: number;
  fencingToken: number;
  executorId: string | null;
  leaseExpiresAt: Date | null;
  nextAttemptAt: Date | null;
  queuedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
  endedAt: Date | null;
  /** The latest attempt (number `attempt`, token `fencingToken`); null before the first. */
  attemptStatus: string | null;
  attemptError: unknown;
  attemptLogs: unknown;
  /** Set only when the attempt's executor is not `executorId`. */
  attemptExecutorId: string | null;
  leasedAt: Date | null;
  startedAt: Date | null;
  attemptEndedAt: Date | null;
  /** The run's latest event sequence when this row was written (recovery numbers from it). */
  runEventSeq: number;
}

/** An attempt row as read (the task_attempts view: the history and each task's latest). */
export interface AttemptRow {
  taskRunId: string;
  number: number;
  runId: string;
  fencingToken: number;
  executorId: string;
  status: string;
  error: unknown;
  logs: unknown;
  leasedAt: Date;
  startedAt: Date | null;
  endedAt: Date | null;
}

/** `"snake_case" AS "camelCase"` for each key: a select list whose rows have the keys of `T`. */
function columns<T>(keys: readonly (keyof T & string)[]): string {
  return keys.map((k) => `"${k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}" AS "${k}"`).join(", ");
}

const RUN_COLUMNS = columns<RunRow>([
  "id",
  "definitionId",
  "workflowName",
  "workflowVersion",
  "status",
  "input",
  "output",
  "error",
  "idempotencyKey",
  "labels",
  "traceParent",
  "signals",
  "rerunOf",
  "rerun",
  "parentRunId",
  "parentStepId",
  "childDepth",
  "cancelRequested",
  "compensateOnCancel",
  "eventSeq",
  "deadline",
  "createdAt",
  "updatedAt",
  "endedAt",
]);
const TASK_COLUMNS = columns<TaskRow>([
  "id",
  "runId",
  "stepId",
  "kind",
  "type",
  "status",
  "position",
  "input",
  "output",
  "outputRef",
  "error",
  "skipReason",
  "attempt",
  "fencingToken",
  "executorId",
  "leaseExpiresAt",
  "nextAttemptAt",
  "queuedAt",
  "createdAt",
  "updatedAt",
  "endedAt",
  "attemptStatus",
  "attemptError",
  "attemptLogs",
  "attemptExecutorId",
  "leasedAt",
  "startedAt",
  "attemptEndedAt",
  "runEventSeq",
]);
const ATTEMPT_COLUMNS = columns<AttemptRow>([
  "taskRunId",
  "number",
  "runId",
  "fencingToken",
  "executorId",
  "status",
  "error",
  "logs",
  "leasedAt",
  "startedAt",
  "endedAt",
]);

const RUN_SQL = `SELECT ${RUN_COLUMNS} FROM workflow_runs WHERE id = $1`;
/**
 * Steps in definition order, compensations after them; a map step's elements (`each[3]`) in index
 * order (they share their step's position), so that a run reads the same on every call.
 */
const TASKS_SQL = `SELECT ${TASK_COLUMNS} FROM task_runs WHERE run_id = ANY($1::uuid[])
  ORDER BY kind DESC, position ASC, substring(step_id from '\\[([0-9]+)\\]$')::int ASC NULLS FIRST, step_id ASC`;
const ATTEMPTS_SQL = `SELECT ${ATTEMPT_COLUMNS} FROM task_attempts WHERE run_id = ANY($1::uuid[]) ORDER BY number ASC`;
// The partial index on parent_run_id holds child runs only.
const CHILDREN_SQL = `SELECT id, parent_step_id AS "parentStepId" FROM workflow_runs WHERE parent_run_id = $1`;
// The partial index on rerun_of answers this without a row for runs that were never rerun.
const RERUNS_SQL =
  "SELECT id FROM workflow_runs WHERE rerun_of = $1 ORDER BY created_at ASC, id ASC LIMIT $2";

/** A run with its tasks and their attempts. */
export interface RunDetail {
  run: RunRow;
  tasks: TaskRow[];
  attempts: Map<string, AttemptRow[]>;
  /** The ids of the child runs its child workflow steps started, by step id; read by `get` only. */
  children?: Record<string, string>;
  /** Ids of the run's reruns (RerunRun), oldest first; read by `get` only. */
  reruns?: string[];
}

/** Most reruns of one run GetRun lists. */
const MAX_LISTED_RERUNS = 100;

/** Filters of ListRuns. */
export interface RunFilter {
  workflowName: string;
  statuses: string[];
  labels: Record<string, string>;
  createdAfter: Date | undefined;
  createdBefore: Date | undefined;
  pageSize: number;
  pageToken: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Throws INVALID_ARGUMENT unless `id` is a UUID. */
export function checkRunId(id: string, field = "run_id"): void {
  if (!UUID.test(id))
    throw ApiError.invalid(field, id === "" ? "a run id is required" : `not a run id: ${JSON.stringify(id)}`);
}

/** Queries over runs. */
export class RunStore {
  constructor(private readonly db: Database) {}

  /** A run with tasks and attempts; NOT_FOUND when missing. */
  async get(runId: string): Promise<RunDetail> {
    const run = await this.getRun(runId);
    const pool = this.db.readPool;
    const tasks = (await pool.query<TaskRow>(TASKS_SQL, [[runId]])).rows;
    const attemptRows = (await pool.query<AttemptRow>(ATTEMPTS_SQL, [[runId]])).rows;
    const childRows = (await pool.query<{ id: string; parentStepId: string | null }>(CHILDREN_SQL, [runId]))
      .rows;
    const children: Record<string, string> = {};
    for (const c of childRows) if (typeof c.parentStepId === "string") children[c.parentStepId] = c.id;
    const reruns = (await pool.query<{ id: string }>(RERUNS_SQL, [runId, MAX_LISTED_RERUNS])).rows;
    const attempts = new Map<string, AttemptRow[]>();
    for (const a of attemptRows) {
      const list = attempts.get(a.taskRunId) ?? [];
      list.push(a);
      attempts.set(a.taskRunId, list);
    }
    return { run, tasks, attempts, reruns: reruns.map((r) => r.id), children };
  }

  /** A run's own row, without tasks; NOT_FOUND when missing. */
  async getRun(runId: string): Promise<RunRow> {
    checkRunId(runId);
    const run = (await this.db.readPool.query<RunRow>(RUN_SQL, [runId])).rows[0];
    if (run === undefined) throw ApiError.notFound(`run ${runId} does not exist`);
    return run;
  }

  /** A page of runs, newest first (keyset pagination on created_at, id). */
  async list(filter: RunFilter): Promise<{ runs: RunRow[]; nextPageToken: string }> {
    const size = pageSizeOf(filter.pageSize);
    const params: unknown[] = [];
    const param = (value: unknown): string => {
      params.push(value);
      return `$${params.length}`;
    };
    const where: string[] = [];
    if (filter.workflowName !== "") where.push(`workflow_name = ${param(filter.workflowName)}`);
    if (filter.statuses.length > 0) where.push(`status = ANY(${param(filter.statuses)}::text[])`);
    // Containment, on labelled runs only: what the partial GIN index on labels serves.
    if (Object.keys(filter.labels).length > 0)
      where.push(`labels @> ${param(JSON.stringify(filter.labels))}::jsonb`, `labels <> '{}'::jsonb`);
    if (filter.createdAfter !== undefined) where.push(`created_at >= ${param(filter.createdAfter)}`);
    if (filter.createdBefore !== undefined) where.push(`created_at < ${param(filter.createdBefore)}`);
    if (filter.pageToken !== "") {
      const t = decodeToken(
        filter.pageToken,
        // Ours name a stored instant and a run id: a forged one PostgreSQL could not read is refused.
        (v): v is { t: string; id: string } =>
          typeof v === "object" &&
          v !== null &&
          typeof (v as { t?: unknown }).t === "string" &&
          Number.isFinite(Date.parse((v as { t: string }).t)) &&
          typeof (v as { id?: unknown }).id === "string" &&
          UUID.test((v as { id: string }).id),
        runListing(filter),
      );
      const at = param(new Date(t.t));
      where.push(`(created_at < ${at} OR (created_at = ${at} AND id < ${param(t.id)}))`);
    }
    const { rows } = await this.db.readPool.query<RunRow>(
      `SELECT ${RUN_COLUMNS} FROM workflow_runs ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY created_at DESC, id DESC LIMIT ${param(size + 1)}`,
      params,
    );
    const page = rows.slice(0, size);
    const last = page[page.length - 1];
    return {
      runs: page,
      nextPageToken: rows.length > size && last !== undefined ? runPageToken(last, filter) : "",
    };
  }

  /** The tasks and attempts of each of `rows`, read in two queries, in the order of `rows`. */
  async details(rows: RunRow[]): Promise<RunDetail[]> {
    if (rows.length === 0) return [];
    const ids = rows.map((r) => r.id);
    const tasks = (await this.db.readPool.query<TaskRow>(TASKS_SQL, [ids])).rows;
    const attemptRows = (await this.db.readPool.query<AttemptRow>(ATTEMPTS_SQL, [ids])).rows;
    const byRun = new Map<string, RunDetail>(
      rows.map((run) => [run.id, { run, tasks: [], attempts: new Map<string, AttemptRow[]>() }]),
    );
    for (const t of tasks) byRun.get(t.runId)?.tasks.push(t);
    for (const a of attemptRows) {
      const attempts = byRun.get(a.runId)?.attempts;
      if (attempts === undefined) continue;
      const list = attempts.get(a.taskRunId) ?? [];
      list.push(a);
      attempts.set(a.taskRunId, list);
    }
    return rows.map((r) => byRun.get(r.id) as RunDetail);
  }
}

/**
 * The ListRuns page token that continues after `run` (keyset: created_at, id) in the listing of
 * `filter`, which it is bound to.
 */
export function runPageToken(run: RunRow, filter: RunFilter): string {
  return encodeToken({ t: run.createdAt.toISOString(), id: run.id }, runListing(filter));
}

/** What ListRuns selects by (labels in key order), which its tokens are bound to. */
function runListing(filter: RunFilter): Listing {
  return {
    filters: [
      filter.workflowName,
      [...filter.statuses].sort(),
      Object.entries(filter.labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      filter.createdAfter?.toISOString() ?? null,
      filter.createdBefore?.toISOString() ?? null,
    ],
    names: "workflow_name, statuses, labels, created_after and created_before",
  };
}
