import { Migration } from "@mikro-orm/migrations";

/**
 * Rate limit grants by writer part (issue #27): the bucket as a part's latest grant left it, one row
 * per bucket (`name`, `key`) and `shard`, the slot of the batch writer's part that wrote it (0 or 1:
 * a large batch commits as two parts in parallel, batch-rows.ts takeParts). Two parts granting from
 * one bucket used to upsert its one row in `rate_limit_buckets`, so the second waited on the first's
 * row lock until its commit; each now has a row of its own. A row is replaced only by a later grant
 * (`seq`); recovery takes, per bucket, the snapshot with the highest `seq` among these rows and the
 * `tokens`/`seq` of `rate_limit_buckets` (written before this migration), which keeps its pauses.
 */
export class Migration20261206020000RateLimitGrants extends Migration {
  override up(): void {
    this.addSql(`create table "rate_limit_grants" (
      "name" text not null,
      "key" text not null,
      "shard" smallint not null,
      "tokens" double precision not null,
      "refilled_at" double precision not null,
      "seq" bigint not null,
      "updated_at" timestamptz not null default now(),
      constraint "rate_limit_grants_pkey" primary key ("name", "key", "shard")
    );`);
  }

  override down(): void {
    this.addSql(`drop table if exists "rate_limit_grants";`);
  }
}
