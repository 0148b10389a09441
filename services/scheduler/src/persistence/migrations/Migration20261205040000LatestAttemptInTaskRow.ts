import { Migration } from "@mikro-orm/migrations";

/** What the `task_attempts` view shows: every attempt of every task, as the table it replaces. */
export const TASK_ATTEMPTS_VIEW = `select "task_run_id", "number", "run_id", "fencing_token", "executor_id", "status", "error", "logs",
  "leased_at", "started_at", "ended_at" from "task_attempt_history"
union all
select "id", "attempt", "run_id", "fencing_token", coalesce("attempt_executor_id", "executor_id"), "attempt_status",
  "attempt_error", "attempt_logs", "leased_at", "started_at", "attempt_ended_at" from "task_runs"
where "attempt_status" is not null`;

/**
 * A task's latest attempt lives in its own row; only the attempts it has moved past (retries,
 * expired or released leases) are rows of their own. A task that succeeds at its first attempt,
 * nearly every task, wrote a task_attempts row (two index entries, a foreign-key lock on its task)
 * and updated it once more; its attempt is now a few columns of the task row, which is written
 * anyway in the same commits (lease, completion).
 *
 * - `task_attempts` becomes `task_attempt_history` (its keys, index and foreign key unchanged).
 * - `task_runs` gains the latest attempt's status, error, logs, lease, start and end times, and its
 *   executor when that is not the task's (an attempt that timed out in the queue has none). Its
 *   number, fencing token and run are the task's.
 * - The view `task_attempts` shows both, as the table did: GetRun, the artifact service and
 *   recovery read it unchanged.
 *
 * Existing data: each task's latest attempt moves into its row and out of the history.
 */
export class Migration20261205040000LatestAttemptInTaskRow extends Migration {
  override up(): void {
    this.addSql(`alter table "task_attempts" rename to "task_attempt_history";`);
    this.addSql(
      `alter table "task_runs" add column "attempt_status" varchar(16) null, add column "attempt_error" jsonb null, add column "attempt_logs" jsonb null, add column "attempt_executor_id" varchar(200) null, add column "leased_at" timestamptz null, add column "started_at" timestamptz null, add column "attempt_ended_at" timestamptz null;`,
    );
    this.addSql(
      `update "task_runs" t set "attempt_status" = a."status", "attempt_error" = a."error", "attempt_logs" = a."logs",
        "attempt_executor_id" = case when a."executor_id" is distinct from t."executor_id" then a."executor_id" end,
        "leased_at" = a."leased_at", "started_at" = a."started_at", "attempt_ended_at" = a."ended_at"
        from "task_attempt_history" a where a."task_run_id" = t."id" and a."number" = t."attempt";`,
    );
    this.addSql(
      `delete from "task_attempt_history" a using "task_runs" t where a."task_run_id" = t."id" and a."number" = t."attempt";`,
    );
    this.addSql(`create view "task_attempts" as ${TASK_ATTEMPTS_VIEW};`);
  }

  override down(): void {
    this.addSql(`drop view if exists "task_attempts";`);
    this.addSql(
      `insert into "task_attempt_history" ("task_run_id", "number", "run_id", "fencing_token", "executor_id", "status", "error", "logs", "leased_at", "started_at", "ended_at")
        select "id", "attempt", "run_id", "fencing_token", coalesce("attempt_executor_id", "executor_id"), "attempt_status", "attempt_error", "attempt_logs", "leased_at", "started_at", "attempt_ended_at"
        from "task_runs" where "attempt_status" is not null;`,
    );
    this.addSql(
      `alter table "task_runs" drop column "attempt_status", drop column "attempt_error", drop column "attempt_logs", drop column "attempt_executor_id", drop column "leased_at", drop column "started_at", drop column "attempt_ended_at";`,
    );
    this.addSql(`alter table "task_attempt_history" rename to "task_attempts";`);
  }
}
