import { Migration } from "@mikro-orm/migrations";

/**
 * When a rate limit grant's bucket is full again (`full_at`, ms since the epoch, like `refilled_at`):
 * the grant's tokens plus the refill at the limit's rate reach its burst then, and a bucket that is
 * full is the same as one never used. The coordinator's purge (persistence/rate-limit-purge.ts)
 * deletes the rows past it (a pause row once its pause is over too), so that keyed limits (a bucket
 * per key value) leave no row per key for ever. Rows written before this migration, and pauses of
 * keys no task had used (fullness unknown), have none and are kept. No index: the purge reads the
 * table once per interval, and an index on a column every grant changes would make the writer's
 * upserts leave HOT.
 */
export class Migration20261206030000RateLimitFullAt extends Migration {
  override up(): void {
    this.addSql(`alter table "rate_limit_grants" add column "full_at" double precision null;`);
    this.addSql(`alter table "rate_limit_buckets" add column "full_at" double precision null;`);
  }

  override down(): void {
    this.addSql(`alter table "rate_limit_grants" drop column if exists "full_at";`);
    this.addSql(`alter table "rate_limit_buckets" drop column if exists "full_at";`);
  }
}
