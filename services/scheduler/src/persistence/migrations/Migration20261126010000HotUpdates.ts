import { Migration } from "@mikro-orm/migrations";

/**
 * Room for HOT updates on the rows that change on every task transition. A run, task or attempt
 * row is rewritten a few times in its life (leased, started, finished); with free space on its page
 * and no indexed column changed, PostgreSQL updates it in place without touching any index
 * (heap-only tuple), which is most of the write cost of a transition.
 *
 * - fillfactor 70 leaves that space on every new page.
 * - The partial index on task_runs(next_attempt_at) WHERE status = 'RETRY_WAIT' made every status
 *   change an indexed change, and nothing queries it: recovery reads the tasks of active runs by
 *   run and rebuilds retry timers from next_attempt_at. It is dropped.
 */
export class Migration20261126010000HotUpdates extends Migration {
  override up(): void {
    this.addSql(`alter table "workflow_runs" set (fillfactor = 70);`);
    this.addSql(`alter table "task_runs" set (fillfactor = 70);`);
    this.addSql(`alter table "task_attempts" set (fillfactor = 70);`);
    this.addSql(`drop index if exists "task_runs_retry_due_idx";`);
  }

  override down(): void {
    this.addSql(`alter table "workflow_runs" reset (fillfactor);`);
    this.addSql(`alter table "task_runs" reset (fillfactor);`);
    this.addSql(`alter table "task_attempts" reset (fillfactor);`);
    this.addSql(
      `create index "task_runs_retry_due_idx" on "task_runs" ("next_attempt_at") where "status" = 'RETRY_WAIT';`,
    );
  }
}
