/**
 * Token buckets in the pure core (rate-limits.ts): the refill, the bound on any window, one wake-up
 * per bucket letting out only as many waiters as there are tokens, pauses, the grant recorded
 * for the store, and buckets forgotten once full.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CompiledRateLimit } from "../dag/index.js";
import { type Bucket, RateLimitState } from "../model/rate-limit-state.js";
import { newTaskState, type TaskState } from "../model/run-state.js";
import { checkRate, pauseBucket, rateLimitsOf, rateWake, readyAt, takeRate } from "./rate-limits.js";
import { Simulation } from "./simulation.js";

const limit = (over: Partial<CompiledRateLimit> = {}): CompiledRateLimit => ({
  name: "partner",
  expression: null,
  key: null,
  units: 1,
  rate: 50,
  perMs: 1000,
  burst: 1,
  path: "$.steps[0].rateLimits[0]",
  ...over,
});

/** A queued task of the bucket `partner` (key "") with `l`. */
function queued(sim: Simulation, l: CompiledRateLimit, now: number): TaskState {
  const task = newTaskState("run-1", "call", "STEP", "x", 0, new Date(now));
  task.status = "QUEUED";
  task.rate = [{ limit: l, bucket: rateLimitsOf(sim.core).bucket(l.name, "", l.burst, now) }];
  sim.core.tasks.set(task.id, task);
  return task;
}

/** Leases as many tasks as the bucket allows, trying every ms from `from` to `to`. */
function leaseTimes(sim: Simulation, l: CompiledRateLimit, from: number, to: number): number[] {
  const times: number[] = [];
  for (let t = from; t < to; t++) {
    const task = queued(sim, l, t);
    if (checkRate(sim.core, task, new Date(t))) {
      takeRate(task, new Date(t));
      times.push(t);
    }
    sim.core.tasks.delete(task.id);
  }
  return times;
}

function busiest(times: number[], windowMs: number): number {
  let most = 0;
  for (let i = 0, j = 0; i < times.length; i++) {
    while ((times[i] as number) - (times[j] as number) >= windowMs) j++;
    most = Math.max(most, i - j + 1);
  }
  return most;
}

describe("rate limits in the core", () => {
  it("grants at most rate in any window of per with the default burst, and keeps the rate", () => {
    const sim = new Simulation();
    const times = leaseTimes(sim, limit(), 0, 10_000);
    assert.equal(busiest(times, 1000), 50);
    assert.ok(times.length >= 500 && times.length <= 501, `${times.length} leases in 10 s`);
  });

  it("with a burst: at most rate + burst - units in any window", () => {
    const sim = new Simulation();
    const times = leaseTimes(sim, limit({ burst: 20 }), 0, 10_000);
    assert.ok(busiest(times, 1000) <= 69, `saw ${busiest(times, 1000)}`);
    assert.equal(times.filter((t) => t === 0).length, 1);
  });

  it("a refused task waits in the bucket; one timer lets out as many as there are tokens", () => {
    const sim = new Simulation();
    const l = limit({ rate: 2, burst: 2 });
    const first = queued(sim, l, 0);
    const second = queued(sim, l, 0);
    for (const t of [first, second]) {
      assert.equal(checkRate(sim.core, t, new Date(0)), true);
      takeRate(t, new Date(0));
      t.status = "SUCCEEDED";
    }
    const waiting = [queued(sim, l, 0), queued(sim, l, 0), queued(sim, l, 0)];
    for (const t of waiting) assert.equal(checkRate(sim.core, t, new Date(0)), false);
    // One timer, at the first token: 500 ms at 2 per second.
    const timers = sim.timers.filter((x) => x.timer.kind === "rate-limit");
    assert.equal(timers.length, 1);
    const timer = timers[0]?.timer;
    assert.ok(timer?.kind === "rate-limit");
    assert.equal(timer.at, 500);
    sim.offered.length = 0;
    rateWake(sim.core, timer.bucket, timer.at, new Date(500));
    assert.deepEqual(sim.offered, [waiting[0]], "one token: one waiter let out");
    assert.equal(timer.bucket.waiters.length, 2);
  });

  it("a paused bucket grants nothing until the pause ends, then wakes its waiters", () => {
    const sim = new Simulation();
    const l = limit();
    const task = queued(sim, l, 0);
    const bucket = task.rate?.[0]?.bucket;
    assert.ok(bucket !== undefined);
    pauseBucket(sim.core, bucket, 5000, "ops", "maintenance", new Date(0));
    assert.equal(readyAt({ limit: l, bucket }, 100), 5000);
    assert.equal(checkRate(sim.core, task, new Date(100)), false);
    sim.offered.length = 0;
    rateWake(sim.core, bucket, 5000, new Date(5000));
    assert.deepEqual(sim.offered, [task]);
    assert.equal(checkRate(sim.core, task, new Date(5000)), true);
  });

  it("a grant records the bucket as it left it, seq increasing, and when it is full again, for the commit with the lease", () => {
    const sim = new Simulation();
    const l = limit({ rate: 10, burst: 5 });
    const a = queued(sim, l, 0);
    takeRate(a, new Date(0));
    const b = queued(sim, l, 100);
    takeRate(b, new Date(100));
    assert.deepEqual(a.rateTaken, [
      { id: "partner\u0000", name: "partner", key: "", tokens: 4, refilledAt: 0, seq: 1, fullAt: 100 },
    ]);
    assert.deepEqual(b.rateTaken, [
      { id: "partner\u0000", name: "partner", key: "", tokens: 4, refilledAt: 100, seq: 2, fullAt: 200 },
    ]);
  });

  it("restoring a stored bucket never gives back tokens a bucket in memory has granted since", () => {
    const state = new RateLimitState();
    const row = {
      name: "p",
      key: "k",
      tokens: 5,
      refilledAt: 0,
      seq: 3,
      fullAt: 1000,
      pausedUntil: null,
      pausedBy: "",
      pauseNote: "",
    };
    state.restore(row, 0);
    const b = state.buckets.get("p\u0000k");
    assert.ok(b);
    b.tokens = 1;
    b.seq = 7;
    // A partition loaded later reads the same (older) row again: the bucket stays as it is.
    state.restore(row, 0);
    assert.deepEqual([b.tokens, b.seq], [1, 7]);
    // A newer row (written by this bucket's later grants) is taken.
    state.restore({ ...row, tokens: 0.5, seq: 9 }, 0);
    assert.deepEqual([b.tokens, b.seq], [0.5, 9]);
  });
});

