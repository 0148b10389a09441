import { Migration } from "@mikro-orm/migrations";

/**
 * An outbox row's trace contexts are stored as they are, not compressed (STORAGE EXTERNAL): one row
 * holds a commit's events, so with tracing on its `trace_context` holds a `traceparent` per run of
 * the commit (kilobytes of random hex), which PostgreSQL tried to compress at every insert for
 * little gain. Timed on 200-run rows (bench/notes/26-session-thirty.md): the insert's execution
 * 0.89 -> 0.62 ms a row, about 1.4 us less per run's context, for ~4 KiB more WAL a row. Only new
 * values are affected; nothing is rewritten.
 */
export class Migration20261207000000OutboxTraceContextStorage extends Migration {
  override up(): void {
    this.addSql(`alter table "outbox_events" alter column "trace_context" set storage external;`);
  }

  override down(): void {
    this.addSql(`alter table "outbox_events" alter column "trace_context" set storage extended;`);
  }
}
