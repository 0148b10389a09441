import { Migration } from "@mikro-orm/migrations";

/**
 * Schedules declared in workflow definitions (WorkflowSpec.schedules): their ids are
 * `<workflow>/<id>` (up to 63 + 1 + 63 characters; a '/' is in no id CreateSchedule accepts, so
 * the two never meet), and `declared_version` is the latest version of the workflow that declares
 * the schedule (null for a schedule made by CreateSchedule, which registering a workflow never
 * touches). Widening a varchar rewrites neither the table nor its indexes.
 */
export class Migration20261205230000DeclaredSchedules extends Migration {
  override up(): void {
    this.addSql(
      `alter table "schedules" alter column "schedule_id" type varchar(127), add column "declared_version" int null;`,
    );
  }

  override down(): void {
    this.addSql(`delete from "schedules" where "declared_version" is not null;`);
    this.addSql(
      `alter table "schedules" drop column if exists "declared_version", alter column "schedule_id" type varchar(63);`,
    );
  }
}
