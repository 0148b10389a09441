/**
 * The names of every migration, in order, without the migrations themselves: what a scheduler
 * started with MIGRATE_ON_START=false compares with the database (schema.ts `pendingMigrations`),
 * without loading MikroORM (the migrations import `@mikro-orm/migrations`, ~9 MiB of heap in a
 * process that applies none). index.ts lists the classes; names.test.ts checks both agree.
 */
/** The table where MikroORM records applied migrations (migrator.ts). */
export const MIGRATIONS_TABLE = "nexusflow_migrations";

/** Every migration's name, in the order they apply. */
export const MIGRATION_NAMES: readonly string[] = [
  "Migration20261126000000Initial",
  "Migration20261126010000HotUpdates",
  "Migration20261126020000OutboxRunBatches",
  "Migration20261205000000IdempotencyKeys",
  "Migration20261205010000RunTraceParent",
  "Migration20261205020000LeanerRunIndexes",
  "Migration20261205030000TaskFillfactor",
  "Migration20261205040000LatestAttemptInTaskRow",
  "Migration20261205100000Schedules",
  "Migration20261205150000OutboxRowPerCommit",
  "Migration20261205160000Partitions",
  "Migration20261205170000RunSignals",
  "Migration20261205180000EventTriggers",
  "Migration20261205190000ChildRuns",
  "Migration20261205200000RunReruns",
  "Migration20261205210000RateLimitBuckets",
  "Migration20261205220000MapElements",
  "Migration20261205230000DeclaredSchedules",
  "Migration20261205231000EventRetention",
  "Migration20261206000000EventWaits",
  "Migration20261206010000ParkedRuns",
  "Migration20261206020000RateLimitGrants",
  "Migration20261206030000RateLimitFullAt",
  "Migration20261207010000OutboxEventTraces",
];
