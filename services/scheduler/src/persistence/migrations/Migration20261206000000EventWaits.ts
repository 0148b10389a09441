import { Migration } from "@mikro-orm/migrations";

/**
 * Waits for an event (core/event-waits.ts): the waiting steps an event matched, stored with the
 * event in the statement that stores it, PENDING until the scheduler has ended each wait with it
 * (SATISFIED) or found it ended otherwise (WAIT_ENDED). A crash in between leaves them PENDING,
 * and the next scheduler applies them (triggers/wait-matches.ts). No foreign key to the run: the
 * waiting run's rows may still be in the scheduler's next commit when the event is stored.
 */
export class Migration20261206000000EventWaits extends Migration {
  override up(): void {
    this.addSql(
      `create table "event_wait_matches" ("event_id" uuid not null, "task_run_id" uuid not null, "run_id" uuid not null, "step_id" varchar(80) not null, "status" varchar(16) not null, "created_at" timestamptz not null, constraint "event_wait_matches_pkey" primary key ("event_id", "task_run_id"), constraint "event_wait_matches_event_fk" foreign key ("event_id") references "events" ("event_id") on delete cascade);`,
    );
    this.addSql(
      `create index "event_wait_matches_pending_idx" on "event_wait_matches" ("created_at") where "status" = 'PENDING';`,
    );
  }

  override down(): void {
    this.addSql(`drop table if exists "event_wait_matches";`);
  }
}
