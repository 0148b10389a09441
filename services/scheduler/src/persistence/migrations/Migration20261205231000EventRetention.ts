import { Migration } from "@mikro-orm/migrations";

/**
 * Event retention (triggers/event-retention.ts): events older than EVENT_RETENTION are deleted
 * oldest first, a batch at a time, found through this index on their publish time.
 */
export class Migration20261205231000EventRetention extends Migration {
  override up(): void {
    this.addSql(`create index if not exists "events_created_idx" on "events" ("created_at");`);
  }

  override down(): void {
    this.addSql(`drop index if exists "events_created_idx";`);
  }
}
