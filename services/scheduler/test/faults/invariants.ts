/**
 * The invariants every fault case checks afterwards, read from PostgreSQL alone (what survives a
 * crash, not what the API renders): every run is terminal, every succeeded task has exactly one
 * accepted completion, attempts stay within the retry policy, compensations ran exactly for the
 * succeeded steps that declare one, no lease is left behind, and each run's outbox is numbered
 * 1..N without gaps or duplicates.
 */
import assert from "node:assert/strict";
import pg from "pg";
import { RunStatus } from "@nexusflow/gen";
import { compileWorkflow, isRetryableError, type CompiledWorkflow } from "../../src/dag/index.js";
import { outboxEvents, waitFor } from "../support.js";

/** Run statuses after which nothing changes. */
export const TERMINAL_RUN_STATUSES: ReadonlySet<string> = new Set([
  "SUCCEEDED",
  "FAILED",
  "CANCELLED",
  "TIMED_OUT",
  "COMPENSATED",
  "COMPENSATION_FAILED",
]);

/** Task statuses after which nothing changes. */
const TERMINAL_TASK_STATUSES: ReadonlySet<string> = new Set(["SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED"]);

/** Attempt statuses that mean a lease is still held. */
const HELD_ATTEMPT_STATUSES: ReadonlySet<string> = new Set(["LEASED", "RUNNING"]);

/** One attempt as committed. */
export interface AttemptRow {
  number: number;
  status: string;
  fencingToken: number;
  executorId: string;
  /** `error.type`, when the attempt failed or was cancelled. */
  errorType: string | null;
}

/** One task run (step or compensation) with its attempts, as committed. */
export interface TaskRow {
  id: string;
  stepId: string;
  kind: "STEP" | "COMPENSATION";
  status: string;
  attempt: number;
  error: { type?: string; retryable?: boolean } | null;
  attempts: AttemptRow[];
}

/** Everything the checker read about one run. */
export interface RunFacts {
  id: string;
  status: string;
  cancelRequested: boolean;
  compensateOnCancel: boolean;
  eventSeq: number;
  workflow: CompiledWorkflow;
  /** Step tasks by step id. */
  steps: Map<string, TaskRow>;
  /** Compensation tasks by step id. */
  compensations: Map<string, TaskRow>;
  /** Outbox events in sequence order. */
  events: { sequence: number; type: string; taskRunId: string | undefined; runStatus: number | undefined }[];
}

/** What {@link checkInvariants} found. */
export interface InvariantReport {
  runs: Map<string, RunFacts>;
  /** One line per violated invariant; empty when everything holds. */
  violations: string[];
}

/** Attempts that do not count against `maxAttempts`: leases handed back by the executor. */
function counts(a: AttemptRow): boolean {
  return !(a.status === "CANCELLED" && a.errorType === "RELEASED");
}

