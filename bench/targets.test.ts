import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { targets, type BenchReport } from "./main.js";
import type { LatencyResult } from "./sections/queue.js";

const phase = (rate: number, p50: number, p99: number, system = "nexusflow"): LatencyResult =>
  ({ system, rate, scheduleToStart: { p50, p99 } }) as unknown as LatencyResult;

describe("targets", () => {
  it("judges the 1,000/s open loop by the median of its repeated phases", () => {
    const report = {
      latency: [
        phase(500, 1, 2),
        phase(1000, 12, 60),
        phase(1000, 4, 20),
        phase(1000, 4.5, 24),
        phase(1000, 1, 1, "graphile-worker"),
      ],
    } as unknown as BenchReport;
    const byName = new Map(targets(report).map((t) => [t.target, t]));
    const p50 = byName.get("open loop 1,000/s p50");
    const p99 = byName.get("open loop 1,000/s p99");
    assert.equal(p50?.measured, "4.5 ms (median of 3 phases, 4-12)");
    assert.equal(p50?.met, true);
    assert.equal(p99?.measured, "24 ms (median of 3 phases, 20-60)");
    assert.equal(p99?.met, true);
  });

  it("reports a single phase as measured", () => {
    const [p50, p99] = targets({ latency: [phase(1000, 11.7, 52)] } as unknown as BenchReport);
    assert.deepEqual([p50?.measured, p50?.met, p99?.measured, p99?.met], ["11.7 ms", false, "52 ms", false]);
  });
});
