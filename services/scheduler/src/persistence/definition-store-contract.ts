/**
 * The one test suite every {@link DefinitionStore} passes (test code, imported by the back ends'
 * test files): a (name, version) is stored once, the latest version is the highest, specs come
 * back as stored, and listing pages newest first.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { it } from "node:test";
import type { DefinitionStore, NewDefinition } from "./definition-store.js";

/** A definition of workflow `name` at `version`. */
function definition(name: string, version: number, hash = `hash-${version}`): NewDefinition {
  return {
    name,
    version,
    canonicalJson: JSON.stringify({ name, steps: [{ id: "a", type: "t" }], version }),
    contentHash: hash,
    description: "",
  };
}

/** A workflow name no other test uses (the PostgreSQL suite shares one database). */
const uniqueName = (): string => `contract-${randomUUID().slice(0, 8)}`;

/** Registers the suite; `store()` gives the store under test. */
export function definitionStoreContract(store: () => DefinitionStore): void {
  void it("stores a (name, version) once: the second insert returns the stored row, whatever its content", async () => {
    const name = uniqueName();
    const first = await store().insert(definition(name, 1, "h1"));
    assert.equal(first.created, true);
    assert.equal(first.row.name, name);
    assert.equal(first.row.version, 1);
    assert.equal(first.row.contentHash, "h1");
    assert.deepEqual(first.row.spec, { name, steps: [{ id: "a", type: "t" }], version: 1 });
    assert.ok(first.row.createdAt instanceof Date);
    const again = await store().insert(definition(name, 1, "h2"));
    assert.equal(again.created, false);
    assert.equal(again.row.id, first.row.id);
    assert.equal(again.row.contentHash, "h1");
  });

  void it("reads a version, the latest version (0) and its id; undefined for what is not stored", async () => {
    const name = uniqueName();
    const v1 = (await store().insert(definition(name, 1))).row;
    const v3 = (await store().insert(definition(name, 3))).row;
    await store().insert(definition(uniqueName(), 9));
    assert.equal((await store().get(name, 1))?.id, v1.id);
    assert.equal((await store().get(name, 0))?.id, v3.id);
    assert.equal(await store().latestId(name), v3.id);
    assert.equal(await store().get(name, 2), undefined);
    assert.equal(await store().get(uniqueName(), 0), undefined);
    assert.equal(await store().latestId(uniqueName()), undefined);
  });

  void it("gives the spec of an id, and rejects an id not stored", async () => {
    const name = uniqueName();
    const { row } = await store().insert(definition(name, 2));
    assert.deepEqual(await store().specById(row.id), { name, steps: [{ id: "a", type: "t" }], version: 2 });
    await assert.rejects(store().specById(2_000_000_000));
  });

  void it("lists newest first, by name, page by page, and only latest versions when asked", async () => {
    const name = uniqueName();
    const ids: number[] = [];
    for (const version of [1, 2, 3]) ids.push((await store().insert(definition(name, version))).row.id);
    const all = await store().list({ name, latestOnly: false, limit: 10 });
    assert.deepEqual(
      all.map((r) => r.version),
      [3, 2, 1],
    );
    const first = await store().list({ name, latestOnly: false, limit: 2 });
    assert.deepEqual(
      first.map((r) => r.id),
      [ids[2], ids[1]],
    );
    const next = await store().list({ name, beforeId: first.at(-1)?.id, latestOnly: false, limit: 2 });
    assert.deepEqual(
      next.map((r) => r.id),
      [ids[0]],
    );
    const latest = await store().list({ name, latestOnly: true, limit: 10 });
    assert.deepEqual(
      latest.map((r) => r.version),
      [3],
    );
    const other = uniqueName();
    await store().insert(definition(other, 1));
    const both = await store().list({ name: "", latestOnly: true, limit: 1000 });
    assert.ok(both.some((r) => r.name === other) && both.some((r) => r.name === name && r.version === 3));
    assert.ok(!both.some((r) => r.name === name && r.version !== 3));
  });
}
