/**
 * Opens the scheduler's database: MikroORM (entities, migrations applied at start-up) and a `pg`
 * pool for the batch writer's plain SQL. Both connect to the same PostgreSQL.
 */
import { MikroORM, PostgreSqlDriver } from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import pg from "pg";
import type { Logger } from "@nexusflow/common";
import { entities } from "./entities.js";
import { migrationsList } from "./migrations/index.js";

/** The scheduler's connection to PostgreSQL. */
export interface Database {
  /** The ORM, for queries of the API. */
  readonly orm: MikroORM;
  /** A pool for plain SQL on the hot path. */
  readonly pool: pg.Pool;
  /** Closes both. */
  close(): Promise<void>;
}

/** Options of {@link openDatabase}. */
export interface DatabaseOptions {
  /** PostgreSQL URL. */
  url: string;
  /** Connections of the pg pool. @default 10 */
  poolSize?: number;
  /** Logger. */
  log: Logger;
}

// int8 columns (fencing tokens, sequences) fit in a double for any realistic value; read them as numbers.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

/** Connects, applies pending migrations, and returns the database handles. */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  const orm = await MikroORM.init({
    driver: PostgreSqlDriver,
    clientUrl: options.url,
    entities,
    extensions: [Migrator],
    discovery: { disableDynamicFileAccess: true },
    migrations: {
      migrationsList,
      tableName: "nexusflow_migrations",
      transactional: true,
      allOrNothing: true,
      snapshot: false,
    },
    pool: { min: 0, max: 4, acquireTimeoutMillis: 3000 },
    driverOptions: { connection: { connectionTimeoutMillis: 3000 } },
    allowGlobalContext: false,
    debug: false,
    logger: (message) => options.log.debug({ orm: message }, "mikro-orm"),
  });
  try {
    const applied = await orm.getMigrator().up();
    if (applied.length > 0)
      options.log.info({ migrations: applied.map((m) => m.name) }, "applied database migrations");
  } catch (e) {
    await orm.close(true);
    throw e;
  }
  // Fail fast while the database is down: callers answer UNAVAILABLE instead of hanging.
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolSize ?? 10,
    connectionTimeoutMillis: 3000,
  });
  // A connection lost while idle or checked out (database restart) emits 'error' on its client
  // (pg-pool drops its own listener while a client is checked out): log it, never crash.
  pool.on("connect", (client) => {
    client.on("error", (e: Error) => options.log.warn({ error: e.message }, "database connection lost"));
  });
  // The pool re-emits an idle client's error; the client listener above already logged it, but
  // an 'error' event without a listener would crash the process.
  pool.on("error", () => undefined);
  return {
    orm,
    pool,
    async close() {
      await pool.end();
      await orm.close(true);
    },
  };
}
