/**
 * Upgrading to the idempotency key table (Migration20261205000000IdempotencyKeys) on a database
 * with keyed runs: every key is carried over, scoped by its run's workflow, without a hash (the
 * scheduler computes it from the run when the key is next used), and a key may then name runs of
 * two workflows.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { openDatabase, type Database } from "../src/persistence/database.js";
import { openMigrationOrm } from "../src/persistence/migrator.js";
import { migrationsList } from "../src/persistence/migrations/index.js";
import { startTestDatabase, testLogger } from "./support.js";

describe("migration IdempotencyKeys", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let db: Database;
  let orm: Awaited<ReturnType<typeof openMigrationOrm>>;

  before(async () => {
    server = await startTestDatabase();
    db = await openDatabase({ url: server.url, log: testLogger("db") });
    orm = await openMigrationOrm(server.url, testLogger("db"));
  });

  after(async () => {
    await orm?.close(true);
    await db?.close();
    await server?.close();
  });

  it("carries existing keys over and lets a key name runs of two workflows", async () => {
    await db.pool.query("CREATE DATABASE nf_idempotency_upgrade");
    const url = new URL(server.url);
    url.pathname = "/nf_idempotency_upgrade";
    const client = new pg.Client({ connectionString: url.toString() });
    await client.connect();
    try {
      const driver = orm.em.getDriver();
      const sql = (m: (typeof migrationsList)[number]): string[] => {
        const migration = new m.class(driver, orm.config);
        migration.up();
        return migration.getQueries().map(String);
      };
      const index = migrationsList.findIndex((m) => m.name === "Migration20261205000000IdempotencyKeys");
      assert.ok(index > 0);
      for (const m of migrationsList.slice(0, index)) for (const q of sql(m)) await client.query(q);
      const def = await client.query<{ id: string }>(
        `INSERT INTO workflow_definitions (name, version, spec, content_hash) VALUES ('a', 1, '{}', 'h'), ('b', 1, '{}', 'h') RETURNING id`,
      );
      const [a, b] = def.rows.map((r) => r.id);
      const keyed = randomUUID();
      const plain = randomUUID();
      const createdAt = new Date("2026-11-30T10:00:00.123Z");
      await client.query(
        `INSERT INTO workflow_runs (id, definition_id, workflow_name, workflow_version, status, idempotency_key, created_at)
         VALUES ($1, $2, 'a', 1, 'SUCCEEDED', 'k1', $4), ($3, $2, 'a', 1, 'SUCCEEDED', NULL, $4)`,
        [keyed, a, plain, createdAt],
      );
      for (const q of sql(migrationsList[index] as (typeof migrationsList)[number])) await client.query(q);

      const { rows } = await client.query(
        "SELECT workflow_name, idempotency_key, run_id, request_hash, created_at FROM idempotency_keys",
      );
      assert.deepEqual(rows, [
        {
          workflow_name: "a",
          idempotency_key: "k1",
          run_id: keyed,
          request_hash: null,
          created_at: createdAt,
        },
      ]);
      // The global unique constraint is gone: workflow b may use k1 too.
      await client.query(
        `INSERT INTO workflow_runs (id, definition_id, workflow_name, workflow_version, status, idempotency_key)
         VALUES ($1, $2, 'b', 1, 'RUNNING', 'k1')`,
        [randomUUID(), b],
      );
    } finally {
      await client.end();
      await db.pool.query("DROP DATABASE nf_idempotency_upgrade");
    }
  });
});