/** Reads the runs' rows from PostgreSQL and checks every invariant. */
export async function checkInvariants(pool: pg.Pool, runIds: readonly string[]): Promise<InvariantReport> {
  const ids = [...new Set(runIds)];
  const violations: string[] = [];
  const runs = new Map<string, RunFacts>();

  const runRows = await pool.query<{
    id: string;
    status: string;
    cancel_requested: boolean;
    compensate_on_cancel: boolean;
    event_seq: string;
    spec: unknown;
  }>(
    `SELECT r.id, r.status, r.cancel_requested, r.compensate_on_cancel, r.event_seq::text, d.spec
       FROM workflow_runs r JOIN workflow_definitions d ON d.id = r.definition_id
      WHERE r.id = ANY($1::uuid[])`,
    [ids],
  );
  const compiled = new Map<string, CompiledWorkflow>();
  for (const r of runRows.rows) {
    const key = JSON.stringify(r.spec);
    let workflow = compiled.get(key);
    if (workflow === undefined) {
      const result = compileWorkflow(r.spec);
      assert.ok(result.ok, `the stored definition of run ${r.id} does not compile`);
      workflow = result.workflow;
      compiled.set(key, workflow);
    }
    runs.set(r.id, {
      id: r.id,
      status: r.status,
      cancelRequested: r.cancel_requested,
      compensateOnCancel: r.compensate_on_cancel,
      eventSeq: Number(r.event_seq),
      workflow,
      steps: new Map(),
      compensations: new Map(),
      events: [],
    });
  }
  for (const id of ids) if (!runs.has(id)) violations.push(`run ${id}: not in workflow_runs`);

  const taskRows = await pool.query<{
    id: string;
    run_id: string;
    step_id: string;
    kind: "STEP" | "COMPENSATION";
    status: string;
    attempt: number;
    error: TaskRow["error"];
  }>(
    `SELECT id, run_id, step_id, kind, status, attempt, error FROM task_runs WHERE run_id = ANY($1::uuid[])`,
    [ids],
  );
  const tasksById = new Map<string, TaskRow>();
  for (const t of taskRows.rows) {
    const run = runs.get(t.run_id);
    if (run === undefined) continue;
    const row: TaskRow = {
      id: t.id,
      stepId: t.step_id,
      kind: t.kind,
      status: t.status,
      attempt: t.attempt,
      error: t.error,
      attempts: [],
    };
    tasksById.set(t.id, row);
    const byStep = t.kind === "STEP" ? run.steps : run.compensations;
    if (byStep.has(t.step_id)) violations.push(`run ${t.run_id}: two ${t.kind} tasks for step ${t.step_id}`);
    byStep.set(t.step_id, row);
  }

  const attemptRows = await pool.query<{
    task_run_id: string;
    number: number;
    status: string;
    fencing_token: string;
    executor_id: string;
    error_type: string | null;
  }>(
    `SELECT task_run_id, number, status, fencing_token::text, executor_id, error->>'type' AS error_type
       FROM task_attempts WHERE run_id = ANY($1::uuid[]) ORDER BY task_run_id, number`,
    [ids],
  );
  for (const a of attemptRows.rows) {
    tasksById.get(a.task_run_id)?.attempts.push({
      number: a.number,
      status: a.status,
      fencingToken: Number(a.fencing_token),
      executorId: a.executor_id,
      errorType: a.error_type,
    });
  }

  for (const e of await outboxEvents(pool, ids)) {
    const run = runs.get(e.runId);
    if (run === undefined) continue;
    const event = e.message.event;
    const taskRunId =
      event.case === "taskSucceeded" || event.case === "taskLeased" ? event.value.taskRunId : undefined;
    run.events.push({
      sequence: e.sequence,
      type: e.type,
      taskRunId,
      runStatus: event.case === "runCompleted" ? event.value.status : undefined,
    });
  }

  for (const run of runs.values()) violations.push(...checkRun(run));
  return { runs, violations };
}

