import { Migration } from "@mikro-orm/migrations";

/**
 * Signals sent to a run (SignalRun) live on its row, written with the run's other changes in the
 * commit that applies them (core/waits.ts): a JSON array of {name, key, payload, at, stepId},
 * null for the runs that have none. Adding a nullable column without a default rewrites no rows.
 */
export class Migration20261205170000RunSignals extends Migration {
  override up(): void {
    this.addSql(`alter table "workflow_runs" add column "signals" jsonb null;`);
  }

  override down(): void {
    this.addSql(`alter table "workflow_runs" drop column if exists "signals";`);
  }
}