describe("buckets forgotten once full (keyed limits)", () => {
  const keyed = limit({ name: "api", rate: 10, perMs: 1000, burst: 2 });

  /** A queued task of `keyed`'s bucket for `key`, its tokens taken at `now` (a grant). */
  function granted(sim: Simulation, key: string, now: number): TaskState {
    const task = newTaskState(`run-${key}`, "call", "STEP", "x", 0, new Date(now));
    task.status = "QUEUED";
    task.rate = [{ limit: keyed, bucket: rateLimitsOf(sim.core).bucket(keyed.name, key, keyed.burst, now) }];
    assert.equal(checkRate(sim.core, task, new Date(now)), true);
    takeRate(task, new Date(now));
    return task;
  }

  it("keeps memory bounded by the buckets in use: a full, idle one is dropped by the next sweep", () => {
    const sim = new Simulation();
    const state = rateLimitsOf(sim.core);
    // One grant per key at t = 0: each bucket is full again 100 ms later (1 of 2 tokens at 10/s).
    for (let i = 0; i < 5000; i++) granted(sim, `customer-${i}`, 0);
    assert.ok(state.buckets.size <= 5000);
    // At t = 1 s they are all full: the sweeps made while new keys come keep only those in use.
    for (let i = 0; i < 5000; i++) granted(sim, `later-${i}`, 1000 + i);
    assert.ok(state.buckets.size < 5000, `${state.buckets.size} buckets in memory`);
    assert.ok(state.dropped >= 5000, `${state.dropped} dropped`);
    for (let i = 0; i < 5000; i++) assert.equal(state.buckets.has(`api\u0000customer-${i}`), false);
    // Not full yet, waited for, timed or paused: kept.
    const b = state.bucket("api", "recent", keyed.burst, 10_000);
    const recent = granted(sim, "recent", 10_000);
    assert.equal(recent.rate?.[0]?.bucket, b);
    const waited = granted(sim, "waited", 10_000);
    const waiter = newTaskState("run-w", "call", "STEP", "x", 0, new Date(10_000));
    waiter.status = "QUEUED";
    waiter.rate = [{ limit: keyed, bucket: waited.rate?.[0]?.bucket as Bucket }];
    sim.core.tasks.set(waiter.id, waiter);
    granted(sim, "waited", 10_000);
    assert.equal(checkRate(sim.core, waiter, new Date(10_000)), false);
    const paused = state.bucket("api", "paused", keyed.burst, 10_000);
    pauseBucket(sim.core, paused, 20_000_000, "ops", "", new Date(10_000));
    state.sweep(10_050);
    assert.deepEqual([...state.buckets.keys()].filter((id) => !id.includes("later-")).sort(), [
      "api\u0000paused",
      "api\u0000recent",
      "api\u0000waited",
    ]);
    // Later, all but the paused one are as new (the waiter's timer fired and it was leased).
    sim.core.tasks.delete(waiter.id);
    const w = state.buckets.get("api\u0000waited") as Bucket;
    rateWake(sim.core, w, w.wakeAt as number, new Date(w.wakeAt as number));
    state.sweep(60_000);
    assert.deepEqual([...state.buckets.keys()], ["api\u0000paused"]);
  });

  it("a task whose bucket was dropped takes from the one made since, at a seq above the dropped one's", () => {
    const sim = new Simulation();
    const state = rateLimitsOf(sim.core);
    const first = granted(sim, "c-1", 0);
    const dropped = first.rate?.[0]?.bucket as Bucket;
    assert.equal(dropped.seq, 1);
    assert.equal(state.sweep(1000), 1);
    // Another task of the key makes a new bucket and takes both its tokens.
    const second = granted(sim, "c-1", 1000);
    granted(sim, "c-1", 1000);
    const made = state.buckets.get("api\u0000c-1") as Bucket;
    assert.notEqual(made, dropped);
    assert.deepEqual(
      second.rateTaken?.map((t) => t.seq),
      [2],
      "the new bucket's grants come after the dropped one's",
    );
    // The first task, retried, reads the bucket in its place: empty now, so it waits.
    first.rateTaken = undefined;
    assert.equal(checkRate(sim.core, first, new Date(1000)), false);
    assert.equal(first.rate?.[0]?.bucket, made);
    assert.equal(state.buckets.size, 1);
  });

  it("a dropped bucket that a task still names is put back as it was, full", () => {
    const sim = new Simulation();
    const state = rateLimitsOf(sim.core);
    const task = granted(sim, "c-2", 0);
    const b = task.rate?.[0]?.bucket as Bucket;
    state.sweep(500);
    assert.equal(state.buckets.size, 0);
    assert.equal(checkRate(sim.core, task, new Date(500)), true);
    takeRate(task, new Date(500));
    assert.equal(state.buckets.get("api\u0000c-2"), b);
    assert.deepEqual(
      task.rateTaken?.map((t) => [t.tokens, t.seq]),
      [[1, 2]],
    );
  });

  it("recovery leaves a stored bucket that is full by now out of memory, but keeps its seq as the floor", () => {
    const state = new RateLimitState();
    const row = {
      name: "api",
      key: "c-3",
      tokens: 0,
      refilledAt: 0,
      seq: 41,
      fullAt: 200,
      pausedUntil: null,
      pausedBy: "",
      pauseNote: "",
    };
    state.restore(row, 1000);
    state.restore({ ...row, key: "c-4", fullAt: null }, 1000);
    state.restore({ ...row, key: "c-5", pausedUntil: 5000 }, 1000);
    assert.deepEqual([...state.buckets.keys()].sort(), ["api\u0000c-4", "api\u0000c-5"]);
    assert.equal(state.bucket("api", "c-3", 2, 1000).seq, 41);
  });

  it("recovery sweeps nothing: a row's time is not now (rows from a clock ahead of this one)", () => {
    const state = new RateLimitState();
    const row = (key: string, refilledAt: number, fullAt: number) => ({
      name: "api",
      key,
      tokens: 0,
      refilledAt,
      seq: 1,
      fullAt,
      pausedUntil: null,
      pausedBy: "",
      pauseNote: "",
    });
    // Not full at recovery's now (1,000): all kept, even once a row stamped later comes (1,024
    // buckets in memory: a bucket made now would sweep first).
    for (let i = 0; i < 1024; i++) state.restore(row(`k-${i}`, 900, 5000), 1000);
    state.restore(row("later", 10_000, 20_000), 1000);
    assert.equal(state.buckets.size, 1025);
  });
});
