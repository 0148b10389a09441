/**
 * Opens the scheduler's database: MikroORM (entities, migrations applied at start-up), a `pg`
 * pool for plain SQL and a small one for the batch writer. All connect to the same PostgreSQL.
 */
import { MikroORM, PostgreSqlDriver } from "@mikro-orm/postgresql";
import { Migrator } from "@mikro-orm/migrations";
import pg from "pg";
import type { Logger } from "@nexusflow/common";
import { codeConnectionErrors } from "./connection-errors.js";
import { entities } from "./entities.js";
import { migrationsList } from "./migrations/index.js";

/** The scheduler's connection to PostgreSQL. */
export interface Database {
  /** The ORM, for queries of the API. */
  readonly orm: MikroORM;
  /** A pool for plain SQL on the hot path. */
  readonly pool: pg.Pool;
  /** The batch writer's connections (sequential scans disabled; see openDatabase). */
  readonly writerPool: pg.Pool;
  /** Closes the ORM and both pools. */
  close(): Promise<void>;
}

/** Options of {@link openDatabase}. */
export interface DatabaseOptions {
  /** PostgreSQL URL. */
  url: string;
  /** Connections of the pg pool. @default 10 */
  poolSize?: number;
  /**
   * Apply pending migrations on opening. False when the caller applied them (under the migrate
   * lock, schema.ts) or checked that none is pending. @default true
   */
  migrate?: boolean;
  /** Logger. */
  log: Logger;
}

// int8 columns (fencing tokens, sequences) fit in a double for any realistic value; read them as numbers.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

/** `{ host }` when the URL selects a Unix socket directory with `?host=/dir`, else nothing. */
function socketHost(url: string): { host?: string } {
  const host = new URL(url).searchParams.get("host");
  return host !== null && host.startsWith("/") ? { host } : {};
}

/** Connects, applies pending migrations (unless `migrate` is false), and returns the database handles. */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  const orm = await MikroORM.init({
    driver: PostgreSqlDriver,
    clientUrl: options.url,
    entities,
    extensions: [Migrator],
    migrations: {
      migrationsList,
      tableName: "nexusflow_migrations",
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
      ...socketHost(options.url),
      onPoolCreated: (pool: pg.Pool) => codeConnectionErrors(pool),
    },
    allowGlobalContext: false,
    debug: false,
    logger: (message) => options.log.debug({ orm: message }, "mikro-orm"),
  });
  try {
    const applied = options.migrate === false ? [] : await orm.migrator.up();
    if (applied.length > 0)
      options.log.info({ migrations: applied.map((m) => m.name) }, "applied database migrations");
  } catch (e) {
    await orm.close(true);
    throw e;
  }
  const newPool = (max: number, session?: string): pg.Pool => {
    // Fail fast while the database is down: callers answer UNAVAILABLE instead of hanging.
    const p = new pg.Pool({
      connectionString: options.url,
      max,
      connectionTimeoutMillis: 3000,
      // Runs on every new connection before the pool hands it out; pg-pool awaits the promise and
      // a failure fails that checkout (@types/pg types the hook as returning void).
      // eslint-disable-next-line @typescript-eslint/no-misused-promises
      onConnect: async (client) => {
        // A connection lost while idle or checked out (database restart) emits 'error' on its client
        // (pg-pool drops its own listener while a client is checked out): log it, never crash.
        client.on("error", (e: Error) => options.log.warn({ error: e.message }, "database connection lost"));
        // Session settings as statements, not the `options` startup parameter, which an `options`
        // in DATABASE_URL would replace.
        if (session !== undefined) await client.query(session);
      },
    });
    // The pool re-emits an idle client's error; the client listener above already logged it, but
    // an 'error' event without a listener would crash the process.
    p.on("error", () => undefined);
    codeConnectionErrors(p);
    return p;
  };
  const pool = newPool(options.poolSize ?? 10);
  // The batch writer runs each shape of batch as a prepared statement whose UPDATEs find rows by
  // primary key (`id = ANY($ids)`). A plan made while a table was small (a new database) prices
  // that as a scan of a few pages and stays cached as the table grows, so every commit scanned
  // whole tables (2 ms per table at 8,000 rows in the benchmark). The writer's connections never
  // scan; nothing it runs needs to. With scans ruled out, the generic plan of each shape is right
  // for any batch, so it is planned once per connection instead of on every commit (a custom plan
  // of the multi-CTE statement cost ~0.1-0.3 ms of PostgreSQL per commit).
  const writerPool = newPool(2, "SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan");
  return {
    orm,
    pool,
    writerPool,
    async close() {
      await writerPool.end();
      await pool.end();
      await orm.close(true);
    },
  };
}
