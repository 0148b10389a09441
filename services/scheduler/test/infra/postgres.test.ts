import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { chmod, lstat, mkdir, mkdtemp, readlink, rm, stat } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import pg from "pg";
import { createLogger } from "@nexusflow/common";
import { LifecycleEventSchema, type LifecycleEvent } from "@nexusflow/gen";
import { splitEventBatch } from "../../src/persistence/outbox.js";
import { openDatabase, type Database } from "../../src/persistence/database.js";
import { openMigrationOrm } from "../../src/persistence/migrator.js";
import { startEmbeddedPostgres, type EmbeddedDatabase } from "../../src/persistence/embedded-postgres.js";
import { migrationsList } from "../../src/persistence/migrations/index.js";

describe("embedded PostgreSQL with migrations", () => {
  const log = createLogger("test", "warn");
  let dir: string;
  let server: EmbeddedDatabase;
  let db: Database;
  let orm: Awaited<ReturnType<typeof openMigrationOrm>>;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-pg-"));
    // A shared parent like /tmp: sticky and world-writable. Starting must not narrow it.
    await chmod(dir, 0o1777);
    server = await startEmbeddedPostgres({ dir: join(dir, "pg"), log });
    db = await openDatabase({ url: server.url, log });
    orm = await openMigrationOrm(server.url, log);
  });
  after(async () => {
    await orm?.close(true);
    await db?.close();
    await server?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it("leaves the permissions of the data directory's parent as they were", async () => {
    assert.equal((await stat(dir)).mode & 0o7777, 0o1777);
    assert.equal(server.dataDir, join(dir, "pg"));
  });

  it("serves local clients over a Unix socket in its data directory, and TCP on 127.0.0.1", async () => {
    const address = async (url: string): Promise<string | null> => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        const { rows } = await client.query<{ addr: string | null }>(
          "SELECT inet_server_addr()::text AS addr",
        );
        return rows[0]?.addr ?? null;
      } finally {
        await client.end();
      }
    };
    assert.notEqual(server.localUrl, server.url);
    // A Unix-socket connection has no server address.
    assert.equal(await address(server.localUrl), null);
    assert.equal(await address(server.url), "127.0.0.1/32");
    // The scheduler's pools and the migrator's ORM connect through it.
    const local = await openDatabase({ url: server.localUrl, log, poolSize: 1 });
    const localOrm = await openMigrationOrm(server.localUrl, log);
    try {
      for (const pool of [local.pool, local.readPool]) {
        const { rows } = await pool.query<{ addr: string | null }>("SELECT inet_server_addr()::text AS addr");
        assert.equal(rows[0]?.addr, null);
      }
      const orm = await localOrm.em
        .fork()
        .getConnection()
        .execute<{ addr: string | null }[]>("SELECT inet_server_addr()::text AS addr");
      assert.equal(orm[0]?.addr, null);
    } finally {
      await localOrm.close(true);
      await local.close();
    }
  });

  it("falls back to TCP for local clients when the socket's path would be too long", async () => {
    const long = join(dir, "d".repeat(90), "pg");
    const other = await startEmbeddedPostgres({ dir: long, log });
    try {
      assert.equal(other.localUrl, other.url);
      const client = new pg.Client({ connectionString: other.localUrl });
      await client.connect();
      await client.end();
    } finally {
      await other.destroy();
    }
  });

  it("runs a real PostgreSQL with the schema applied", async () => {
    const version = await db.pool.query<{ server_version_num: string }>("SHOW server_version_num");
    assert.ok(Number(version.rows[0]?.server_version_num) >= 150000);
    const tables = await db.pool.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    );
    assert.deepEqual(
      tables.rows.map((r) => r.table_name),
      [
        "cluster_settings",
        "event_matches",
        "event_wait_matches",
        "events",
        "idempotency_keys",
        "nexusflow_migrations",
        "outbox_events",
        "parked_event_waits",
        "parked_runs",
        "partitions",
        "rate_limit_buckets",
        "rate_limit_grants",
        "replicas",
        "schedule_fires",
        "schedules",
        "task_attempt_history",
        "task_attempts",
        "task_runs",
        "workflow_definitions",
        "workflow_runs",
      ],
    );
  });

  it("turns one-event outbox rows into batches of one when upgrading to one row per run and commit", async () => {
    // The schema before Migration20261126020000OutboxRunBatches, in a database of its own.
    await db.pool.query("CREATE DATABASE nf_outbox_upgrade");
    const url = new URL(server.url);
    url.pathname = "/nf_outbox_upgrade";
    const client = new pg.Client({ connectionString: url.toString() });
    await client.connect();
    try {
      const driver = orm.em.getDriver();
      const sql = (m: (typeof migrationsList)[number]): string[] => {
        const migration = new m.class(driver, orm.config);
        migration.up();
        return migration.getQueries().map(String);
      };
      const [initial, hot, batches] = migrationsList.slice(0, 3) as [
        (typeof migrationsList)[number],
        (typeof migrationsList)[number],
        (typeof migrationsList)[number],
      ];
      assert.equal(batches.name, "Migration20261126020000OutboxRunBatches");
      for (const q of [...sql(initial), ...sql(hot)]) await client.query(q);
      // Events of 100, 300 and 20,000 bytes: length prefixes of one, two and three bytes.
      const runId = randomUUID();
      const events = [100, 300, 20_000].map((size, i) =>
        create(LifecycleEventSchema, {
          eventId: randomUUID(),
          runId,
          sequence: BigInt(i + 1),
          workflowName: "w".repeat(size),
          event: { case: "runCompleted", value: {} },
        }),
      );
      for (const e of events)
        await client.query(
          `INSERT INTO outbox_events (event_id, run_id, sequence, type, payload) VALUES ($1, $2, $3, 'runCompleted', $4)`,
          [e.eventId, runId, Number(e.sequence), Buffer.from(toBinary(LifecycleEventSchema, e))],
        );
      for (const q of sql(batches)) await client.query(q);
      const { rows } = await client.query<{ first_sequence: number; last_sequence: number; payload: Buffer }>(
        "SELECT first_sequence, last_sequence, payload FROM outbox_events ORDER BY id",
      );
      assert.deepEqual(
        rows.map((r) => [r.first_sequence, r.last_sequence]),
        [
          [1, 1],
          [2, 2],
          [3, 3],
        ],
      );
      for (const [i, r] of rows.entries()) {
        const [alone, ...rest] = splitEventBatch(r.payload);
        assert.equal(rest.length, 0);
        assert.deepEqual(
          Buffer.from(alone as Uint8Array),
          Buffer.from(toBinary(LifecycleEventSchema, events[i] as LifecycleEvent)),
        );
      }
    } finally {
      await client.end();
      await db.pool.query("DROP DATABASE nf_outbox_upgrade");
    }
  });

  it("enforces immutability keys and keeps the ORM schema in sync with the migrations", async () => {
    await db.pool.query(
      `INSERT INTO workflow_definitions (name, version, spec, content_hash) VALUES ('a', 1, '{}', 'h')`,
    );
    await assert.rejects(
      db.pool.query(
        `INSERT INTO workflow_definitions (name, version, spec, content_hash) VALUES ('a', 1, '{}', 'h2')`,
      ),
      /workflow_definitions_name_version_uq/,
    );
    const diff = await orm.schema.getUpdateSchemaSQL({ wrap: false, safe: true });
    // Only the hand-written extras (FKs, partial and GIN indexes) may differ; no missing columns or tables.
    assert.doesNotMatch(diff, /create table|add column|alter column/i, diff);
  });

  it("lets the batch writer find rows by primary key in a table that grew after its plans were made", async () => {
    // The writer runs each shape of batch as a prepared statement. A plan made while the table was
    // tiny (a new database) prices `id = ANY($ids)` as a scan of a few pages and stays cached as
    // the table grows, so every later commit scans the whole table. The batch writer's
    // connections must plan primary-key lookups instead.
    const def = await db.pool.query<{ id: string }>(
      `INSERT INTO workflow_definitions (name, version, spec, content_hash) VALUES ('grown', 1, '{}', 'h') RETURNING id`,
    );
    const insertRuns = (n: number) =>
      db.pool.query(
        `INSERT INTO workflow_runs (id, definition_id, workflow_name, workflow_version, status)
         SELECT gen_random_uuid(), $1, 'grown', 1, 'RUNNING' FROM generate_series(1, $2::int)`,
        [def.rows[0]?.id, n],
      );
    await insertRuns(3);
    await db.pool.query("ANALYZE workflow_runs");
    const normal = await db.pool.connect();
    const writer = await db.writerPool.connect();
    try {
      const prepare = async (client: pg.PoolClient): Promise<void> => {
        await client.query(
          `PREPARE grown_update(jsonb, uuid[]) AS UPDATE workflow_runs AS r SET status = x.status
           FROM jsonb_to_recordset($1::jsonb) AS x(id uuid, status text)
           WHERE r.id = x.id AND r.id = ANY($2::uuid[])`,
        );
        // Past the first five executions, PostgreSQL settles on a generic plan and caches it.
        for (let i = 0; i < 6; i++) await client.query(`EXECUTE grown_update('[]', '{}')`);
      };
      await prepare(normal);
      await prepare(writer);
      await insertRuns(20_000);
      const plan = async (client: pg.PoolClient): Promise<string> => {
        const { rows } = await client.query<{ "QUERY PLAN": string }>(
          `EXPLAIN EXECUTE grown_update('[]', '{}')`,
        );
        return rows.map((r) => r["QUERY PLAN"]).join("\n");
      };
      assert.match(
        await plan(normal),
        /Seq Scan on workflow_runs/,
        "a normal connection keeps the stale plan",
      );
      const writerPlan = await plan(writer);
      assert.doesNotMatch(writerPlan, /Seq Scan/);
      assert.match(writerPlan, /workflow_runs_pkey/);
      // Planned once: the writer's connections always use the generic plan of a prepared shape.
      const mode = await writer.query<{ plan_cache_mode: string }>("SHOW plan_cache_mode");
      assert.equal(mode.rows[0]?.plan_cache_mode, "force_generic_plan");
    } finally {
      normal.release(true);
      writer.release(true);
      await db.pool.query("DELETE FROM workflow_runs WHERE workflow_name = 'grown'");
      await db.pool.query("DELETE FROM workflow_definitions WHERE name = 'grown'");
    }
  });

  it("keeps the batch writer's session settings when DATABASE_URL sets options of its own", async () => {
    const url = new URL(server.url);
    url.searchParams.set("options", "-c work_mem=8MB");
    const other = await openDatabase({ url: url.toString(), log });
    try {
      const show = async (p: pg.Pool, name: string): Promise<string | undefined> =>
        (await p.query<Record<string, string>>(`SHOW ${name}`)).rows[0]?.[name];
      assert.equal(await show(other.writerPool, "enable_seqscan"), "off");
      assert.equal(await show(other.writerPool, "plan_cache_mode"), "force_generic_plan");
      assert.equal(await show(other.writerPool, "work_mem"), "8MB");
      // Only the writer's connections: the other pool plans as configured.
      assert.equal(await show(other.pool, "enable_seqscan"), "on");
      assert.equal(await show(other.pool, "work_mem"), "8MB");
    } finally {
      await other.close();
    }
  });

  it("reopens an existing data directory and skips applied migrations", async () => {
    const second = await openDatabase({ url: server.url, log });
    const rows = await second.pool.query("SELECT name FROM nexusflow_migrations");
    assert.equal(rows.rowCount, migrationsList.length);
    await second.close();
  });
});

