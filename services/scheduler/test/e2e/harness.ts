/**
 * Shared helpers of the end-to-end suites: registering JSON specs, reading run state straight from
 * PostgreSQL (what survives a crash, not what the API renders), and small run assertions.
 */
import assert from "node:assert/strict";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import { TaskStatus, type Run, type TaskRun } from "@nexusflow/gen";
import { outboxEvents, type workflowClient } from "../support.js";

/** The typed WorkflowService client of the support module. */
export type WorkflowClient = ReturnType<typeof workflowClient>;

/** Registers a JSON workflow definition (must be new or identical). */
export async function registerSpec(client: WorkflowClient, spec: Record<string, unknown>): Promise<void> {
  await client.registerWorkflow({ definition: { case: "specJson", value: JSON.stringify(spec) } });
}

/** The diamond a -> (b, c) -> d of `traced.step` tasks the tracing tests start. */
export const TRACED_DIAMOND = {
  name: "traced-diamond",
  version: 1,
  steps: [
    { id: "a", type: "traced.step", input: { x: "{{ input.x }}" } },
    { id: "b", type: "traced.step", dependsOn: ["a"], input: { x: "{{ steps.a.output.x }}" } },
    { id: "c", type: "traced.step", dependsOn: ["a"], input: { x: "{{ steps.a.output.x }}" } },
    { id: "d", type: "traced.step", dependsOn: ["b", "c"], input: { x: "{{ steps.b.output.x }}" } },
  ],
};

/** The task of `stepId`, or a failed assertion listing the steps there are. */
export function task(run: Run, stepId: string): TaskRun {
  const t = run.tasks.find((x) => x.stepId === stepId);
  assert.ok(t, `run ${run.id} has no task ${stepId} (has ${run.tasks.map((x) => x.stepId).join(", ")})`);
  return t;
}

/** A timestamp that must be set, as a Date. */
export function date(ts: Timestamp | undefined, what: string): Date {
  assert.ok(ts, `${what} is not set`);
  return timestampDate(ts);
}

/** One line per task: step, status, attempts with executor and error; for assertion messages. */
export function describeRun(run: Run): string {
  const tasks = run.tasks.map(
    (t) =>
      `${t.stepId}=${TaskStatus[t.status]}${t.skipReason === "" ? "" : `(${t.skipReason})`}[${t.attempts
        .map((a) => `${a.number}:${TaskStatus[a.status]}@${a.executorId}${a.error ? `:${a.error.type}` : ""}`)
        .join(" ")}]`,
  );
  return `run ${run.id} status=${run.status} error=${run.error ? `${run.error.type}: ${run.error.message}` : "-"}\n  ${tasks.join("\n  ")}`;
}

/** Direct read access to the scheduler's tables. */
export class RunTables {
  private readonly pool: pg.Pool;

  constructor(url: string) {
    this.pool = new pg.Pool({ connectionString: url, max: 2 });
    // An idle connection that PostgreSQL ends (its shutdown at the end of a file, a terminated
    // backend) is an 'error' on the pool; unheard, it would be an uncaught exception of the test
    // process. The next query opens a new connection, so there is nothing to do.
    this.pool.on("error", () => undefined);
  }

  /** step id -> number of attempts and of SUCCEEDED attempts, as committed. */
  async attemptCounts(
    runId: string,
  ): Promise<Map<string, { attempts: number; succeeded: number; status: string }>> {
    const { rows } = await this.pool.query<{
      step_id: string;
      status: string;
      attempts: number;
      succeeded: number;
    }>(
      `SELECT t.step_id, t.status,
              count(a.number)::int AS attempts,
              count(a.number) FILTER (WHERE a.status = 'SUCCEEDED')::int AS succeeded
         FROM task_runs t LEFT JOIN task_attempts a ON a.task_run_id = t.id
        WHERE t.run_id = $1 GROUP BY t.id, t.step_id, t.status`,
      [runId],
    );
    return new Map(
      rows.map((r) => [r.step_id, { attempts: r.attempts, succeeded: r.succeeded, status: r.status }]),
    );
  }

  /** The run's outbox events in sequence order. */
  async outbox(runId: string): Promise<{ sequence: number; type: string }[]> {
    return (await outboxEvents(this.pool, [runId])).map((e) => ({ sequence: e.sequence, type: e.type }));
  }

  /** The run's `event_seq` column: the last outbox sequence the scheduler will resume from after a restart. */
  async eventSeq(runId: string): Promise<number | undefined> {
    const { rows } = await this.pool.query<{ seq: string }>(
      "SELECT event_seq::text AS seq FROM workflow_runs WHERE id = $1",
      [runId],
    );
    return rows[0] === undefined ? undefined : Number(rows[0].seq);
  }

  /** Runs a statement (schema changes a test makes to inject faults). */
  async exec(sql: string): Promise<void> {
    await this.pool.query(sql);
  }

  /** Closes the pool. */
  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** Every task accepted exactly one completion, and has exactly `attempts` attempts. */
export async function assertOneAcceptedCompletion(
  tables: RunTables,
  runId: string,
  attempts = 1,
): Promise<void> {
  const counts = await tables.attemptCounts(runId);
  for (const [step, c] of counts) {
    assert.equal(c.succeeded, 1, `step ${step}: ${c.succeeded} SUCCEEDED attempts in task_attempts`);
    assert.equal(c.attempts, attempts, `step ${step}: ${c.attempts} attempts in task_attempts`);
  }
}

/** The outbox of a finished run is numbered 1..n without gaps, starts with runStarted and ends with runCompleted. */
export async function assertOutboxContiguous(
  tables: RunTables,
  runId: string,
): Promise<{ sequence: number; type: string }[]> {
  const events = await tables.outbox(runId);
  assert.deepEqual(
    events.map((e) => e.sequence),
    events.map((_, i) => i + 1),
    `outbox sequences of run ${runId}: ${events.map((e) => `${e.sequence}:${e.type}`).join(" ")}`,
  );
  assert.equal(events[0]?.type, "runStarted");
  assert.equal(events.at(-1)?.type, "runCompleted");
  return events;
}
