import { Migration } from "@mikro-orm/migrations";

/**
 * StartRun's idempotency keys get a table of their own, scoped by workflow name, with the hash of
 * the request they were first used with and the time, so that a key can expire (and then name a
 * newer run) while the old run keeps it in `workflow_runs.idempotency_key` for display. Tenants,
 * when they come, become one more column at the front of the primary key.
 *
 * The global unique constraint on `workflow_runs.idempotency_key` goes: the same key may now name
 * runs of two workflows, or an expired key a newer run. Existing keys are carried over with no
 * hash; the scheduler computes it from their run's input and labels when the key is next used.
 * No foreign key to the run: it would need an index on `run_id` (one more index write per keyed
 * StartRun) for deletes to find the key; the retention purge deletes a run's key by primary key.
 */
export class Migration20261205000000IdempotencyKeys extends Migration {
  override up(): void {
    this.addSql(
      `create table "idempotency_keys" ("workflow_name" varchar(63) not null, "idempotency_key" varchar(200) not null, "run_id" uuid not null, "request_hash" varchar(64) null, "created_at" timestamptz not null, constraint "idempotency_keys_pkey" primary key ("workflow_name", "idempotency_key"));`,
    );
    this.addSql(
      `insert into "idempotency_keys" ("workflow_name", "idempotency_key", "run_id", "request_hash", "created_at") select "workflow_name", "idempotency_key", "id", null, "created_at" from "workflow_runs" where "idempotency_key" is not null;`,
    );
    this.addSql(`alter table "workflow_runs" drop constraint "workflow_runs_idempotency_key_uq";`);
  }

  override down(): void {
    // Fails if a key now names runs of two workflows (or an expired key a second run): resolve
    // those first.
    this.addSql(
      `alter table "workflow_runs" add constraint "workflow_runs_idempotency_key_uq" unique ("idempotency_key");`,
    );
    this.addSql(`drop table if exists "idempotency_keys";`);
  }
}
