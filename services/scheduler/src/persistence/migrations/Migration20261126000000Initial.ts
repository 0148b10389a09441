import { Migration } from "@mikro-orm/migrations";

/** The initial schema: definitions, runs, task runs, attempts and the transactional outbox. */
export class Migration20261126000000Initial extends Migration {
  override up(): void {
    this.addSql(
      `create table "workflow_definitions" ("id" bigserial primary key, "name" varchar(63) not null, "version" int not null, "spec" jsonb not null, "content_hash" varchar(64) not null, "description" text not null default '', "created_at" timestamptz not null default now());`,
    );
    this.addSql(
      `alter table "workflow_definitions" add constraint "workflow_definitions_name_version_uq" unique ("name", "version");`,
    );

    this.addSql(
      `create table "workflow_runs" ("id" uuid not null, "definition_id" bigint not null references "workflow_definitions" ("id"), "workflow_name" varchar(63) not null, "workflow_version" int not null, "status" varchar(24) not null, "input" jsonb null, "output" jsonb null, "error" jsonb null, "idempotency_key" varchar(200) null, "labels" jsonb not null default '{}', "cancel_requested" boolean not null default false, "compensate_on_cancel" boolean not null default false, "event_seq" bigint not null default 0, "deadline" timestamptz null, "created_at" timestamptz not null default now(), "updated_at" timestamptz not null default now(), "ended_at" timestamptz null, constraint "workflow_runs_pkey" primary key ("id"));`,
    );
    this.addSql(
      `alter table "workflow_runs" add constraint "workflow_runs_idempotency_key_uq" unique ("idempotency_key");`,
    );
    // ListRuns pages newest first, optionally per workflow or status; labels filter by containment.
    this.addSql(`create index "workflow_runs_created_idx" on "workflow_runs" ("created_at", "id");`);
    this.addSql(
      `create index "workflow_runs_workflow_created_idx" on "workflow_runs" ("workflow_name", "created_at");`,
    );
    this.addSql(
      `create index "workflow_runs_status_created_idx" on "workflow_runs" ("status", "created_at");`,
    );
    this.addSql(
      `create index "workflow_runs_labels_gin" on "workflow_runs" using gin ("labels" jsonb_path_ops);`,
    );
    // Recovery loads every run that is not finished.
    this.addSql(
      `create index "workflow_runs_active_idx" on "workflow_runs" ("created_at") where "status" in ('PENDING', 'RUNNING', 'COMPENSATING');`,
    );

    this.addSql(
      `create table "task_runs" ("id" uuid not null, "run_id" uuid not null references "workflow_runs" ("id") on delete cascade, "step_id" varchar(63) not null, "kind" varchar(16) not null, "type" varchar(63) not null, "status" varchar(16) not null, "position" int not null, "input" jsonb null, "output" jsonb null, "output_ref" jsonb null, "error" jsonb null, "skip_reason" varchar(16) null, "attempt" int not null default 0, "fencing_token" bigint not null default 0, "executor_id" varchar(200) null, "lease_expires_at" timestamptz null, "next_attempt_at" timestamptz null, "queued_at" timestamptz null, "created_at" timestamptz not null default now(), "updated_at" timestamptz not null default now(), "ended_at" timestamptz null, constraint "task_runs_pkey" primary key ("id"));`,
    );
    this.addSql(
      `alter table "task_runs" add constraint "task_runs_run_step_kind_uq" unique ("run_id", "step_id", "kind");`,
    );
    // Durable retry timers are found by due time.
    this.addSql(
      `create index "task_runs_retry_due_idx" on "task_runs" ("next_attempt_at") where "status" = 'RETRY_WAIT';`,
    );

    this.addSql(
      `create table "task_attempts" ("task_run_id" uuid not null references "task_runs" ("id") on delete cascade, "number" int not null, "run_id" uuid not null, "fencing_token" bigint not null, "executor_id" varchar(200) not null, "status" varchar(16) not null, "error" jsonb null, "logs" jsonb null, "leased_at" timestamptz not null, "started_at" timestamptz null, "ended_at" timestamptz null, constraint "task_attempts_pkey" primary key ("task_run_id", "number"));`,
    );
    this.addSql(`create index "task_attempts_run_idx" on "task_attempts" ("run_id");`);

    this.addSql(
      `create table "outbox_events" ("id" bigserial primary key, "event_id" uuid not null, "run_id" uuid not null, "sequence" bigint not null, "type" varchar(40) not null, "payload" bytea not null, "trace_context" jsonb null, "created_at" timestamptz not null default now(), "published_at" timestamptz null);`,
    );
    this.addSql(
      `alter table "outbox_events" add constraint "outbox_events_run_sequence_uq" unique ("run_id", "sequence");`,
    );
    // The relay reads unpublished events in commit order.
    this.addSql(
      `create index "outbox_events_unpublished_idx" on "outbox_events" ("id") where "published_at" is null;`,
    );
  }

  override down(): void {
    this.addSql(
      `drop table if exists "outbox_events", "task_attempts", "task_runs", "workflow_runs", "workflow_definitions" cascade;`,
    );
  }
}
