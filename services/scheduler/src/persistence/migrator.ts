/**
 * MikroORM, for applying the committed migrations (./migrations) and nothing else: every query of
 * the scheduler is plain SQL over `pg`. database.ts imports this module only when it applies
 * migrations, so a scheduler that applies none (MIGRATE_ON_START=false, or nothing pending) never
 * loads MikroORM: ~8.5 MiB of V8 heap and ~12 MiB of RSS, measured on the compiled scheduler.
 */
import { MikroORM, PostgreSqlDriver } from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import type pg from "pg";
import type { Logger } from "@nexusflow/common";
import { codeConnectionErrors } from "./connection-errors.js";
import { entities } from "./entities.js";
import { migrationsList } from "./migrations/index.js";
import { MIGRATIONS_TABLE } from "./migrations/names.js";

/** `{ host }` when the URL selects a Unix socket directory with `?host=/dir`, else nothing. */
function socketHost(url: string): { host?: string } {
  const host = new URL(url).searchParams.get("host");
  return host !== null && host.startsWith("/") ? { host } : {};
}

/** Opens MikroORM on `url` with the scheduler's entities and migrations; the caller closes it. */
export async function openMigrationOrm(url: string, log: Logger): Promise<MikroORM> {
  return MikroORM.init({
    driver: PostgreSqlDriver,
    clientUrl: url,
    entities,
    extensions: [Migrator],
    migrations: {
      migrationsList,
      tableName: MIGRATIONS_TABLE,
      transactional: true,
      allOrNothing: true,
      snapshot: false,
    },
    pool: { min: 0, max: 4 },
    // Overrides of the `pg` pool's options. MikroORM reads host and port from the URL itself; a
    // Unix socket chosen with `?host=/dir` (as the embedded default's localUrl does) reaches it
    // only through them. Fail fast while the database is down, and give the pool's connection
    // failures their codes (onPoolCreated), as the other pools do.
    driverOptions: {
      connectionTimeoutMillis: 3000,
      ...socketHost(url),
      onPoolCreated: (pool: pg.Pool) => codeConnectionErrors(pool),
    },
    allowGlobalContext: false,
    debug: false,
    logger: (message) => log.debug({ orm: message }, "mikro-orm"),
  });
}

/** Applies the migrations `url`'s database lacks (one transaction for all); resolves with their names. */
export async function migrateDatabase(url: string, log: Logger): Promise<string[]> {
  const orm = await openMigrationOrm(url, log);
  try {
    const applied = await orm.migrator.up();
    return applied.map((m) => m.name);
  } finally {
    await orm.close(true);
  }
}
