/**
 * Rate limit grants in PostgreSQL (issue #27): the two parts of a split batch write a shared
 * bucket's grant into rows of their own shard (rate_limit_grants), so one part's open transaction
 * never holds up the other's commit; recovery reads each bucket's highest seq across the shards and
 * the legacy rate_limit_buckets row, with the pause that row holds; the purge deletes the rows of
 * buckets full again.
 */
import assert from "node:assert/strict";
import pg from "pg";
import { after, before, describe, it } from "node:test";
import type { RunState } from "../src/model/run-state.js";
import { BatchWriter } from "../src/persistence/batch-writer.js";
import { openDatabase, type Database } from "../src/persistence/database.js";
import { PostgresEngineStore } from "../src/persistence/postgres-engine-store.js";
import { RateLimitPurge, SKEW_MS } from "../src/persistence/rate-limit-purge.js";
import { markQueuedRun, startTestDatabase, testLogger, waitFor } from "./support.js";

/** Advisory locks of the parallel-commit test. */
const HELD = 727274;
const GATE = 727275;

describe("rate limit grants (PostgreSQL)", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let db: Database;
  let definitionId: number;

  before(async () => {
    server = await startTestDatabase();
    db = await openDatabase({ url: server.url, log: testLogger("db") });
    const { rows } = await db.pool.query<{ id: number }>(
      `INSERT INTO workflow_definitions (name, version, spec, content_hash) VALUES ('grants', 1, '{}', 'h') RETURNING id`,
    );
    definitionId = Number(rows[0]?.id);
  });
  after(async () => {
    await db?.close();
    await server?.close();
  });

  /** A new run whose one task took a token of bucket `bucket` at grant `seq`, marked on `writer`. */
  const markGrant = (
    writer: BatchWriter,
    name: (runId: string) => string,
    bucket: string,
    seq: number,
  ): RunState =>
    markQueuedRun(writer, definitionId, name, {
      prepare: (task) => {
        task.rateTaken = [
          {
            id: `${bucket}\u0000k`,
            name: bucket,
            key: "k",
            tokens: 1000 - seq,
            refilledAt: 1_000_000 + seq,
            seq,
            fullAt: 2_000_000 + seq,
          },
        ];
      },
    });

  const grantRows = async (bucket: string) =>
    (
      await db.pool.query<{ shard: number; tokens: number; seq: string }>(
        `SELECT shard, tokens, seq FROM rate_limit_grants WHERE name = $1 ORDER BY shard`,
        [bucket],
      )
    ).rows.map((r) => ({ shard: r.shard, tokens: r.tokens, seq: Number(r.seq) }));

  it("commits one part of a split batch while the other, granting from the same bucket, has not committed", async () => {
    // Runs named 'held' (ids ending in an odd hex digit: one part) wait at their commit until the
    // test releases advisory lock HELD: that part's transaction stays open with all its rows (its
    // grant included) written. The other part's run rows, written before its grant, wait for lock
    // GATE, released once the held part waits at its commit: its grant comes second.
    await db.pool.query(`CREATE FUNCTION grants_held() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_advisory_xact_lock(${HELD}); RETURN NULL; END $$`);
    await db.pool.query(`CREATE CONSTRAINT TRIGGER grants_held AFTER INSERT ON workflow_runs
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.workflow_name = 'held') EXECUTE FUNCTION grants_held()`);
    await db.pool.query(`CREATE FUNCTION grants_gate() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_advisory_xact_lock_shared(${GATE}); RETURN NEW; END $$`);
    await db.pool.query(`CREATE TRIGGER grants_gate BEFORE INSERT ON workflow_runs
      FOR EACH ROW WHEN (NEW.workflow_name = 'gated') EXECUTE FUNCTION grants_gate()`);
    const lock = new pg.Client({ connectionString: server.url });
    await lock.connect();
    await lock.query(`SELECT pg_advisory_lock(${HELD}), pg_advisory_lock(${GATE})`);
    let locked = [HELD, GATE];
    /** Whether a backend waits for advisory lock `id`. */
    const waitsFor = async (id: number) =>
      (
        await db.pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted`,
          [id],
        )
      ).rows[0]?.n === 1;
    const writer = new BatchWriter({ pool: db.writerPool, log: testLogger("writer") });
    try {
      const odd = (id: string) => (id.charCodeAt(id.length - 1) & 1) === 1;
      const runs = Array.from({ length: 300 }, (_, i) =>
        markGrant(writer, (id) => (odd(id) ? "held" : "gated"), "api", i + 1),
      );
      const seqOf = new Map(runs.map((r, i) => [r.id, i + 1]));
      const free = runs.filter((r) => !odd(r.id)).map((r) => r.id);
      const held = runs.filter((r) => odd(r.id)).map((r) => r.id);
      assert.ok(free.length > 0 && held.length > 0);
      const last = (ids: string[]) => Math.max(...ids.map((id) => seqOf.get(id) ?? 0));
      let flushed = false;
      const done = writer.flush().then(() => (flushed = true));
      await waitFor("the held part at its commit", () => waitsFor(HELD));
      await waitFor("the free part at its gate", () => waitsFor(GATE));
      await lock.query(`SELECT pg_advisory_unlock(${GATE})`);
      locked = [HELD];
      // The free part's shard holds its latest grant, committed, while the held part waits.
      await waitFor("the free part's commit", async () => {
        const rows = await grantRows("api");
        return rows.length === 1 && rows[0]?.shard === 0 ? rows : undefined;
      });
      assert.deepEqual(await grantRows("api"), [{ shard: 0, tokens: 1000 - last(free), seq: last(free) }]);
      const stored = await db.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM workflow_runs WHERE id = ANY($1::uuid[])`,
        [free],
      );
      assert.equal(stored.rows[0]?.n, free.length);
      assert.equal(await waitsFor(HELD), true, "the held part waits at its commit");
      assert.equal(flushed, false);
      await lock.query(`SELECT pg_advisory_unlock(${HELD})`);
      locked = [];
      await done;
      assert.deepEqual(await grantRows("api"), [
        { shard: 0, tokens: 1000 - last(free), seq: last(free) },
        { shard: 1, tokens: 1000 - last(held), seq: last(held) },
      ]);
      assert.equal(writer.stats.failedCommits, 0);
    } finally {
      for (const id of locked) await lock.query(`SELECT pg_advisory_unlock($1)`, [id]);
      await lock.end();
      await writer.close();
      await db.pool.query(`DROP TRIGGER grants_held ON workflow_runs`);
      await db.pool.query(`DROP FUNCTION grants_held()`);
      await db.pool.query(`DROP TRIGGER grants_gate ON workflow_runs`);
      await db.pool.query(`DROP FUNCTION grants_gate()`);
    }
  });

  it("keeps a shard's row at its latest grant: an earlier one written later leaves it", async () => {
    const writer = new BatchWriter({ pool: db.writerPool, log: testLogger("writer") });
    try {
      markGrant(writer, () => "grants", "later", 5);
      await writer.flush();
      markGrant(writer, () => "grants", "later", 3);
      await writer.flush();
      assert.deepEqual(await grantRows("later"), [{ shard: 0, tokens: 995, seq: 5 }]);
    } finally {
      await writer.close();
    }
  });

  it("restores each bucket from its highest seq across the shards and the legacy row, with the row's pause", async () => {
    const until = new Date("2030-01-01T00:00:00Z");
    // 'legacy': written before the shards, its row is the latest. 'sharded': shard 1 is the latest,
    // the pause is the legacy row's. 'fresh': grants only, never paused.
    await db.pool.query(
      `INSERT INTO rate_limit_buckets (name, key, tokens, refilled_at, seq, paused_until, paused_by, pause_note) VALUES
         ('legacy', 'k', 1, 10, 10, NULL, '', ''),
         ('sharded', 'k', 7, 3, 3, $1, 'ops', 'quota')`,
      [until],
    );
    await db.pool.query(
      `INSERT INTO rate_limit_grants (name, key, shard, tokens, refilled_at, seq) VALUES
         ('legacy', 'k', 0, 5, 5, 5), ('legacy', 'k', 1, 7, 7, 7),
         ('sharded', 'k', 0, 4, 9, 9), ('sharded', 'k', 1, 2, 12, 12),
         ('fresh', 'k', 0, 6, 4, 4)`,
    );
    const store = new PostgresEngineStore({ db, log: testLogger("store") });
    try {
      const rows = (await store.loadRateLimits()).filter((b) =>
        ["legacy", "sharded", "fresh"].includes(b.name),
      );
      assert.deepEqual(rows, [
        {
          name: "fresh",
          key: "k",
          tokens: 6,
          refilledAt: 4,
          seq: 4,
          fullAt: null,
          pausedUntil: null,
          pausedBy: "",
          pauseNote: "",
        },
        {
          name: "legacy",
          key: "k",
          tokens: 1,
          refilledAt: 10,
          seq: 10,
          fullAt: null,
          pausedUntil: null,
          pausedBy: "",
          pauseNote: "",
        },
        {
          name: "sharded",
          key: "k",
          tokens: 2,
          refilledAt: 12,
          seq: 12,
          fullAt: null,
          pausedUntil: until.getTime(),
          pausedBy: "ops",
          pauseNote: "quota",
        },
      ]);
    } finally {
      await store.close();
    }
  });

  it("the purge deletes the rows of buckets full again (past the clock skew), and pause rows whose pause is over", async () => {
    const purge = new RateLimitPurge({ pool: db.pool, log: testLogger("purge") });
    await purge.purge(); // the rows the tests before left
    const now = Date.now();
    const past = now - SKEW_MS - 1000;
    await db.pool.query(
      `INSERT INTO rate_limit_grants (name, key, shard, tokens, refilled_at, seq, full_at) VALUES
         ('purge', 'full', 0, 1, 0, 3, $1), ('purge', 'full', 1, 1, 0, 4, $1),
         ('purge', 'skew', 0, 1, 0, 3, $2),
         ('purge', 'soon', 0, 1, 0, 3, $3),
         ('purge', 'legacy', 0, 1, 0, 3, NULL),
         ('purge', 'locked', 0, 1, 0, 3, $1)`,
      [past, now - 1000, now + 60_000],
    );
    await db.pool.query(
      `INSERT INTO rate_limit_buckets (name, key, tokens, refilled_at, seq, paused_until, full_at) VALUES
         ('purge', 'resumed', 1, 0, 0, NULL, $1),
         ('purge', 'ended', 1, 0, 0, to_timestamp($3::float8 / 1000), $1),
         ('purge', 'paused', 1, 0, 0, to_timestamp($2::float8 / 1000), $1),
         ('purge', 'unknown', 1, 0, 0, NULL, NULL),
         ('purge', 'legacy', 1, 0, 9, NULL, $1)`,
      [past, now + 3_600_000, past],
    );
    // A grant of 'locked' is being committed: the purge passes it by; committed, its later
    // full_at keeps the row.
    const writer = await db.pool.connect();
    try {
      await writer.query("BEGIN");
      await writer.query(
        `UPDATE rate_limit_grants SET seq = 5, full_at = $1 WHERE name = 'purge' AND key = 'locked'`,
        [now + 60_000],
      );
      assert.deepEqual(await purge.purge(), { grants: 2, pauses: 2 });
      await writer.query("COMMIT");
      assert.deepEqual(await purge.purge(), { grants: 0, pauses: 0 });
    } finally {
      await writer.query("ROLLBACK"); // after a failed assertion: no transaction left open
      writer.release();
    }
    const left = await db.pool.query<{ k: string }>(
      `SELECT 'g:' || key || ':' || shard AS k FROM rate_limit_grants WHERE name = 'purge'
       UNION ALL SELECT 'b:' || key FROM rate_limit_buckets WHERE name = 'purge' ORDER BY 1`,
    );
    assert.deepEqual(
      left.rows.map((r) => r.k),
      ["b:legacy", "b:paused", "b:unknown", "g:legacy:0", "g:locked:0", "g:skew:0", "g:soon:0"],
    );
  });

  it("a grant's row carries when its bucket is full again; once purged, the next grant writes it anew", async () => {
    const writer = new BatchWriter({ pool: db.writerPool, log: testLogger("writer") });
    try {
      markGrant(writer, () => "grants", "again", 2);
      await writer.flush();
      const row = async () =>
        (
          await db.pool.query<{ seq: string; full_at: number }>(
            `SELECT seq, full_at FROM rate_limit_grants WHERE name = 'again'`,
          )
        ).rows.map((r) => [Number(r.seq), r.full_at]);
      assert.deepEqual(await row(), [[2, 2_000_002]]);
      // 2_000_002 ms after the epoch is long past: the purge deletes it.
      assert.deepEqual(await new RateLimitPurge({ pool: db.pool, log: testLogger("purge") }).purge(), {
        grants: 1,
        pauses: 0,
      });
      assert.deepEqual(await row(), []);
      markGrant(writer, () => "grants", "again", 3);
      await writer.flush();
      assert.deepEqual(await row(), [[3, 2_000_003]]);
    } finally {
      await writer.close();
    }
  });
});