describe(
  "embedded PostgreSQL in a directory the postgres user cannot enter",
  { skip: userInfo().uid !== 0 && "only root runs PostgreSQL as another user" },
  () => {
    const log = createLogger("test", "warn");
    let home: string;
    let shared: string;

    before(async () => {
      // A checkout under /root or in a `mktemp -d` folder: mode 700, owned by root.
      home = await mkdtemp(join(tmpdir(), "nf-closed-"));
      await chmod(home, 0o700);
      shared = await mkdtemp(join(tmpdir(), "nf-shared-"));
      await chmod(shared, 0o755);
    });
    after(async () => {
      await rm(home, { recursive: true, force: true });
      await rm(shared, { recursive: true, force: true });
    });

    it("starts, keeps the data across restarts, and never opens the user's directory", async () => {
      const dir = join(home, "checkout", ".nexusflow", "postgres");
      const first = await startEmbeddedPostgres({ dir, log, sharedDir: join(shared, "pg") });
      try {
        assert.equal((await stat(home)).mode & 0o7777, 0o700, "the closed parent stays closed");
        assert.notEqual(first.dataDir, dir);
        assert.ok(first.dataDir.startsWith(join(shared, "pg", "data")));
        assert.equal((await lstat(dir)).isSymbolicLink(), true);
        assert.equal(resolve(dirname(dir), await readlink(dir)), first.dataDir);
        const db = await openDatabase({ url: first.localUrl, log });
        await db.pool.query("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)");
        await db.close();
      } finally {
        await first.stop();
      }
      // Started again from the same path: the same cluster, found through the link.
      const second = await startEmbeddedPostgres({ dir, log, sharedDir: join(shared, "pg") });
      try {
        assert.equal(second.dataDir, first.dataDir);
        const client = new pg.Client({ connectionString: second.url });
        await client.connect();
        const { rows } = await client.query<{ v: number }>("SELECT v FROM kept");
        await client.end();
        assert.deepEqual(rows, [{ v: 42 }]);
      } finally {
        await second.destroy();
      }
      await assert.rejects(stat(first.dataDir), { code: "ENOENT" });
      await assert.rejects(lstat(dir), { code: "ENOENT" });
    });

    it("deletes a relocated cluster whose link was removed, and does not reuse it", async () => {
      const dir = join(home, "scratch", "pg");
      const sharedDir = join(shared, "pg");
      const first = await startEmbeddedPostgres({ dir, log, sharedDir });
      const firstUrl = first.url;
      await first.stop();
      const client = async (url: string): Promise<pg.Client> => {
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        return c;
      };
      // The owner deletes its folder (the link); the cluster's files are left in the shared directory.
      await rm(join(home, "scratch"), { recursive: true, force: true });
      assert.ok((await stat(first.dataDir)).isDirectory());
      // Another cluster's start sweeps it.
      const other = await startEmbeddedPostgres({
        dir: join(home, "other-pg") /* its parent itself is closed */,
        log,
        sharedDir,
      });
      try {
        await assert.rejects(stat(first.dataDir), { code: "ENOENT" });
        // Starting at the first path again makes a fresh cluster (no table from before).
        const again = await startEmbeddedPostgres({ dir, log, sharedDir });
        try {
          const c = await client(again.url);
          const { rows } = await c.query("SELECT 1 FROM pg_tables WHERE tablename = 'kept'");
          await c.end();
          assert.equal(rows.length, 0);
          assert.notEqual(again.url, firstUrl);
        } finally {
          await again.destroy();
        }
      } finally {
        await other.destroy();
      }
    });

    it("refuses a shared directory that others can write, in one line", async () => {
      const open = join(shared, "open");
      await mkdir(open, { mode: 0o777 });
      await chmod(open, 0o777);
      await assert.rejects(
        startEmbeddedPostgres({ dir: join(home, "refused", "pg"), log, sharedDir: open }),
        (e: Error) =>
          e.name === "EmbeddedPostgresError" &&
          /writable by root only/.test(e.message) &&
          !e.message.includes("\n"),
      );
    });
  },
);
