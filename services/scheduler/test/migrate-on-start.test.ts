/**
 * MIGRATE_ON_START against a real PostgreSQL. On (the default, `npm start`): the scheduler applies
 * the schema itself, under the same advisory lock as the `migrate` step, so a migrate step and a
 * scheduler started together never race. Off (compose and Kubernetes, where `migrate` runs first):
 * the scheduler changes nothing and refuses an old schema with an error naming the pending
 * migrations, and starts once the step has run. Also: with metrics off, HEALTH_PORT still serves
 * the scheduler's /healthz and /readyz.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { migrationsList } from "../src/persistence/migrations/index.js";
import { applyMigrations, pendingMigrations } from "../src/persistence/schema.js";
import { type Scheduler, SchemaNotCurrentError } from "../src/scheduler.js";
import { startTestDatabase, startTestScheduler, testLogger } from "./support.js";

const ALL = migrationsList.map((m) => m.name);

describe("MIGRATE_ON_START", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let admin: pg.Client;
  const running: Scheduler[] = [];

  /** A new, empty database on the test server; its URL. */
  async function freshDatabase(name: string): Promise<string> {
    await admin.query(`CREATE DATABASE ${name}`);
    const url = new URL(db.url);
    url.pathname = `/${name}`;
    return url.toString();
  }

  before(async () => {
    db = await startTestDatabase();
    admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
  });

  after(async () => {
    for (const s of running) await s.stop();
    await admin?.end();
    await db?.close();
  });

  it("off: refuses an unmigrated database naming every pending migration, changing nothing", async () => {
    const url = await freshDatabase("nf_off");
    await assert.rejects(startTestScheduler(url, { migrateOnStart: false }), (e: unknown) => {
      assert.ok(e instanceof SchemaNotCurrentError, String(e));
      assert.equal(e.code, "SCHEMA_NOT_CURRENT");
      assert.deepEqual(e.pending, ALL);
      for (const name of ALL) assert.ok(e.message.includes(name), e.message);
      assert.match(e.message, /run the migrate step first/);
      return true;
    });
    // Nothing was created, not even the migrations table.
    const tables = new pg.Client({ connectionString: url });
    await tables.connect();
    try {
      const { rows } = await tables.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = 'public'",
      );
      assert.equal(rows[0]?.n, 0);
    } finally {
      await tables.end();
    }

    // The migrate step runs: now the scheduler starts, and serves.
    assert.deepEqual(await applyMigrations(url, testLogger("migrate")), ALL);
    const scheduler = await startTestScheduler(url, { migrateOnStart: false });
    running.push(scheduler);
    assert.equal(scheduler.state, "RUNNING");
    assert.deepEqual(await pendingMigrations(url), []);
  });

  it("off: names only what is missing when the schema is one migration behind", async () => {
    const url = await freshDatabase("nf_behind");
    await applyMigrations(url, testLogger("migrate"));
    const last = ALL.at(-1);
    assert.ok(last !== undefined);
    // As if this build were one migration newer than the database's last migrate step.
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await client.query("DELETE FROM nexusflow_migrations WHERE name LIKE $1", [`${last}%`]);
    } finally {
      await client.end();
    }
    await assert.rejects(
      startTestScheduler(url, { migrateOnStart: false }),
      (e: unknown) => e instanceof SchemaNotCurrentError && e.pending.length === 1 && e.pending[0] === last,
    );
  });

  it("on (the default): a migrate step and a starting scheduler together apply the schema once", async () => {
    const url = await freshDatabase("nf_on");
    const log = testLogger("migrate");
    const [a, b, scheduler] = await Promise.all([
      applyMigrations(url, log),
      applyMigrations(url, log),
      startTestScheduler(url),
    ]);
    running.push(scheduler);
    assert.equal(scheduler.state, "RUNNING");
    // Whoever took the lock first applied everything; the others found nothing to do.
    assert.ok(
      (a.length === ALL.length && b.length === 0) ||
        (a.length === 0 && b.length === ALL.length) ||
        (a.length === 0 && b.length === 0),
      `${a.length} and ${b.length}`,
    );
    assert.deepEqual(await pendingMigrations(url), []);
    await scheduler.stop();
  });

  it("with metrics off, a probe port of its own (HEALTH_PORT) serves /healthz and /readyz", async () => {
    const url = await freshDatabase("nf_probes");
    const scheduler = await startTestScheduler(url, {
      metricsEndpoint: undefined,
      probesEndpoint: { host: "127.0.0.1", port: 0, onMetricsPort: false },
    });
    running.push(scheduler);
    assert.equal(scheduler.metricsUrl, undefined);
    const base = scheduler.probesUrl;
    assert.ok(base !== undefined);
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    const ready = await fetch(`${base}/readyz`);
    assert.deepEqual([ready.status, (await ready.text()).trim()], [200, "ready"]);
    assert.equal((await fetch(`${base}/metrics`)).status, 404);
    await scheduler.stop();
    await assert.rejects(fetch(`${base}/healthz`));
  });
});