function checkRun(run: RunFacts): string[] {
  const out: string[] = [];
  const v = (message: string): void => void out.push(`run ${run.id} (${run.status}): ${message}`);
  const terminal = TERMINAL_RUN_STATUSES.has(run.status);
  if (!terminal) v("the run is not terminal");

  // Every step has its task; compensations exist exactly for the succeeded steps that declare one.
  for (const step of run.workflow.steps) if (!run.steps.has(step.id)) v(`step ${step.id} has no task run`);
  const compensable = run.workflow.steps
    .filter((s) => s.compensate !== null && run.steps.get(s.id)?.status === "SUCCEEDED")
    .map((s) => s.id)
    .sort();
  const compensated = [...run.compensations.keys()].sort();
  if (run.status === "COMPENSATED" || run.status === "COMPENSATION_FAILED") {
    if (JSON.stringify(compensated) !== JSON.stringify(compensable))
      v(
        `compensation tasks for [${compensated.join(", ")}], succeeded compensable steps [${compensable.join(", ")}]`,
      );
    const unsuccessful = [...run.compensations.values()].filter((t) => t.status !== "SUCCEEDED");
    if (run.status === "COMPENSATED" && unsuccessful.length > 0)
      v(`COMPENSATED, but compensations ${unsuccessful.map((t) => `${t.stepId}=${t.status}`).join(", ")}`);
    if (run.status === "COMPENSATION_FAILED" && unsuccessful.length === 0)
      v("COMPENSATION_FAILED, but every compensation succeeded");
  } else {
    if (compensated.length > 0)
      v(`compensation tasks [${compensated.join(", ")}] in a run that was not rolled back`);
    const shouldHaveRolledBack =
      run.status === "FAILED" || (run.status === "CANCELLED" && run.compensateOnCancel);
    if (shouldHaveRolledBack && compensable.length > 0)
      v(`ended ${run.status} without compensating the succeeded steps [${compensable.join(", ")}]`);
  }

  const succeededEvents = new Map<string, number>();
  const leasedEvents = new Map<string, number>();
  for (const e of run.events) {
    if (e.taskRunId === undefined) continue;
    const m =
      e.type === "taskSucceeded" ? succeededEvents : e.type === "taskLeased" ? leasedEvents : undefined;
    m?.set(e.taskRunId, (m.get(e.taskRunId) ?? 0) + 1);
  }

  for (const task of [...run.steps.values(), ...run.compensations.values()]) {
    const name = `${task.kind === "STEP" ? "step" : "compensation of"} ${task.stepId}`;
    const step = run.workflow.stepsById.get(task.stepId);
    if (step === undefined) {
      v(`${name}: not a step of ${run.workflow.name} v${run.workflow.version}`);
      continue;
    }
    // No lease, queue entry or retry timer outlives a finished run.
    if (terminal && !TERMINAL_TASK_STATUSES.has(task.status)) v(`${name} is ${task.status}`);
    const held = task.attempts.filter((a) => HELD_ATTEMPT_STATUSES.has(a.status));
    if (terminal && held.length > 0)
      v(
        `${name}: orphan lease(s) ${held.map((a) => `attempt ${a.number} ${a.status}@${a.executorId}`).join(", ")}`,
      );
    if (held.length > 1) v(`${name}: ${held.length} attempts hold a lease at once`);

    // Attempts are numbered 1..attempt, each with a higher fencing token than the one before.
    const numbers = task.attempts.map((a) => a.number);
    if (
      JSON.stringify(numbers) !== JSON.stringify(numbers.map((_, i) => i + 1)) ||
      numbers.length !== task.attempt
    )
      v(`${name}: attempts numbered [${numbers.join(", ")}], task_runs.attempt=${task.attempt}`);
    for (let i = 1; i < task.attempts.length; i++) {
      const [prev, cur] = [task.attempts[i - 1], task.attempts[i]];
      if (prev !== undefined && cur !== undefined && cur.fencingToken <= prev.fencingToken)
        v(`${name}: attempt ${cur.number} has fencing token ${cur.fencingToken} <= ${prev.fencingToken}`);
    }

    // Exactly one accepted completion per succeeded task, and it is the last attempt.
    const succeeded = task.attempts.filter((a) => a.status === "SUCCEEDED");
    const completions = succeededEvents.get(task.id) ?? 0;
    if (task.status === "SUCCEEDED") {
      if (succeeded.length !== 1) v(`${name}: ${succeeded.length} SUCCEEDED attempts`);
      else if (succeeded[0]?.number !== task.attempt)
        v(`${name}: attempt ${succeeded[0]?.number} succeeded, not the last`);
      if (completions !== 1) v(`${name}: ${completions} taskSucceeded events`);
    } else {
      if (succeeded.length > 0) v(`${name} is ${task.status} with ${succeeded.length} SUCCEEDED attempts`);
      if (completions > 0) v(`${name} is ${task.status} with ${completions} taskSucceeded events`);
    }
    const leases = leasedEvents.get(task.id) ?? 0;
    if (leases !== task.attempts.length)
      v(`${name}: ${task.attempts.length} attempts, ${leases} taskLeased events`);

    // Retries as configured: never more attempts than allowed, never giving up on a retryable
    // failure while attempts remain. A lease expiry is a failed attempt; a release is not.
    const policy = task.kind === "STEP" ? step.retry : (step.compensate?.retry ?? step.retry);
    const counted = task.attempts.filter(counts).length;
    if (counted > policy.maxAttempts)
      v(`${name}: ${counted} attempts, maxAttempts ${policy.maxAttempts} [${describeAttempts(task)}]`);
    const failures = task.attempts.filter((a) => a.status === "FAILED").length;
    if (
      task.status === "FAILED" &&
      task.attempts.length > 0 &&
      task.error?.retryable === true &&
      isRetryableError(policy, task.error.type) &&
      failures < policy.maxAttempts &&
      !run.cancelRequested
    )
      v(
        `${name}: gave up after ${failures} retryable failures of ${policy.maxAttempts} [${describeAttempts(task)}]`,
      );
  }

  // The outbox: 1..N without gaps or duplicates, matching event_seq; runStarted first, exactly one
  // runCompleted, last, carrying the run's status.
  const sequences = run.events.map((e) => e.sequence);
  if (JSON.stringify(sequences) !== JSON.stringify(sequences.map((_, i) => i + 1)))
    v(`outbox sequences ${compactSequences(sequences)}`);
  // event_seq is written with the run's own changes: exact once the run has ended, a lower bound before.
  if (terminal ? sequences.length !== run.eventSeq : sequences.length < run.eventSeq)
    v(`${sequences.length} outbox events, workflow_runs.event_seq=${run.eventSeq}`);
  if (run.events[0]?.type !== "runStarted") v(`first outbox event is ${run.events[0]?.type ?? "missing"}`);
  if (terminal) {
    const completed = run.events.filter((e) => e.type === "runCompleted");
    const last = run.events.at(-1);
    if (completed.length !== 1) v(`${completed.length} runCompleted events`);
    if (last?.type !== "runCompleted") v(`last outbox event is ${last?.type ?? "missing"}, not runCompleted`);
    else if (last.runStatus !== RunStatus[run.status as keyof typeof RunStatus])
      v(`runCompleted carries status ${RunStatus[last.runStatus ?? 0]}`);
  }
  return out;
}

