import { Migration } from "@mikro-orm/migrations";

/**
 * Reruns (RerunRun): a run started from a step of an ended run links to it. `rerun_of` is the
 * original run's id; `rerun` holds what the rerun was made of, as JSON: `fromStep`, and `reused`,
 * the original task run id of each step whose output was taken over (step id -> task run id). Both
 * are written once, with the run's first row, and null for every other run. The partial index
 * serves GetRun's list of an original's reruns and costs nothing for runs that are no rerun.
 */
export class Migration20261205200000RunReruns extends Migration {
  override up(): void {
    this.addSql(
      `alter table "workflow_runs" add column "rerun_of" uuid null, add column "rerun" jsonb null;`,
    );
    this.addSql(
      `create index "workflow_runs_rerun_of_idx" on "workflow_runs" ("rerun_of", "created_at") where "rerun_of" is not null;`,
    );
  }

  override down(): void {
    this.addSql(`drop index if exists "workflow_runs_rerun_of_idx";`);
    this.addSql(
      `alter table "workflow_runs" drop column if exists "rerun_of", drop column if exists "rerun";`,
    );
  }
}
