import { Migration } from "@mikro-orm/migrations";

/** The varint encoding of a bytea's length in SQL (lengths below 256 MiB: four bytes at most). */
const LENGTH_VARINT = `CASE
  WHEN length("payload") < 128 THEN set_byte('\\x00'::bytea, 0, length("payload"))
  WHEN length("payload") < 16384 THEN set_byte(set_byte('\\x0000'::bytea, 0, (length("payload") & 127) | 128),
    1, length("payload") >> 7)
  WHEN length("payload") < 2097152 THEN set_byte(set_byte(set_byte('\\x000000'::bytea,
    0, (length("payload") & 127) | 128), 1, ((length("payload") >> 7) & 127) | 128), 2, length("payload") >> 14)
  ELSE set_byte(set_byte(set_byte(set_byte('\\x00000000'::bytea, 0, (length("payload") & 127) | 128),
    1, ((length("payload") >> 7) & 127) | 128), 2, ((length("payload") >> 14) & 127) | 128), 3, length("payload") >> 21)
END`;

/**
 * One outbox row per run and commit instead of one per event. A no-op task's four events (leased,
 * started, succeeded, run completed) were four rows with three index entries each; they are now
 * two rows, one per commit, which took a sixth of PostgreSQL's CPU per task in the benchmark.
 *
 * A row's payload is a LifecycleEventBatch: the run's events of that commit, in sequence order,
 * `first_sequence` to `last_sequence` without gaps. The relay still publishes every event as its
 * own Kafka message, with its own id. Event ids and types live in the payload only.
 *
 * Existing rows (one event each) become batches of one: field 1, its length, the event's bytes.
 */
export class Migration20261126020000OutboxRunBatches extends Migration {
  override up(): void {
    this.addSql(`alter table "outbox_events" add column "last_sequence" bigint;`);
    this.addSql(
      `update "outbox_events" set "last_sequence" = "sequence", "payload" = '\\x0a'::bytea || ${LENGTH_VARINT} || "payload";`,
    );
    this.addSql(`alter table "outbox_events" alter column "last_sequence" set not null;`);
    this.addSql(`alter table "outbox_events" rename column "sequence" to "first_sequence";`);
    this.addSql(`alter table "outbox_events" drop column "event_id", drop column "type";`);
  }

  override down(): void {
    // A row of several events cannot be split back in SQL (event ids and types are inside the
    // protobuf payload); restore from a backup taken before the upgrade instead.
    throw new Error("Migration20261126020000OutboxRunBatches cannot be reverted");
  }
}
