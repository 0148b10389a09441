import { Migration } from "@mikro-orm/migrations";

/**
 * Partitions owned through PostgreSQL (issue #22, docs/replicas.md). A run belongs to partition
 * `(last 32 bits of its id) mod partition_count` (cluster/partitioning.ts), so no column of
 * `workflow_runs` carries it: the writer computes it, and SQL can too (`nexusflow_partition_of`).
 *
 * - `cluster_settings`: one row, the installation's partition count, written once by the first
 *   scheduler that starts (PARTITIONS, default 16) and fixed from then on.
 * - `partitions`: who owns each partition (`owner`, a replica id, null when handed over), its
 *   `epoch` (raised by one on every change of owner: the fencing token) and until when the lease
 *   holds (`lease_expires_at`, database time).
 * - `replicas`: the live scheduler processes (one row per start), their gRPC address and heartbeat.
 * - `nexusflow_fence(owner, partitions, epochs)`: called by every group commit in the same
 *   statement as its writes. It takes a shared transaction-level advisory lock per partition (a
 *   taker holds the exclusive one in the transaction that raises the epoch), then reads the rows
 *   with a snapshot taken after those locks (a volatile PL/pgSQL function's queries each take
 *   their own), and raises SQLSTATE NF001 when any partition is no longer this owner's at the
 *   epoch it holds: the statement, and every write in it, is rolled back. Advisory locks live in
 *   memory: the check writes no WAL.
 */
export class Migration20261205160000Partitions extends Migration {
  override up(): void {
    this.addSql(
      `create table "cluster_settings" ("id" boolean not null default true, "partition_count" int not null, "created_at" timestamptz not null default now(), constraint "cluster_settings_pkey" primary key ("id"), constraint "cluster_settings_one_row" check ("id"), constraint "cluster_settings_partition_count_check" check ("partition_count" between 1 and 4096));`,
    );
    this.addSql(
      `create table "replicas" ("id" uuid not null, "address" text not null default '', "host" text not null, "pid" int not null, "started_at" timestamptz not null default now(), "heartbeat_at" timestamptz not null default now(), constraint "replicas_pkey" primary key ("id"));`,
    );
    this.addSql(
      `create table "partitions" ("partition" int not null, "owner" uuid null, "epoch" bigint not null default 0, "lease_expires_at" timestamptz not null default now(), "changed_at" timestamptz not null default now(), constraint "partitions_pkey" primary key ("partition")) with (fillfactor = 50);`,
    );
    this.addSql(
      `create function "nexusflow_partition_of"(run_id uuid, partition_count int) returns int language sql immutable parallel safe as $$ select (('x' || right(replace(run_id::text, '-', ''), 8))::bit(32)::bigint % partition_count)::int $$;`,
    );
    // 1313230932 = 0x4e465054, "NFPT": the class of the partitions' advisory locks (cluster/partitioning.ts).
    this
      .addSql(`create function "nexusflow_fence"(fence_owner uuid, fence_parts int[], fence_epochs bigint[]) returns int
language plpgsql volatile as $$
declare
  p int;
  lost int[];
begin
  -- In order, so that two writers never wait on each other; a taker only ever tries (no wait).
  foreach p in array coalesce((select array_agg(distinct x order by x) from unnest(fence_parts) as x), '{}') loop
    perform pg_advisory_xact_lock_shared(1313230932, p);
  end loop;
  select array_agg(x.part order by x.part) into lost
    from unnest(fence_parts, fence_epochs) as x(part, epoch)
    left join partitions q on q.partition = x.part and q.owner = fence_owner and q.epoch = x.epoch
   where q.partition is null;
  if lost is not null then
    raise exception 'partitions % are no longer owned by replica % at the epochs it holds', lost, fence_owner
      using errcode = 'NF001', detail = array_to_string(lost, ',');
  end if;
  return cardinality(fence_parts);
end $$;`);
  }

  override down(): void {
    this.addSql(`drop function if exists "nexusflow_fence"(uuid, int[], bigint[]);`);
    this.addSql(`drop function if exists "nexusflow_partition_of"(uuid, int);`);
    this.addSql(`drop table if exists "partitions";`);
    this.addSql(`drop table if exists "replicas";`);
    this.addSql(`drop table if exists "cluster_settings";`);
  }
}
