import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@nexusflow/common";
import { DefinitionStore } from "../../src/engine/definitions.js";
import { openDatabase, type Database } from "../../src/persistence/database.js";
import { startTestDatabase, testLogger } from "../support.js";

const spec = (version: number) => ({
  name: "defs-latest",
  version,
  steps: [{ id: "only", type: "noop" }],
});

describe("DefinitionStore.resolve", () => {
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

  it("shares one lookup of the latest version among concurrent callers", async () => {
    const store = new DefinitionStore(db, testLogger());
    await store.register(spec(1));
    const query = db.pool.query.bind(db.pool);
    let latestQueries = 0;
    (db.pool as { query: unknown }).query = (...args: Parameters<typeof query>) => {
      if (typeof args[0] === "string" && args[0].includes("ORDER BY version DESC")) latestQueries++;
      return query(...args);
    };
    try {
      const resolved = await Promise.all(Array.from({ length: 50 }, () => store.resolve("defs-latest", 0)));
      assert.equal(latestQueries, 1);
      assert.ok(resolved.every((r) => r.workflow.version === 1 && r.id === resolved[0]?.id));
    } finally {
      (db.pool as { query: unknown }).query = query;
    }
  });

  it("sees a version registered by another scheduler once the cached latest expires", async () => {
    const mine = new DefinitionStore(db, testLogger());
    const other = new DefinitionStore(db, testLogger());
    assert.equal((await mine.resolve("defs-latest", 0)).workflow.version, 1);
    await other.register(spec(2));
    // Within the cache window the latest may still be the old one; after it, never.
    await new Promise((r) => setTimeout(r, 2100));
    assert.equal((await mine.resolve("defs-latest", 0)).workflow.version, 2);
    assert.equal((await mine.resolve("defs-latest", 1)).workflow.version, 1);
  });

  it("answers NOT_FOUND for an unknown workflow and INVALID_ARGUMENT for a bad key, and retries after a failure", async () => {
    const store = new DefinitionStore(db, testLogger());
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
