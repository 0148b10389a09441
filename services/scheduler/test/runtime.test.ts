/**
 * runtime.ts: releaseStartupMemory() gives back a young generation that start-up grew (as loading
 * modules and opening the database grow it) and leaves no `gc` function behind for other contexts;
 * releaseMemoryWhenIdle() gives back one that a burst grew, once the process is quiet.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { getHeapSpaceStatistics } from "node:v8";
import { runInNewContext } from "node:vm";
import { releaseMemoryWhenIdle, releaseStartupMemory } from "../src/runtime.js";

const MiB = 2 ** 20;

function youngGeneration(): number {
  return getHeapSpaceStatistics().find((s) => s.space_name === "new_space")?.space_size ?? 0;
}

/** Grows the young generation as a burst does (objects that survive scavenges); returns its size. */
function burst(): number {
  let kept: number[][] = [];
  for (let i = 0; i < 400_000; i++) kept.push([i, i + 1, i + 2]);
  const grown = youngGeneration();
  assert.ok(kept.length > 0);
  kept = [];
  return grown;
}

describe("releaseStartupMemory", () => {
  it("shrinks a grown young generation to a few MiB and exposes no gc", () => {
    // Objects that survive scavenges make V8 grow the semi-spaces, as start-up does.
    const grown = burst();
    assert.ok(grown > 4 * MiB, `the young generation grew (${grown / MiB} MiB)`);
    const ms = releaseStartupMemory();
    assert.ok(ms >= 0);
    const after = youngGeneration();
    assert.ok(after <= 2 * MiB, `young generation ${grown / MiB} -> ${after / MiB} MiB`);
    assert.equal(runInNewContext("typeof gc"), "undefined");
  });
});

describe("releaseMemoryWhenIdle", () => {
  it("collects once the process is quiet with a grown young generation, then stops", async () => {
    const releases: { ms: number; rssBefore: number; rssAfter: number }[] = [];
    let released: () => void = () => undefined;
    const first = new Promise<void>((resolve) => (released = resolve));
    const grown = burst();
    assert.ok(grown >= 8 * MiB, `the young generation grew (${grown / MiB} MiB)`);
    const watcher = releaseMemoryWhenIdle({
      sampleMs: 20,
      quietSamples: 2,
      // A test runner's loop is busier than an idle scheduler's.
      maxUtilization: 0.5,
      onRelease: (r) => {
        releases.push(r);
        released();
      },
    });
    try {
      await first;
    } finally {
      watcher.stop();
    }
    assert.equal(releases.length, 1);
    const after = youngGeneration();
    assert.ok(after <= 2 * MiB, `young generation ${grown / MiB} -> ${after / MiB} MiB`);
    assert.ok((releases[0]?.ms ?? -1) >= 0);
    assert.equal(runInNewContext("typeof gc"), "undefined");
  });
});
