import { Migration } from "@mikro-orm/migrations";

/**
 * Child workflows (core/children.ts): a run started by a parent's `workflow` step names that run
 * and step (`parent_run_id`, `parent_step_id`) and how deep it is under its root (`child_depth`,
 * 0 for a run nobody started), all written with the child's first row. GetRun finds a parent's
 * children with the partial index (only child runs are in it). Nullable columns and a constant
 * default rewrite no rows.
 */
export class Migration20261205190000ChildRuns extends Migration {
  override up(): void {
    this.addSql(
      `alter table "workflow_runs" add column "parent_run_id" uuid null, add column "parent_step_id" varchar(63) null, add column "child_depth" int not null default 0;`,
    );
    this.addSql(
      `create index "workflow_runs_parent_idx" on "workflow_runs" ("parent_run_id") where "parent_run_id" is not null;`,
    );
  }

  override down(): void {
    this.addSql(`drop index if exists "workflow_runs_parent_idx";`);
    this.addSql(
      `alter table "workflow_runs" drop column if exists "parent_run_id", drop column if exists "parent_step_id", drop column if exists "child_depth";`,
    );
  }
}