function describeAttempts(task: TaskRow): string {
  return task.attempts
    .map((a) => `${a.number}:${a.status}${a.errorType === null ? "" : `:${a.errorType}`}`)
    .join(" ");
}

function compactSequences(seq: readonly number[]): string {
  return seq.length <= 40 ? `[${seq.join(", ")}]` : `[${seq.slice(0, 40).join(", ")}, ... (${seq.length})]`;
}

/** Direct PostgreSQL access for fault tests: invariant checks and small probes. */
export class FaultTables {
  /** The pool (two connections), for ad-hoc queries of a test. */
  readonly pool: pg.Pool;

  constructor(url: string) {
    this.pool = new pg.Pool({ connectionString: url, max: 2 });
    // A pool with no client checked out still reports errors of idle clients (database restarts).
    this.pool.on("error", () => undefined);
  }

  /** Checks every invariant for `runIds` and fails with the list of violations. */
  async assertInvariants(runIds: readonly string[]): Promise<Map<string, RunFacts>> {
    const report = await checkInvariants(this.pool, runIds);
    assert.deepEqual(
      report.violations.slice(0, 30),
      [],
      `${report.violations.length} invariant violation(s) in ${runIds.length} run(s)`,
    );
    return report.runs;
  }

  /** How many of `runIds` are in a terminal state. */
  async terminalCount(runIds: readonly string[]): Promise<number> {
    const { rows } = await this.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM workflow_runs WHERE id = ANY($1::uuid[]) AND status = ANY($2::text[])`,
      [runIds, [...TERMINAL_RUN_STATUSES]],
    );
    return rows[0]?.n ?? 0;
  }

  /**
   * Waits (up to `timeoutMs`) until every one of `runIds` is terminal; on timeout fails with what
   * the first unfinished ones look like (run status, partition and its owner, each task's status
   * and attempts), so a run that is stuck can be understood from the failure alone.
   */
  async waitTerminal(runIds: readonly string[], timeoutMs: number): Promise<void> {
    try {
      await waitFor(
        `all ${runIds.length} runs to be terminal`,
        async () => (await this.terminalCount(runIds)) === runIds.length,
        timeoutMs,
      );
    } catch (e) {
      throw new Error(
        `${(e as Error).message}\n${await this.describeUnfinished(runIds).catch((d: unknown) => String(d))}`,
        {
          cause: e,
        },
      );
    }
  }

  /** The first `limit` of `runIds` not terminal, one line each with their tasks and attempts. */
  async describeUnfinished(runIds: readonly string[], limit = 8): Promise<string> {
    const { rows } = await this.pool.query<{ line: string; n: number }>(
      `WITH open AS (
         SELECT r.id, r.status, r.workflow_name, r.updated_at,
                nexusflow_partition_of(r.id, (SELECT partition_count FROM cluster_settings)) AS p
           FROM workflow_runs r
          WHERE r.id = ANY($1::uuid[]) AND NOT (r.status = ANY($2::text[])))
       SELECT format('run %s %s (%s) partition %s owner %s lease %s, updated %s ago: %s',
                o.id, o.status, o.workflow_name, o.p, pa.owner, pa.lease_expires_at - now(), now() - o.updated_at,
                (SELECT string_agg(format('%s/%s=%s#%s[%s]', t.kind, t.step_id, t.status, t.attempt,
                          (SELECT string_agg(format('%s:%s@%s', a.number, a.status, a.executor_id), ' ' ORDER BY a.number)
                             FROM task_attempts a WHERE a.task_run_id = t.id)), ', ' ORDER BY t.created_at)
                   FROM task_runs t WHERE t.run_id = o.id)) AS line,
              (SELECT count(*)::int FROM open) AS n
         FROM open o LEFT JOIN partitions pa ON pa.partition = o.p
        ORDER BY o.updated_at LIMIT $3`,
      [runIds, [...TERMINAL_RUN_STATUSES], limit],
    );
    const { rows: parts } = await this.pool.query<{ line: string }>(
      `SELECT format('%s: owner %s epoch %s lease %s', partition, owner, epoch, lease_expires_at - now()) AS line
         FROM partitions ORDER BY partition`,
    );
    return [
      `${rows[0]?.n ?? 0} run(s) not terminal; the first:`,
      ...rows.map((r) => `  ${r.line}`),
      "partitions:",
      ...parts.map((r) => `  ${r.line}`),
    ].join("\n");
  }

  /** Closes the pool. */
  async close(): Promise<void> {
    await this.pool.end();
  }
}
