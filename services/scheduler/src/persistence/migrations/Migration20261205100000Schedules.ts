import { Migration } from "@mikro-orm/migrations";

/**
 * Schedules (ScheduleService) and their fires. A schedule's `cursor_at` is the latest fire time the
 * fire loop has dealt with; `next_fire_at` (indexed, null while paused or when the expression has
 * no more) is when it is next due. A fire that starts a run is a row of `schedule_fires`, written
 * STARTING in the same transaction that moves the cursor past it, then STARTED with its run: a
 * crash between the two leaves the row STARTING, and the next loop finishes it through the run's
 * idempotency key, so a fire is neither lost nor doubled. `uid` is new for each creation, so a
 * schedule deleted and created again under the same id never meets its old fires' keys.
 */
export class Migration20261205100000Schedules extends Migration {
  override up(): void {
    this.addSql(
      `create table "schedules" ("schedule_id" varchar(63) not null, "uid" uuid not null, "workflow_name" varchar(63) not null, "spec" jsonb not null, "paused" boolean not null default false, "note" text not null default '', "cursor_at" timestamptz not null, "last_fire_at" timestamptz null, "next_fire_at" timestamptz null, "buffered_fire_at" timestamptz null, "started_count" bigint not null default 0, "skipped_count" bigint not null default 0, "missed_count" bigint not null default 0, "created_at" timestamptz not null, "updated_at" timestamptz not null, constraint "schedules_pkey" primary key ("schedule_id"), constraint "schedules_uid_uq" unique ("uid"));`,
    );
    this.addSql(
      `create index "schedules_due_idx" on "schedules" ("next_fire_at") where "next_fire_at" is not null;`,
    );
    this.addSql(
      `create index "schedules_buffered_idx" on "schedules" ("schedule_id") where "buffered_fire_at" is not null;`,
    );
    this.addSql(`create index "schedules_workflow_idx" on "schedules" ("workflow_name", "schedule_id");`);
    this.addSql(
      `create table "schedule_fires" ("schedule_uid" uuid not null, "fire_key" varchar(120) not null, "fire_at" timestamptz not null, "origin" varchar(16) not null, "status" varchar(16) not null, "run_id" uuid null, "error" text null, "run_ended" boolean not null default false, "created_at" timestamptz not null, constraint "schedule_fires_pkey" primary key ("schedule_uid", "fire_key"), constraint "schedule_fires_schedule_fk" foreign key ("schedule_uid") references "schedules" ("uid") on delete cascade);`,
    );
    this.addSql(
      `create index "schedule_fires_recent_idx" on "schedule_fires" ("schedule_uid", "created_at" desc);`,
    );
    this.addSql(
      `create index "schedule_fires_starting_idx" on "schedule_fires" ("schedule_uid") where "status" = 'STARTING';`,
    );
    this.addSql(
      `create index "schedule_fires_active_idx" on "schedule_fires" ("schedule_uid") where "run_id" is not null and not "run_ended";`,
    );
  }

  override down(): void {
    this.addSql(`drop table if exists "schedule_fires";`);
    this.addSql(`drop table if exists "schedules";`);
  }
}
