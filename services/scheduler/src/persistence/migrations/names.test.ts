import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { migrationsList } from "./index.js";
import { MIGRATION_NAMES } from "./names.js";

describe("migration names", () => {
  it("lists every migration of index.ts, in order, each named as its class", () => {
    assert.deepEqual(
      MIGRATION_NAMES,
      migrationsList.map((m) => m.name),
    );
    for (const m of migrationsList) assert.equal(m.class.name, m.name);
  });
});
