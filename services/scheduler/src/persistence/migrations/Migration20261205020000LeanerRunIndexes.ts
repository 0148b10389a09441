import { Migration } from "@mikro-orm/migrations";

/**
 * Fewer index entries per run: every run row is inserted once and updated once (its status
 * changes, so the update is never HOT and adds an entry to every index of the table).
 *
 * - `workflow_runs_active_idx` (created_at WHERE status is active) duplicated what
 *   `workflow_runs_status_created_idx` (status, created_at) already finds for recovery's
 *   `status IN ('PENDING', 'RUNNING', 'COMPENSATING')`. It is dropped.
 * - The GIN index on `labels` took an entry (and a rewrite of its pending list's meta page) for
 *   every run, labelled or not, twice per run; ListRuns never used it (it filtered with
 *   `labels->>'key' = 'value'`). It now covers labelled runs only, and ListRuns filters by
 *   containment on labelled runs (`labels @> ... AND labels <> '{}'`), which it serves.
 */
export class Migration20261205020000LeanerRunIndexes extends Migration {
  override up(): void {
    this.addSql(`drop index if exists "workflow_runs_active_idx";`);
    this.addSql(`drop index if exists "workflow_runs_labels_gin";`);
    this.addSql(
      `create index "workflow_runs_labels_gin" on "workflow_runs" using gin ("labels" jsonb_path_ops) where "labels" <> '{}'::jsonb;`,
    );
  }

  override down(): void {
    this.addSql(`drop index if exists "workflow_runs_labels_gin";`);
    this.addSql(
      `create index "workflow_runs_labels_gin" on "workflow_runs" using gin ("labels" jsonb_path_ops);`,
    );
    this.addSql(
      `create index "workflow_runs_active_idx" on "workflow_runs" ("created_at") where "status" in ('PENDING', 'RUNNING', 'COMPENSATING');`,
    );
  }
}
