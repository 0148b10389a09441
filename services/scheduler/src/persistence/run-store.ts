/**
 * The read side of runs: GetRun, ListRuns and WatchRun read committed state from PostgreSQL through
 * MikroORM, so what clients see is exactly what survives a crash.
 */
import type { FilterQuery, InferEntity } from "@mikro-orm/core";
import { ApiError } from "@nexusflow/common";
import { decodeToken, encodeToken } from "./page-token.js";
import type { Database } from "./database.js";
import { TaskAttemptEntity, TaskRunEntity, WorkflowRunEntity } from "./entities.js";

/** A run row as read. */
export type RunRow = InferEntity<typeof WorkflowRunEntity>;
/** A task row as read. */
export type TaskRow = InferEntity<typeof TaskRunEntity>;
/** An attempt row as read. */
export type AttemptRow = InferEntity<typeof TaskAttemptEntity>;

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
    const em = this.db.orm.em.fork();
    const tasks = await em.find(TaskRunEntity, { runId }, { orderBy: { kind: "desc", position: "asc" } });
    const attemptRows = await em.find(TaskAttemptEntity, { runId }, { orderBy: { number: "asc" } });
    // The partial index on parent_run_id holds child runs only.
    const childRows = await em.find(
      WorkflowRunEntity,
      { parentRunId: runId },
      { fields: ["id", "parentStepId"] },
    );
    const children: Record<string, string> = {};
    for (const c of childRows) if (typeof c.parentStepId === "string") children[c.parentStepId] = c.id;
    // The partial index on rerun_of answers this without a row for runs that were never rerun.
    const reruns = await em.find(
      WorkflowRunEntity,
      { rerunOf: runId },
      { fields: ["id"], orderBy: { createdAt: "asc", id: "asc" }, limit: MAX_LISTED_RERUNS },
    );
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
    const run = await this.db.orm.em.fork().findOne(WorkflowRunEntity, { id: runId });
    if (run === null) throw ApiError.notFound(`run ${runId} does not exist`);
    return run;
  }

  /** A page of runs, newest first (keyset pagination on created_at, id). */
  async list(filter: RunFilter): Promise<{ runs: RunRow[]; nextPageToken: string }> {
    const size = filter.pageSize === 0 ? 100 : filter.pageSize;
    if (!Number.isInteger(size) || size < 1 || size > 1000)
      throw ApiError.invalid("page_size", "must be between 1 and 1000");
    const where: FilterQuery<RunRow>[] = [];
    if (filter.workflowName !== "") where.push({ workflowName: filter.workflowName });
    if (filter.statuses.length > 0) where.push({ status: { $in: filter.statuses } });
    // Containment, on labelled runs only: what the partial GIN index on labels serves.
    if (Object.keys(filter.labels).length > 0)
      where.push({ labels: { $contains: filter.labels } }, { labels: { $ne: {} } });
    if (filter.createdAfter !== undefined) where.push({ createdAt: { $gte: filter.createdAfter } });
    if (filter.createdBefore !== undefined) where.push({ createdAt: { $lt: filter.createdBefore } });
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
      );
      const at = new Date(t.t);
      where.push({ $or: [{ createdAt: { $lt: at } }, { createdAt: at, id: { $lt: t.id } }] });
    }
    const em = this.db.orm.em.fork();
    const rows = await em.find(WorkflowRunEntity, where.length > 0 ? { $and: where } : {}, {
      orderBy: { createdAt: "desc", id: "desc" },
      limit: size + 1,
    });
    const page = rows.slice(0, size);
    const last = page[page.length - 1];
    return { runs: page, nextPageToken: rows.length > size && last !== undefined ? runPageToken(last) : "" };
  }

  /** The tasks and attempts of each of `rows`, read in two queries, in the order of `rows`. */
  async details(rows: RunRow[]): Promise<RunDetail[]> {
    if (rows.length === 0) return [];
    const ids = rows.map((r) => r.id);
    const em = this.db.orm.em.fork();
    const tasks = await em.find(
      TaskRunEntity,
      { runId: { $in: ids } },
      { orderBy: { kind: "desc", position: "asc" } },
    );
    const attemptRows = await em.find(
      TaskAttemptEntity,
      { runId: { $in: ids } },
      { orderBy: { number: "asc" } },
    );
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

/** The ListRuns page token that continues after `run` (keyset: created_at, id). */
export function runPageToken(run: RunRow): string {
  return encodeToken({ t: run.createdAt.toISOString(), id: run.id });
}
