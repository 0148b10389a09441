/**
 * Direct label children (cells.ts) against prom-client's own: the same operations on twin
 * registries, one through `labels()` children and one through cells, give the same exposition,
 * also with label sets appearing later, series removed, metrics reset and exemplars observed on
 * the same series; bad values fail as prom-client makes them fail.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { seededRandom } from "../testing.js";
import { type OpenMetricsContentType, Registry } from "prom-client";
import {
  Children1,
  Children2,
  Counter,
  DURATION_BUCKETS,
  Histogram,
  counterCell,
  counterCells,
  histogramCell,
  histogramCells,
  observeWithTrace,
  type CounterChild,
  type HistogramChild,
} from "./index.js";

/** A registry in the OpenMetrics format (exemplars), without default metrics. */
function registry(): Registry {
  const r = new Registry();
  (r as unknown as Registry<OpenMetricsContentType>).setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  return r;
}

/** Exemplars carry the time they were observed at: equal expositions differ in it only. */
const withoutExemplarTimes = (text: string): string => text.replace(/( # \{[^}]*\} \S+) \S+$/gm, "$1");

interface Twin {
  registry: Registry;
  counter: Counter<"workflow" | "status">;
  histogram: Histogram<"task_type" | "outcome">;
  counters: Children2<CounterChild>;
  histograms: Children2<HistogramChild>;
}

function twin(direct: boolean): Twin {
  const r = registry();
  const counter = new Counter({
    name: "t_runs_total",
    help: "h",
    labelNames: ["workflow", "status"],
    registers: [r],
  });
  const histogram = new Histogram({
    name: "t_handler_seconds",
    help: "h",
    labelNames: ["task_type", "outcome"],
    buckets: [...DURATION_BUCKETS],
    enableExemplars: true,
    registers: [r],
  });
  return {
    registry: r,
    counter,
    histogram,
    counters: new Children2<CounterChild>(direct ? counterCells(counter) : counter),
    histograms: new Children2<HistogramChild>(direct ? histogramCells(histogram) : histogram),
  };
}

describe("metric cells", () => {
  it("write what prom-client's children write, through new label sets, removals, resets and exemplars", async () => {
    const plain = twin(false);
    const cells = twin(true);
    const next = seededRandom(20);
    const workflows = ["a", "b", "c"];
    const types = ["t.x", "t.y", "t.z"];
    // Values on both sides of every bound, the bounds themselves, 0, negatives and past the last.
    const value = (): number => {
      const r = next();
      if (r < 0.1) return DURATION_BUCKETS[Math.floor(next() * DURATION_BUCKETS.length)] as number;
      if (r < 0.15) return 0;
      if (r < 0.2) return -next();
      if (r < 0.25) return 1e6 * next();
      return Math.exp(next() * 14 - 9);
    };
    for (let step = 0; step < 6_000; step++) {
      // Label sets appear over time: the third workflow and task type only after 2,000 steps.
      const n = step < 2_000 ? 2 : 3;
      const w = workflows[Math.floor(next() * n)] as string;
      const t = types[Math.floor(next() * n)] as string;
      const status = next() < 0.8 ? "SUCCEEDED" : "FAILED";
      const by = Math.floor(next() * 3);
      const v = value();
      const exemplar = next() < 0.05;
      for (const side of [plain, cells]) {
        side.counters.get(w, status).inc();
        if (by > 0) side.counters.get(w, status).inc(by);
        if (exemplar)
          observeWithTrace(
            side.histogram,
            { task_type: t, outcome: status },
            v,
            "0af7651916cd43dd8448eb211c80319c",
          );
        else side.histograms.get(t, status).observe(v);
      }
      if (step === 3_000) {
        // A removed series is made anew by its next write, on both sides.
        for (const side of [plain, cells]) {
          side.counter.remove("a", "SUCCEEDED");
          side.histogram.remove("t.x", "SUCCEEDED");
        }
        assert.equal(
          withoutExemplarTimes(await cells.registry.metrics()),
          withoutExemplarTimes(await plain.registry.metrics()),
        );
      }
      if (step === 4_500) for (const side of [plain, cells]) side.registry.resetMetrics();
    }
    const want = withoutExemplarTimes(await plain.registry.metrics());
    assert.equal(withoutExemplarTimes(await cells.registry.metrics()), want);
    // The comparison covers what it should: every label set, buckets past the last bound, exemplars.
    assert.match(want, /t_runs_total\{workflow="c",status="FAILED"\} \d+/);
    assert.match(want, /t_handler_seconds_bucket\{le="\+Inf",task_type="t.z",outcome="SUCCEEDED"\} \d+/);
    assert.match(want, / # \{trace_id="0af7651916cd43dd8448eb211c80319c"\}/);
  });

  it("write to the series directly once it exists", () => {
    const r = registry();
    const counter = new Counter({ name: "t_c_total", help: "h", labelNames: ["k"], registers: [r] });
    const histogram = new Histogram({
      name: "t_h",
      help: "h",
      labelNames: ["k"],
      buckets: [1, 2],
      registers: [r],
    });
    const c = counterCell(counter, "v");
    const h = histogramCell(histogram, "v");
    // prom-client's children are plain objects; a cell is not.
    assert.notEqual(Object.getPrototypeOf(c), Object.prototype);
    assert.notEqual(Object.getPrototypeOf(h), Object.prototype);
    c.inc();
    h.observe(1.5);
    // Were the cell to go through prom-client, these would be called.
    counter.inc = () => assert.fail("counter.inc called");
    histogram.observe = () => assert.fail("histogram.observe called");
    c.inc(2);
    h.observe(0.5);
    h.observe(3);
    const entries = (m: object) =>
      Object.values((m as unknown as { hashMap: Record<string, unknown> }).hashMap);
    assert.deepEqual(entries(counter), [{ value: 3, labels: { k: "v" } }]);
    assert.deepEqual(entries(histogram), [
      { labels: { k: "v" }, bucketValues: { 1: 1, 2: 1 }, sum: 5, count: 3 },
    ]);
  });

  it("fail on bad values as prom-client does, and take label values in the metric's order", () => {
    const r = registry();
    const counter = new Counter({ name: "t_c_total", help: "h", labelNames: ["k"], registers: [r] });
    const histogram = new Histogram({ name: "t_h", help: "h", labelNames: ["k", "l"], registers: [r] });
    const c = counterCell(counter, "v");
    const h = histogramCell(histogram, "v", "w");
    c.inc();
    h.observe(1);
    assert.throws(() => c.inc(-1), /not possible to decrease a counter/);
    assert.throws(() => c.inc(Infinity), TypeError);
    assert.throws(() => h.observe(Number.NaN), TypeError);
    assert.throws(() => h.observe(Infinity), TypeError);
    assert.throws(() => histogramCell(histogram, "v"), /Invalid number of arguments/);
    assert.deepEqual(
      Object.values((histogram as unknown as { hashMap: Record<string, { labels: object }> }).hashMap)[0]
        ?.labels,
      {
        k: "v",
        l: "w",
      },
    );
  });

  it("are found again by their label values, the last one looked up first", () => {
    const made: string[] = [];
    const one = new Children1({ labels: (a: string) => (made.push(a), { a }) });
    const two = new Children2({ labels: (a: string, b: string) => (made.push(`${a}/${b}`), { a, b }) });
    for (const [a, b] of [
      ["x", "1"],
      ["x", "1"],
      ["x", "2"],
      ["y", "2"],
      ["x", "1"],
      ["y", "2"],
      ["y", "2"],
    ] as const) {
      assert.deepEqual(one.get(a), { a });
      assert.deepEqual(two.get(a, b), { a, b });
      // Equal strings that are not the same string find the same child.
      assert.equal(two.get(`${a}`.concat(""), [b].join("")), two.get(a, b));
    }
    assert.deepEqual(made.sort(), ["x", "x/1", "x/2", "y", "y/2"]);
  });
});
