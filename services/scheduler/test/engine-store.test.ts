/** The PostgreSQL engine store passes the engine store contract (the in-memory one passes it too). */
import { after, before, describe } from "node:test";
import { openDatabase, type Database } from "../src/persistence/database.js";
import { engineStoreContract } from "../src/persistence/engine-store-contract.js";
import { PostgresEngineStore } from "../src/persistence/postgres-engine-store.js";
import { startTestDatabase, testLogger } from "./support.js";

void describe("engine store contract: PostgreSQL", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let db: Database;
  let definitionId: number;

  before(async () => {
    server = await startTestDatabase();
    db = await openDatabase({ url: server.url, log: testLogger("db") });
    const { rows } = await db.pool.query<{ id: number }>(
      `INSERT INTO workflow_definitions (name, version, spec, content_hash) VALUES ('contract', 1, '{}', 'h') RETURNING id`,
    );
    definitionId = Number(rows[0]?.id);
  });
  after(async () => {
    await db?.close();
    await server?.close();
  });

  engineStoreContract(() => {
    const store = new PostgresEngineStore({ db, log: testLogger("store") });
    return Promise.resolve({ store, definitionId, dispose: () => store.close() });
  });
});
