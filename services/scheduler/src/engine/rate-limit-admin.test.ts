/**
 * Taking the pauses other replicas stored (RateLimitPauses.sync): a stored pause pauses, a key no
 * longer stored as paused resumes, and a pause made here while the read is under way is kept.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pauseBucket, rateLimitsOf } from "../core/rate-limits.js";
import { Simulation } from "../core/simulation.js";
import type { StoredPause } from "../persistence/engine-store.js";
import { RateLimitPauses } from "./rate-limit-admin.js";

const HOUR = 3_600_000;

/** A store whose read answers when the test says. */
function heldStore() {
  let answer: ((rows: StoredPause[]) => void) | undefined;
  return {
    loadRateLimitPauses: () => new Promise<StoredPause[]>((resolve) => (answer = resolve)),
    answer: (rows: StoredPause[]) => answer?.(rows),
  };
}

const row = (key: string, until: number, note = "maintenance"): StoredPause => ({
  name: "partner",
  key,
  pausedUntil: until,
  pausedBy: "ops",
  pauseNote: note,
});

describe("RateLimitPauses.sync", () => {
  it("pauses a stored key (its bucket made when not in memory) and resumes a key no longer stored", async () => {
    const sim = new Simulation();
    const pauses = new RateLimitPauses();
    const state = rateLimitsOf(sim.core);
    const until = Date.now() + HOUR;
    const resumed = state.bucket("partner", "old", 5, Date.now());
    pauseBucket(sim.core, resumed, until, "ops", "", new Date());
    const store = heldStore();
    const sync = pauses.sync(sim.core, store);
    store.answer([row("acme", until)]);
    assert.equal(await sync, 2);
    const acme = state.buckets.get("partner\u0000acme");
    assert.deepEqual([acme?.pausedUntil, acme?.pausedBy, acme?.pauseNote], [until, "ops", "maintenance"]);
    assert.equal(resumed.pausedUntil, null);
    // The same rows again: nothing changes.
    const again = pauses.sync(sim.core, store);
    store.answer([row("acme", until)]);
    assert.equal(await again, 0);
  });

  it("keeps a pause made here while the read was under way, or still being stored", async () => {
    const sim = new Simulation();
    const pauses = new RateLimitPauses();
    const state = rateLimitsOf(sim.core);
    const until = Date.now() + HOUR;
    const store = heldStore();
    const sync = pauses.sync(sim.core, store);
    // Paused and stored here after the read began: the rows read may not hold it.
    const made = state.bucket("partner", "made", 5, Date.now());
    pauseBucket(sim.core, made, until, "ops", "", new Date());
    await pauses.store(made, () => Promise.resolve());
    // Paused here, its store not done.
    const storing = state.bucket("partner", "storing", 5, Date.now());
    pauseBucket(sim.core, storing, until, "ops", "", new Date());
    let stored: (() => void) | undefined;
    const writing = pauses.store(storing, () => new Promise<void>((resolve) => (stored = resolve)));
    store.answer([]);
    assert.equal(await sync, 0);
    assert.equal(made.pausedUntil, until);
    assert.equal(storing.pausedUntil, until);
    stored?.();
    await writing;
    // A read begun after both: what it reads holds (here another replica resumed both).
    const next = pauses.sync(sim.core, store);
    store.answer([]);
    assert.equal(await next, 2);
    assert.equal(made.pausedUntil, null);
    assert.equal(storing.pausedUntil, null);
  });

  it("reads one at a time: asked during a read, it reads again after it, so the newest read lands last", async () => {
    const sim = new Simulation();
    const pauses = new RateLimitPauses();
    const state = rateLimitsOf(sim.core);
    const until = Date.now() + HOUR;
    let reads = 0;
    const store = heldStore();
    const counted = {
      loadRateLimitPauses: () => {
        reads++;
        return store.loadRateLimitPauses();
      },
    };
    // A pause is told, then its resume, while the first read is under way.
    const first = pauses.sync(sim.core, counted);
    const second = pauses.sync(sim.core, counted);
    assert.equal(reads, 1);
    store.answer([row("acme", until)]);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(reads, 2);
    store.answer([]);
    assert.equal(await first, 2);
    assert.equal(await second, 2);
    assert.equal(state.buckets.get("partner\u0000acme")?.pausedUntil, null);
  });
});
