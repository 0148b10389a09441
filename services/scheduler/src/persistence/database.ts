/**
 * Opens the scheduler's database: `pg` pools for plain SQL (the hot path, the API's reads, the
 * batch writer), all on the same PostgreSQL. Migrations, when asked for, are applied through
 * MikroORM (migrator.ts), imported only then.
 */
import pg from "pg";
import type { Logger } from "@nexusflow/common";
import { codeConnectionErrors } from "./connection-errors.js";

/** The scheduler's connection to PostgreSQL. */
export interface Database {
  /** A pool for plain SQL on the hot path. */
  readonly pool: pg.Pool;
  /**
   * The API's reads (GetRun, ListRuns, definitions): a pool of their own, so that a burst of reads
   * neither waits behind the hot path's connections nor takes them.
   */
  readonly readPool: pg.Pool;
  /** The batch writer's connections (sequential scans disabled; see openDatabase). */
  readonly writerPool: pg.Pool;
  /** Closes the pools. */
  close(): Promise<void>;
}

/** Options of {@link openDatabase}. */
export interface DatabaseOptions {
  /** PostgreSQL URL. */
  url: string;
  /** Connections of the pg pool. @default 10 */
  poolSize?: number;
  /**
   * Connections of the read pool (GetRun, ListRuns, definitions), so that API reads never wait
   * behind the engine's statements. @default 4
   */
  readPoolSize?: number;
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

/** Connects, applies pending migrations (unless `migrate` is false), and returns the database handles. */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  if (options.migrate !== false) {
    const { migrateDatabase } = await import("./migrator.js");
    const applied = await migrateDatabase(options.url, options.log);
    if (applied.length > 0) options.log.info({ migrations: applied }, "applied database migrations");
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
  const readPool = newPool(options.readPoolSize ?? 4);
  // The batch writer runs each shape of batch as a prepared statement whose UPDATEs find rows by
  // primary key (`id = ANY($ids)`). A plan made while a table was small (a new database) prices
  // that as a scan of a few pages and stays cached as the table grows, so every commit scanned
  // whole tables (2 ms per table at 8,000 rows in the benchmark). The writer's connections never
  // scan; nothing it runs needs to. With scans ruled out, the generic plan of each shape is right
  // for any batch, so it is planned once per connection instead of on every commit (a custom plan
  // of the multi-CTE statement cost ~0.1-0.3 ms of PostgreSQL per commit).
  const writerPool = newPool(2, "SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan");
  return {
    pool,
    readPool,
    writerPool,
    async close() {
      await writerPool.end();
      await readPool.end();
      await pool.end();
    },
  };
}
