/**
 * Token buckets in the pure core (rate-limits.ts): the refill, the bound on any window, one wake-up
 * per bucket letting out only as many waiters as there are tokens, pauses, and the grant recorded
 * for the store.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CompiledRateLimit } from "../dag/index.js";
import { RateLimitState } from "../model/rate-limit-state.js";
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

  it("a grant records the bucket as it left it, seq increasing, for the commit with the lease", () => {
    const sim = new Simulation();
    const l = limit({ rate: 10, burst: 5 });
    const a = queued(sim, l, 0);
    takeRate(a, new Date(0));
    const b = queued(sim, l, 100);
    takeRate(b, new Date(100));
    assert.deepEqual(a.rateTaken, [
      { id: "partner\u0000", name: "partner", key: "", tokens: 4, refilledAt: 0, seq: 1 },
    ]);
    assert.deepEqual(b.rateTaken, [
      { id: "partner\u0000", name: "partner", key: "", tokens: 4, refilledAt: 100, seq: 2 },
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
      pausedUntil: null,
      pausedBy: "",
      pauseNote: "",
    };
    state.restore(row);
    const b = state.buckets.get("p\u0000k");
    assert.ok(b);
    b.tokens = 1;
    b.seq = 7;
    // A partition loaded later reads the same (older) row again: the bucket stays as it is.
    state.restore(row);
    assert.deepEqual([b.tokens, b.seq], [1, 7]);
    // A newer row (written by this bucket's later grants) is taken.
    state.restore({ ...row, tokens: 0.5, seq: 9 });
    assert.deepEqual([b.tokens, b.seq], [0.5, 9]);
  });
});
