import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@nexusflow/common";
import { Definitions } from "../../src/engine/definitions.js";
import { PostgresDefinitionStore } from "../../src/persistence/postgres-definition-store.js";
import { openDatabase, type Database } from "../../src/persistence/database.js";
import { definitionStoreContract } from "../../src/persistence/definition-store-contract.js";
import { startTestDatabase, testLogger } from "../support.js";

const spec = (version: number) => ({
  name: "defs-latest",
  version,
  steps: [{ id: "only", type: "noop" }],
});

describe("Definitions.resolve (PostgreSQL)", () => {
  let pg: Awaited<ReturnType<typeof startTestDatabase>>;
  let db: Database;

  before(async () => {
    pg = await startTestDatabase();
    db = await openDatabase({ url: pg.url, log: testLogger() });
  });
  after(async () => {
    await db?.close();
    await pg?.close();
  });

  /** Runs `fn`, counting the lookups of a latest version that reach PostgreSQL meanwhile. */
  const countLatestLookups = async <T>(fn: () => Promise<T>): Promise<{ result: T; lookups: number }> => {
    const query = db.pool.query.bind(db.pool);
    let lookups = 0;
    (db.pool as { query: unknown }).query = (...args: Parameters<typeof query>) => {
      if (typeof args[0] === "string" && args[0].includes("ORDER BY version DESC")) lookups++;
      return query(...args);
    };
    try {
      return { result: await fn(), lookups };
    } finally {
      (db.pool as { query: unknown }).query = query;
    }
  };

  it("shares one lookup of the latest version among concurrent callers, then serves it from the cache", async () => {
    const store = new Definitions(new PostgresDefinitionStore(db), testLogger());
    await store.register(spec(1));
    const { result: resolved, lookups } = await countLatestLookups(() =>
      Promise.all(Array.from({ length: 50 }, () => store.resolve("defs-latest", 0))),
    );
    assert.equal(lookups, 1);
    assert.ok(resolved.every((r) => r.workflow.version === 1 && r.id === resolved[0]?.id));
    const cached = await countLatestLookups(() => store.resolve("defs-latest", 0));
    assert.equal(cached.lookups, 0);
    assert.equal(cached.result.id, resolved[0]?.id);
  });

  it("sees a version registered by another scheduler once the cached latest expires", async () => {
    // A cache window of 0: every resolve of "latest" asks the database again.
    const mine = new Definitions(new PostgresDefinitionStore(db), testLogger(), 0);
    const other = new Definitions(new PostgresDefinitionStore(db), testLogger());
    assert.equal((await mine.resolve("defs-latest", 0)).workflow.version, 1);
    await other.register(spec(2));
    const again = await countLatestLookups(() => mine.resolve("defs-latest", 0));
    assert.equal(again.lookups, 1);
    assert.equal(again.result.workflow.version, 2);
    assert.equal((await mine.resolve("defs-latest", 1)).workflow.version, 1);
  });

  it("answers NOT_FOUND for an unknown workflow and INVALID_ARGUMENT for a bad key, and retries after a failure", async () => {
    const store = new Definitions(new PostgresDefinitionStore(db), testLogger());
    await assert.rejects(store.resolve("nope", 0), (e: { code?: Code }) => e.code === Code.NOT_FOUND);
    await assert.rejects(store.resolve("", 0), (e: { code?: Code }) => e.code === Code.INVALID_ARGUMENT);
    await assert.rejects(
      store.resolve("defs-latest", -1),
      (e: { code?: Code }) => e.code === Code.INVALID_ARGUMENT,
    );
    await store.register({ ...spec(1), name: "nope" });
    assert.equal((await store.resolve("nope", 0)).workflow.name, "nope");
  });
});

describe("definition store contract: PostgreSQL", () => {
  let pg: Awaited<ReturnType<typeof startTestDatabase>>;
  let db: Database;
  let store: PostgresDefinitionStore;

  before(async () => {
    pg = await startTestDatabase();
    db = await openDatabase({ url: pg.url, log: testLogger() });
    store = new PostgresDefinitionStore(db);
  });
  after(async () => {
    await db?.close();
    await pg?.close();
  });

  definitionStoreContract(() => store);
});
