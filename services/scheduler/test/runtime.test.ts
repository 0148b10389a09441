/**
 * runtime.ts: releaseStartupMemory() gives back a young generation that start-up grew (as loading
 * modules and opening the database grow it) and leaves no `gc` function behind for other contexts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { getHeapSpaceStatistics } from "node:v8";
import { runInNewContext } from "node:vm";
import { releaseStartupMemory } from "../src/runtime.js";

const MiB = 2 ** 20;

function youngGeneration(): number {
  return getHeapSpaceStatistics().find((s) => s.space_name === "new_space")?.space_size ?? 0;
}

describe("releaseStartupMemory", () => {
  it("shrinks a grown young generation to a few MiB and exposes no gc", () => {
    // Objects that survive scavenges make V8 grow the semi-spaces, as start-up does.
    let kept: number[][] = [];
    for (let i = 0; i < 400_000; i++) kept.push([i, i + 1, i + 2]);
    const grown = youngGeneration();
    assert.ok(kept.length > 0);
    kept = [];
    assert.ok(grown > 4 * MiB, `the young generation grew (${grown / MiB} MiB)`);
    const ms = releaseStartupMemory();
    assert.ok(ms >= 0);
    const after = youngGeneration();
    assert.ok(after <= 2 * MiB, `young generation ${grown / MiB} -> ${after / MiB} MiB`);
    assert.equal(runInNewContext("typeof gc"), "undefined");
  });
});
