/**
 * The database schema as a deployment step: which migrations a database lacks (read without
 * changing anything) and applying them under one advisory lock. `migrate` (the one-shot step) and a
 * scheduler started with MIGRATE_ON_START=true (the default, `npm start`) both apply through
 * {@link applyMigrations}, so they never race on the schema; a scheduler started with
 * MIGRATE_ON_START=false only reads {@link pendingMigrations} and refuses an old schema.
 */
import type { Logger } from "@nexusflow/common";
import pg from "pg";
import { MIGRATION_NAMES, MIGRATIONS_TABLE } from "./migrations/names.js";

/** Advisory lock key of applying migrations ("NFMIGRAT"), distinct from the scheduler's. */
export const MIGRATE_LOCK_KEY = 0x4e464d4947524154n;

/** The migrations this build knows that `url`'s database has not applied (all when the table is missing). */
export async function pendingMigrations(url: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    const table = await client.query<{ exists: boolean }>("SELECT to_regclass($1) IS NOT NULL AS exists", [
      MIGRATIONS_TABLE,
    ]);
    const applied = new Set<string>();
    if (table.rows[0]?.exists === true) {
      const rows = await client.query<{ name: string }>(`SELECT name FROM ${MIGRATIONS_TABLE}`);
      for (const { name } of rows.rows) applied.add(name.replace(/\.[jt]s$/, ""));
    }
    return MIGRATION_NAMES.filter((name) => !applied.has(name));
  } finally {
    await client.end();
  }
}

/**
 * Applies pending migrations while holding the migrate lock (a second caller waits, then finds
 * nothing to do); resolves with the names applied.
 */
export async function applyMigrations(url: string, log: Logger): Promise<string[]> {
  const lock = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: 5000,
    application_name: "nexusflow-migrate",
  });
  await lock.connect();
  try {
    await lock.query("SELECT pg_advisory_lock($1)", [MIGRATE_LOCK_KEY.toString()]);
    const pending = await pendingMigrations(url);
    if (pending.length === 0) return [];
    log.info({ migrations: pending }, "applying database migrations");
    // MikroORM's migrator (one transaction for all), loaded only now: migrator.ts.
    const { migrateDatabase } = await import("./migrator.js");
    const applied = await migrateDatabase(url, log);
    log.info({ migrations: applied }, "applied database migrations");
    return pending;
  } finally {
    await lock.end();
  }
}

/**
 * Raised by Scheduler.start() with MIGRATE_ON_START=false when the database lacks migrations this
 * build needs; `pending` names them and the message says what to run.
 */
export class SchemaNotCurrentError extends Error {
  override name = "SchemaNotCurrentError";
  /** A stable code for callers (never match the message). */
  readonly code = "SCHEMA_NOT_CURRENT";
  constructor(readonly pending: readonly string[]) {
    super(
      `the database schema is not current: ${pending.length} pending migration${pending.length === 1 ? "" : "s"} ` +
        `(${pending.join(", ")}); run the migrate step first (the image's \`migrate\` command) ` +
        "or set MIGRATE_ON_START=true to let this scheduler apply them",
    );
  }
}

/** Type guard for {@link SchemaNotCurrentError}. */
export function isSchemaNotCurrentError(e: unknown): e is SchemaNotCurrentError {
  return e instanceof SchemaNotCurrentError;
}
