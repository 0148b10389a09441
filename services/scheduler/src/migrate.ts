/**
 * `migrate`: the schema step of a deployment, run before schedulers start or roll (a one-shot
 * service in docker-compose.yml, a Job in Kubernetes). It applies the pending migrations while
 * holding a PostgreSQL advisory lock of its own, so several migrate runs never race on the schema
 * (a second one waits, then finds nothing to do), and exits. It does not take the scheduler's lock:
 * an upgrade migrates while the previous scheduler still runs.
 *
 *   migrate                 apply pending migrations, exit 0 (1 on failure, 2 on bad configuration)
 *   migrate --wait [SECS]   apply nothing: wait until every migration this build knows is applied
 *                           (a scheduler pod's init container, so it never starts on an old schema);
 *                           exit 1 after SECS (default 600)
 *
 * The scheduler itself still applies pending migrations at start (under its own lock), so a
 * single-process setup (`npm start`) needs no separate step.
 */
import { setTimeout as delay } from "node:timers/promises";
import { ConfigError, type Logger, createLogger, loadMigrateConfig } from "@nexusflow/common";
import pg from "pg";
import { openDatabase } from "./persistence/database.js";
import { migrationsList } from "./persistence/migrations/index.js";

/** Advisory lock key of `migrate` ("NFMIGRAT"), distinct from the scheduler's. */
export const MIGRATE_LOCK_KEY = 0x4e464d4947524154n;
/** The table where MikroORM records applied migrations (persistence/database.ts). */
const MIGRATIONS_TABLE = "nexusflow_migrations";

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
    return migrationsList.map((m) => m.name).filter((name) => !applied.has(name));
  } finally {
    await client.end();
  }
}

/** Applies pending migrations under the migrate lock; resolves with the names applied. */
export async function migrate(url: string, log: Logger): Promise<string[]> {
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
    // openDatabase applies what is pending (MikroORM's migrator, one transaction for all).
    const db = await openDatabase({ url, poolSize: 2, log });
    await db.close();
    return pending;
  } finally {
    await lock.end();
  }
}

/** Waits until no migration is pending; false when `timeoutMs` passes first. */
export async function waitForMigrations(url: string, timeoutMs: number, log: Logger): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let reported = "";
  for (;;) {
    let state: string;
    try {
      const pending = await pendingMigrations(url);
      if (pending.length === 0) return true;
      state = `waiting for migrations: ${pending.join(", ")}`;
    } catch (e) {
      state = `waiting for the database: ${e instanceof Error ? e.message : String(e)}`;
    }
    if (state !== reported) log.info(state);
    reported = state;
    if (Date.now() >= deadline) return false;
    await delay(Math.min(2000, Math.max(0, deadline - Date.now())));
  }
}

function usage(message: string): never {
  process.stderr.write(`nexusflow-migrate: ${message} (usage: migrate [--wait [SECONDS]])\n`);
  process.exit(2);
}

// Run as a program (the image's `migrate` command), not when imported.
if (process.argv[1] !== undefined && import.meta.filename === process.argv[1]) {
  const args = process.argv.slice(2);
  let waitSeconds: number | undefined;
  if (args[0] === "--wait") {
    waitSeconds = args[1] === undefined ? 600 : Number(args[1]);
    if (!Number.isInteger(waitSeconds) || waitSeconds <= 0 || args.length > 2)
      usage(`--wait takes a whole number of seconds, not ${JSON.stringify(args[1])}`);
  } else if (args.length > 0) usage(`unknown argument ${JSON.stringify(args[0])}`);
  let config;
  try {
    config = loadMigrateConfig();
  } catch (e) {
    if (e instanceof ConfigError) usage(e.message);
    throw e;
  }
  const log = createLogger("migrate", config.logLevel);
  try {
    if (waitSeconds !== undefined) {
      if (!(await waitForMigrations(config.databaseUrl, waitSeconds * 1000, log))) {
        process.stderr.write(`nexusflow-migrate: migrations still pending after ${waitSeconds} s\n`);
        process.exit(1);
      }
      log.info("the database schema is up to date");
    } else {
      const applied = await migrate(config.databaseUrl, log);
      log.info(
        { applied },
        applied.length === 0 ? "the database schema was up to date" : "migrations applied",
      );
    }
  } catch (e) {
    process.stderr.write(`nexusflow-migrate: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  }
}
