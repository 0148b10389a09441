import { Migration } from "@mikro-orm/migrations";

/**
 * A run keeps the W3C `traceparent` of the StartRun call that created it (tracing on; null
 * otherwise), so that its attempts, handlers and events join one trace even after a restart.
 * Adding a nullable column without a default rewrites no rows.
 */
export class Migration20261205010000RunTraceParent extends Migration {
  override up(): void {
    this.addSql(`alter table "workflow_runs" add column "trace_parent" varchar(55) null;`);
  }

  override down(): void {
    this.addSql(`alter table "workflow_runs" drop column if exists "trace_parent";`);
  }
}
