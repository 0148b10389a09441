import { Migration } from "@mikro-orm/migrations";

/**
 * Rate limits (core/rate-limits.ts): one row per token bucket, by limit name and key value ("" for
 * a limit without a key). `tokens` as of `refilled_at` (ms since the epoch, exact), written with
 * the lease that took them in one commit and replaced only by a later grant (`seq`); a pause of
 * the key (`paused_until`, by whom, why) is written by its own statement.
 */
export class Migration20261205210000RateLimitBuckets extends Migration {
  override up(): void {
    this.addSql(`create table "rate_limit_buckets" (
      "name" text not null,
      "key" text not null,
      "tokens" double precision not null,
      "refilled_at" double precision not null,
      "seq" bigint not null default 0,
      "paused_until" timestamptz null,
      "paused_by" text not null default '',
      "pause_note" text not null default '',
      "updated_at" timestamptz not null default now(),
      constraint "rate_limit_buckets_pkey" primary key ("name", "key")
    );`);
  }

  override down(): void {
    this.addSql(`drop table if exists "rate_limit_buckets";`);
  }
}
