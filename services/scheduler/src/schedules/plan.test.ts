import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { catchUp, planFires, type PlanInput } from "./plan.js";

const t = (s: number): Date => new Date(Date.UTC(2026, 0, 1, 0, 0, s));
const secs = (ds: readonly Date[]): number[] => ds.map((d) => (d.getTime() - t(0).getTime()) / 1000);

function input(over: Partial<PlanInput>): PlanInput {
  return {
    overlapPolicy: "SKIP",
    maxConcurrentRuns: 10,
    catchUpPolicy: "ALL",
    catchUpWindowMs: 60_000,
    buffered: null,
    activeRuns: 0,
    due: [],
    now: t(100),
    loopStartedAt: t(0),
    ...over,
  };
}

describe("catch-up after downtime", () => {
  // The loop started at 50 s; fire times 10..60 s, 10 s apart; now 65 s; window 25 s.
  const due = [10, 20, 30, 40, 50, 60].map(t);
  const base = { due, now: t(65), loopStartedAt: t(50), catchUpWindowMs: 25_000 };

  it("OFF starts none of the fire times of the downtime", () => {
    const r = catchUp({ ...base, catchUpPolicy: "OFF" });
    assert.deepEqual(secs(r.kept), [50, 60]);
    assert.equal(r.missed, 4);
  });

  it("LAST starts the latest one within the window", () => {
    const r = catchUp({ ...base, catchUpPolicy: "LAST" });
    assert.deepEqual(secs(r.kept), [40, 50, 60]);
    assert.equal(r.missed, 3);
  });

  it("LAST keeps none of a downtime walked in parts until the part with its latest fire time", () => {
    // The same fire times walked two at a time (a pass takes at most maxFiresPerPass of them),
    // with a window holding all of them: 10..40 fell during the downtime.
    const parts = [
      [10, 20],
      [30, 40],
      [50, 60],
    ].map((p) => p.map(t));
    const kept = parts.map((part, i) => {
      const next = parts[i + 1]?.[0];
      return catchUp({
        ...base,
        catchUpWindowMs: 60_000,
        due: part,
        catchUpPolicy: "LAST",
        moreDowntime: next !== undefined && next.getTime() < base.loopStartedAt.getTime(),
      });
    });
    assert.deepEqual(
      kept.flatMap((r) => secs(r.kept)),
      [40, 50, 60],
      "the latest once, as in one part",
    );
    assert.equal(
      kept.reduce((n, r) => n + r.missed, 0),
      3,
    );
  });

  it("ALL starts every one within the window, in order", () => {
    const r = catchUp({ ...base, catchUpPolicy: "ALL" });
    assert.deepEqual(secs(r.kept), [40, 50, 60]);
    assert.equal(r.missed, 3);
    const wide = catchUp({ ...base, catchUpPolicy: "ALL", catchUpWindowMs: 3_600_000 });
    assert.deepEqual(secs(wide.kept), [10, 20, 30, 40, 50, 60]);
    assert.equal(wide.missed, 0);
  });

  it("never drops a fire time of the loop's own, however late", () => {
    const r = catchUp({ ...base, catchUpPolicy: "OFF", loopStartedAt: t(0), now: t(500) });
    assert.deepEqual(secs(r.kept), [10, 20, 30, 40, 50, 60]);
  });
});

describe("overlap policies", () => {
  it("SKIP starts only when nothing is active", () => {
    assert.deepEqual(secs(planFires(input({ due: [t(1)] })).start), [1]);
    const busy = planFires(input({ due: [t(1), t(2)], activeRuns: 1 }));
    assert.deepEqual(busy.start, []);
    assert.equal(busy.skipped, 2);
    // Two due at once with nothing active: the first starts, the second overlaps it.
    const two = planFires(input({ due: [t(1), t(2)] }));
    assert.deepEqual(secs(two.start), [1]);
    assert.equal(two.skipped, 1);
  });

  it("BUFFER_ONE keeps one fire waiting and starts it once the active runs ended", () => {
    const p = planFires(input({ overlapPolicy: "BUFFER_ONE", due: [t(1), t(2), t(3)], activeRuns: 1 }));
    assert.deepEqual(p.start, []);
    assert.deepEqual(p.buffered, t(1));
    assert.equal(p.skipped, 2);
    const still = planFires(input({ overlapPolicy: "BUFFER_ONE", buffered: t(1), activeRuns: 1 }));
    assert.deepEqual([still.start, still.buffered], [[], t(1)]);
    const released = planFires(input({ overlapPolicy: "BUFFER_ONE", buffered: t(1), due: [t(4)] }));
    assert.deepEqual(secs(released.start), [1]);
    assert.deepEqual(released.buffered, t(4));
  });

  it("ALLOW_ALL starts up to the bound of active runs", () => {
    const p = planFires(
      input({ overlapPolicy: "ALLOW_ALL", maxConcurrentRuns: 3, activeRuns: 1, due: [1, 2, 3, 4].map(t) }),
    );
    assert.deepEqual(secs(p.start), [1, 2]);
    assert.equal(p.skipped, 2);
  });

  it("CANCEL_OTHER cancels the active runs and starts the latest fire once they ended", () => {
    const p = planFires(input({ overlapPolicy: "CANCEL_OTHER", activeRuns: 2, due: [t(1), t(2)] }));
    assert.equal(p.activeRuns, "cancel");
    assert.deepEqual([p.start, p.buffered, p.skipped], [[], t(2), 1]);
    const later = planFires(input({ overlapPolicy: "CANCEL_OTHER", buffered: t(2) }));
    assert.deepEqual([secs(later.start), later.activeRuns], [[2], "keep"]);
    // A newer fire supersedes the waiting one.
    const newer = planFires(
      input({ overlapPolicy: "CANCEL_OTHER", buffered: t(2), activeRuns: 1, due: [t(3)] }),
    );
    assert.deepEqual([newer.buffered, newer.skipped, newer.activeRuns], [t(3), 1, "cancel"]);
  });

  it("TERMINATE_OTHER ends the active runs and starts at once", () => {
    const p = planFires(input({ overlapPolicy: "TERMINATE_OTHER", activeRuns: 1, due: [t(1)] }));
    assert.deepEqual([secs(p.start), p.activeRuns, p.buffered], [[1], "terminate", null]);
    const idle = planFires(input({ overlapPolicy: "TERMINATE_OTHER", due: [t(1)] }));
    assert.deepEqual([secs(idle.start), idle.activeRuns], [[1], "keep"]);
  });

  it("applies catch-up before overlap: missed fire times are counted, not skipped", () => {
    const p = planFires(input({ catchUpPolicy: "OFF", loopStartedAt: t(50), due: [t(10), t(20), t(60)] }));
    assert.deepEqual([secs(p.start), p.missed, p.skipped], [[60], 2, 0]);
  });
});
