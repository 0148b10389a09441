import { Migration } from "@mikro-orm/migrations";

/**
 * Map steps (core/maps.ts): an element task of a map step is a task row stored under step id
 * `<step>[<index>]`, so `task_runs.step_id` grows from 63 to 80 characters (a 63-character step
 * id, brackets and an index up to 9999). Widening a varchar rewrites no rows and no index.
 */
export class Migration20261205220000MapElements extends Migration {
  override up(): void {
    this.addSql(`alter table "task_runs" alter column "step_id" type varchar(80);`);
  }

  override down(): void {
    this.addSql(`delete from "task_runs" where length("step_id") > 63;`);
    this.addSql(`alter table "task_runs" alter column "step_id" type varchar(63);`);
  }
}
