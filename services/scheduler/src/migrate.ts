/**
 * `migrate`: the schema step of a deployment, run before schedulers start or roll (a one-shot
 * service in docker-compose.yml, the scheduler pod's init container in Kubernetes). It applies the
 * pending migrations while holding a PostgreSQL advisory lock of its own, so several migrate runs
 * (and schedulers migrating at start) never race on the schema: a second one waits, then finds
 * nothing to do. It does not take the scheduler's lock, so it can run while the previous scheduler
 * still serves.
 *
 *   migrate                 apply pending migrations, exit 0 (1 on failure, 2 on bad configuration)
 *   migrate --wait [SECS]   apply nothing: wait until every migration this build knows is applied
 *                           (for an init container that should wait for a migrate step run
 *                           elsewhere); exit 1 after SECS (default 600)
 *
 * By default (MIGRATE_ON_START=true) the scheduler also applies pending migrations at start, under
 * the same lock, so a single-process setup (`npm start`) needs no separate step. Deployments that
 * run this step set MIGRATE_ON_START=false on the scheduler: it then applies nothing and refuses to
 * start on a schema with pending migrations, naming them. It fails rather than waits, so a
 * forgotten step shows at once; the orchestrator's restart is the retry.
 */
import { setTimeout as delay } from "node:timers/promises";
import { ConfigError, type Logger, createLogger, loadMigrateConfig } from "@nexusflow/common";
import { applyMigrations, pendingMigrations } from "./persistence/schema.js";

export { MIGRATE_LOCK_KEY, pendingMigrations } from "./persistence/schema.js";

/** Applies pending migrations under the migrate lock; resolves with the names applied. */
export const migrate = applyMigrations;

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
