import { Migration } from "@mikro-orm/migrations";

/**
 * Events (EventService) and the workflows their triggers matched. An event and its matches are
 * written by one statement: each match STARTING (its run to be started) or FAILED (its filter
 * failed on the event), then STARTED with its run. A crash between the two leaves the match
 * STARTING, and the next scheduler starts its run through the run's idempotency key
 * (`event:<event_id>` of the workflow), so a match is neither lost nor doubled. The idempotency
 * key of a publish is unique: the same key again finds the stored event. `seq` orders events for
 * ListEvents' pages.
 */
export class Migration20261205180000EventTriggers extends Migration {
  override up(): void {
    this.addSql(
      `create table "events" ("event_id" uuid not null, "seq" bigserial not null, "key" varchar(255) not null, "payload" jsonb not null, "idempotency_key" varchar(200) null, "created_at" timestamptz not null, constraint "events_pkey" primary key ("event_id"), constraint "events_seq_uq" unique ("seq"), constraint "events_idempotency_key_uq" unique ("idempotency_key"));`,
    );
    this.addSql(`create index "events_key_idx" on "events" ("key" text_pattern_ops, "seq");`);
    this.addSql(
      `create table "event_matches" ("event_id" uuid not null, "workflow_name" varchar(63) not null, "workflow_version" int not null, "trigger_index" int not null, "status" varchar(16) not null, "run_id" uuid null, "error" text null, "created_at" timestamptz not null, constraint "event_matches_pkey" primary key ("event_id", "workflow_name"), constraint "event_matches_event_fk" foreign key ("event_id") references "events" ("event_id") on delete cascade);`,
    );
    this.addSql(
      `create index "event_matches_starting_idx" on "event_matches" ("created_at") where "status" = 'STARTING';`,
    );
  }

  override down(): void {
    this.addSql(`drop table if exists "event_matches";`);
    this.addSql(`drop table if exists "events";`);
  }
}
