/** The in-memory engine store passes the engine store contract. */
import { describe } from "node:test";
import { engineStoreContract } from "./engine-store-contract.js";
import { MemoryEngineStore } from "./memory-engine-store.js";

void describe("engine store contract: memory", () => {
  engineStoreContract(() => {
    const store = new MemoryEngineStore();
    return Promise.resolve({ store, definitionId: 1, dispose: () => store.close() });
  });
});
