import { Migration } from "@mikro-orm/migrations";

/**
 * Parked runs (core/parking.ts, engine/parking.ts): a run that only waits (signals, events, sleeps,
 * child runs) leaves the scheduler's memory once its rows are committed, and keeps a row here.
 *
 * - `parked_runs`: one row per parked run, with the time it must be loaded back at the latest
 *   (`wake_at`: its earliest wait timeout or sleep, or its deadline; null: none), found by the
 *   partial index `parked_runs_wake_idx`. Recovery at start-up leaves these runs in the database.
 * - `parked_event_waits`: its waits for an event, by literal key (`key`, indexed) or by pattern
 *   (`pattern`, a POSIX regular expression that a published key is tested against): a published
 *   event loads back the runs it may satisfy, and matches them in memory.
 *
 * The rows of a run are deleted when it is loaded back, before it changes again. No foreign key
 * to `workflow_runs`: these tables are an index of runs the scheduler left in the database.
 */
export class Migration20261206010000ParkedRuns extends Migration {
  override up(): void {
    this.addSql(
      `create table "parked_runs" ("run_id" uuid not null, "wake_at" timestamptz null, "parked_at" timestamptz not null default now(), constraint "parked_runs_pkey" primary key ("run_id"));`,
    );
    this.addSql(
      `create index "parked_runs_wake_idx" on "parked_runs" ("wake_at") where "wake_at" is not null;`,
    );
    this.addSql(
      `create table "parked_event_waits" ("task_run_id" uuid not null, "run_id" uuid not null, "key" text null, "pattern" text null, constraint "parked_event_waits_pkey" primary key ("task_run_id"), constraint "parked_event_waits_run_fk" foreign key ("run_id") references "parked_runs" ("run_id") on delete cascade);`,
    );
    this.addSql(`create index "parked_event_waits_run_idx" on "parked_event_waits" ("run_id");`);
    this.addSql(
      `create index "parked_event_waits_key_idx" on "parked_event_waits" ("key") where "key" is not null;`,
    );
    this.addSql(
      `create index "parked_event_waits_pattern_idx" on "parked_event_waits" ("run_id") where "pattern" is not null;`,
    );
  }

  override down(): void {
    this.addSql(`drop table if exists "parked_event_waits";`);
    this.addSql(`drop table if exists "parked_runs";`);
  }
}
