import { Migration } from "@mikro-orm/migrations";

/**
 * One outbox row per group commit, not one per run and commit: a no-op task's three commits wrote
 * three rows (a heap record of ~430 bytes besides the events, three index entries); a commit of
 * 256 tasks now writes one row of all their events. A row is named by its first event (`run_id`,
 * `first_sequence`, still unique: every event is written once) and counts its events
 * (`event_count`); each event names its own run. `trace_context` is null, a context for all of
 * the row's events (rows written before), or an array with one entry (or null) per event.
 *
 * Recovery numbered a run's next event from the outbox (the highest `last_sequence` of the run),
 * which a row of many runs cannot answer by index. Every event of a run is committed with a write
 * of its run row or of one of its task rows, so the task row now carries the run's latest sequence
 * (`run_event_seq`) and recovery takes the higher of the run's and its tasks'. Existing runs get
 * theirs from the outbox here, once.
 */
export class Migration20261205150000OutboxRowPerCommit extends Migration {
  override up(): void {
    this.addSql(`alter table "task_runs" add column "run_event_seq" bigint not null default 0;`);
    this.addSql(
      `update "workflow_runs" r set "event_seq" = o.last from (select "run_id", max("last_sequence") as last from "outbox_events" group by "run_id") o where o."run_id" = r."id" and o.last > r."event_seq";`,
    );
    this.addSql(`alter table "outbox_events" add column "event_count" int;`);
    this.addSql(`update "outbox_events" set "event_count" = "last_sequence" - "first_sequence" + 1;`);
    this.addSql(`alter table "outbox_events" alter column "event_count" set not null;`);
    this.addSql(`alter table "outbox_events" drop column "last_sequence";`);
  }

  /**
   * Rows of several runs cannot be described by one run's sequence range: let the relay publish
   * them before downgrading (rows it published are read by nothing but `events tail`).
   */
  override down(): void {
    this.addSql(`alter table "outbox_events" add column "last_sequence" bigint;`);
    this.addSql(`update "outbox_events" set "last_sequence" = "first_sequence" + "event_count" - 1;`);
    this.addSql(`alter table "outbox_events" alter column "last_sequence" set not null;`);
    this.addSql(`alter table "outbox_events" drop column "event_count";`);
    this.addSql(`alter table "task_runs" drop column "run_event_seq";`);
  }
}
