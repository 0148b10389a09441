/** The in-memory definition store passes the definition store contract. */
import { describe } from "node:test";
import { definitionStoreContract } from "./definition-store-contract.js";
import { MemoryDefinitionStore } from "./memory-definition-store.js";

void describe("definition store contract: memory", () => {
  const store = new MemoryDefinitionStore();
  definitionStoreContract(() => store);
});
