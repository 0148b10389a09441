import { Migration } from "@mikro-orm/migrations";

/**
 * The events' trace contexts of an outbox row move to `event_traces` (bytea, persistence/event-traces.ts:
 * 26 bytes a `traceparent`), stored as they are (STORAGE EXTERNAL: random ids do not compress).
 * As JSON in `trace_context` a 200-run commit's contexts were ~15 KB that PostgreSQL parsed and
 * stored in eight TOAST chunks (bench/notes/26-session-thirty.md). Rows written before keep theirs
 * in `trace_context`, which the relay still reads. A relay of a version before this one publishes
 * the new rows' events without their `traceparent` header (no error): only while versions are mixed.
 */
export class Migration20261207010000OutboxEventTraces extends Migration {
  override up(): void {
    this.addSql(`alter table "outbox_events" add column "event_traces" bytea null;`);
    this.addSql(`alter table "outbox_events" alter column "event_traces" set storage external;`);
  }

  override down(): void {
    this.addSql(`alter table "outbox_events" drop column if exists "event_traces";`);
  }
}
