import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { targets, type BenchReport } from "./main.js";
import type { LatencyResult } from "./sections/queue.js";

const phase = (rate: number, p50: number, p99: number, system = "nexusflow"): LatencyResult =>
  ({ system, rate, scheduleToStart: { p50, p99 } }) as unknown as LatencyResult;

describe("targets", () => {
  it("judges the 1,000/s open loop by how many of its repeated phases meet the goal (4 of 5)", () => {
    const report = {
      latency: [
        phase(500, 1, 2),
        phase(1000, 12, 60),
        phase(1000, 4, 20),
        phase(1000, 4.5, 24),
        phase(1000, 3, 22),
        phase(1000, 4.9, 26),
        phase(1000, 1, 1, "graphile-worker"),
      ],
    } as unknown as BenchReport;
    const byName = new Map(targets(report).map((t) => [t.target, t]));
    const p50 = byName.get("open loop 1,000/s p50");
    const p99 = byName.get("open loop 1,000/s p99");
    assert.equal(p50?.measured, "4 of 5 phases; median 4.5 ms (3-12)");
    assert.equal(p50?.met, true);
    assert.equal(p99?.measured, "3 of 5 phases; median 24 ms (20-60)");
    assert.equal(p99?.met, false);
  });

  it("wants the drain ahead of pg-boss and DBOS, and a purge to cost it at most 5%", () => {
    const drain = (system: string, tasksPerSecond: number) => ({
      system,
      tasks: 100,
      drain: { tasksPerSecond },
      cost: { perTask: { commits: 0.02 } },
    });
    const report = {
      throughput: [drain("nexusflow", 7000), drain("pg-boss", 8000), drain("dbos", 800)],
      retention: { offMedian: 7000, purgingMedian: 6700, ratio: 6700 / 7000, phases: [] },
    } as unknown as BenchReport;
    const byName = new Map(targets(report).map((t) => [t.target, t]));
    assert.equal(byName.get("no-op drain")?.met, false, "behind pg-boss");
    assert.equal(byName.get("no-op drain")?.measured, "7000 tasks/s; pg-boss 8000; dbos 800");
    assert.equal(byName.get("drain while a retention purge runs")?.met, true);
    assert.equal(byName.get("PostgreSQL commits per task")?.met, true);
  });

  it("reports a single phase as measured", () => {
    const [p50, p99] = targets({ latency: [phase(1000, 11.7, 52)] } as unknown as BenchReport);
    assert.deepEqual([p50?.measured, p50?.met, p99?.measured, p99?.met], ["11.7 ms", false, "52 ms", false]);
  });
});
