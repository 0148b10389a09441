/**
 * Smoke test of the benchmark harness: every section runs end to end at tiny sizes and produces a
 * complete report. It asserts that the harness works, never how fast anything is (timing goals
 * live in `npm run bench`, not in tests).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { existsSync } from "node:fs";
import { Worker } from "node:worker_threads";
import { parseArgs, scaled, UsageError } from "./lib/cli.js";
import { threadCpu, threadCpuBetween } from "./lib/cpu.js";
import { ROOT } from "./lib/machine.js";
import { allocationSummary } from "./lib/profile.js";
import { median, quantile, summarize } from "./lib/stats.js";
import { runBench, type BenchReport } from "./main.js";
import { chainSteps, fanOutSteps } from "./sections/dag.js";

/** Runs `fn` with a new temporary folder, removed after it. */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "nf-bench-smoke-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe("CPU by thread", () => {
  it(
    "groups this process's threads by the names they run under",
    { skip: !existsSync("/proc/self/task") },
    async () => {
      const before = threadCpu();
      // A named thread that spins for 50 ms of its own CPU.
      const worker = new Worker(
        "const end = process.threadCpuUsage().user + 50000; while (process.threadCpuUsage().user < end);" +
          "require('node:worker_threads').parentPort.postMessage('done'); setInterval(() => {}, 1000);",
        { eval: true, name: "executor-host" },
      );
      try {
        await new Promise((resolve) => worker.once("message", resolve));
        const used = threadCpuBetween(before, threadCpu());
        // Started after the first reading: its whole 50 ms counts.
        assert.ok((used["executor-host"] ?? 0) >= 40_000_000, JSON.stringify(used));
        assert.ok((used["main (scheduler)"] ?? 0) > 0);
      } finally {
        await worker.terminate();
      }
    },
  );
});

describe("bench command line", () => {
  it("parses --only, --scale, --systems and --rates", () => {
    const o = parseArgs([
      "--only",
      "latency,dag",
      "--scale=0.1",
      "--systems",
      "nexusflow",
      "--rates",
      "10,20",
    ]);
    assert.deepEqual(o.only, ["latency", "dag"]);
    assert.equal(o.scale, 0.1);
    assert.deepEqual(o.systems, ["nexusflow"]);
    assert.deepEqual(o.rates, [10, 20]);
    assert.equal(scaled(20_000, 0.1), 2000);
    assert.deepEqual(parseArgs([]).systems, ["nexusflow", "pg-boss", "graphile-worker", "dbos"]);
    assert.deepEqual(parseArgs(["--systems", "dbos,pg-boss"]).systems, ["dbos", "pg-boss"]);
    assert.equal(scaled(20_000, 0.00001, 100), 100);
    assert.equal(parseArgs([]).warmUp, false);
    assert.equal(parseArgs(["--warm-up"]).warmUp, true);
    assert.deepEqual(parseArgs(["--only", "scaling"]).only, ["scaling"]);
    assert.ok(!parseArgs([]).only.includes("scaling"), "scaling runs only when named");
  });

  it("rejects unknown sections and bad scales with a message naming the flag", () => {
    assert.throws(
      () => parseArgs(["--only", "speed"]),
      (e: unknown) => e instanceof UsageError && /--only/.test(e.message),
    );
    assert.throws(
      () => parseArgs(["--scale", "0"]),
      (e: unknown) => e instanceof UsageError && /--scale/.test(e.message),
    );
    assert.throws(() => parseArgs(["--bogus"]), UsageError);
  });

  it("takes --tracing as a share of runs in [0, 1]", () => {
    assert.equal(parseArgs(["--tracing", "0.1"]).tracing, 0.1);
    assert.equal(parseArgs(["--tracing", "0"]).tracing, 0);
    assert.equal(parseArgs([]).tracing, undefined);
    for (const bad of ["-0.1", "1.5", "NaN", "ten"])
      assert.throws(
        () => parseArgs(["--tracing", bad]),
        (e: unknown) => e instanceof UsageError && /--tracing/.test(e.message),
        bad,
      );
  });

  it("takes --allocations as --profile with allocation sampling", () => {
    assert.deepEqual(
      [parseArgs(["--allocations"]).profile, parseArgs(["--allocations"]).allocations],
      [true, true],
    );
    assert.deepEqual([parseArgs(["--profile"]).profile, parseArgs(["--profile"]).allocations], [true, false]);
  });
});

describe("allocation profiles", () => {
  it("sums every node's bytes and ranks the functions that allocated themselves", () => {
    const frame = (functionName: string, url = "", lineNumber = 0) => ({ functionName, url, lineNumber });
    const summary = allocationSummary({
      callFrame: frame("(root)"),
      selfSize: 0,
      children: [
        {
          callFrame: frame("run", `file://${ROOT}/services/executor/src/task-attempt.ts`, 9),
          selfSize: 4096,
        },
        {
          callFrame: frame("outer"),
          selfSize: 1024,
          children: [
            {
              callFrame: frame("run", `file://${ROOT}/services/executor/src/task-attempt.ts`, 9),
              selfSize: 2048,
            },
            { callFrame: frame(""), selfSize: 512 },
          ],
        },
      ],
    });
    assert.equal(summary.bytes, 4096 + 1024 + 2048 + 512);
    assert.deepEqual(summary.functions, [
      { bytes: 6144, fn: "run", where: "services/executor/src/task-attempt.ts:10" },
      { bytes: 1024, fn: "outer", where: "" },
      { bytes: 512, fn: "(anonymous)", where: "" },
    ]);
  });
});

describe("bench statistics and shapes", () => {
  it("computes nearest-rank percentiles", () => {
    const xs = Array.from({ length: 1000 }, (_, i) => i + 1);
    assert.equal(quantile(xs, 0.5), 500);
    assert.equal(quantile(xs, 0.99), 990);
    assert.equal(quantile(xs, 0.999), 999);
    const s = summarize([3, 1, 2]);
    assert.equal(s.min, 1);
    assert.equal(s.max, 3);
    assert.equal(s.p50, 2);
  });

  it("takes the median of the middle value, or of the two middle ones, in any order", () => {
    assert.equal(median([3, 1, 2]), 2);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.ok(Number.isNaN(median([])));
  });

  it("builds 1 -> 1000 -> 1 with one join over every fan-out step, and chains in order", () => {
    const steps = fanOutSteps(1000) as { id: string; dependsOn?: string[] }[];
    assert.equal(steps.length, 1002);
    assert.equal(steps.at(-1)?.dependsOn?.length, 1000);
    const chain = chainSteps(3) as { id: string; dependsOn?: string[] }[];
    assert.deepEqual(chain[2]?.dependsOn, ["s1"]);
  });
});

describe("bench smoke run", () => {
  // 150 s: section 4 first compiles the services as the image does (scripts/build-dist.mjs, ~30 s).
  it("runs every section at tiny sizes and writes a complete JSON report", { timeout: 150_000 }, async () => {
    await inTempDir(async (out) => {
      const printed: string[] = [];
      const report: BenchReport = await runBench(
        ["--scale", "0.005", "--rates", "40", "--systems", "nexusflow,graphile-worker,dbos", "--out", out],
        { print: (s) => printed.push(s), note: () => undefined },
      );
      assert.deepEqual(report.errors, []);
      assert.deepEqual(
        report.throughput?.map((t) => t.system),
        ["nexusflow", "graphile-worker", "dbos"],
      );
      for (const t of report.throughput ?? []) {
        assert.ok(t.drain.tasksPerSecond > 0, `${t.system} drained`);
        assert.ok(t.cost.perTask.commits > 0, `${t.system} cost measured`);
      }
      assert.equal(report.latency?.length, 3);
      for (const l of report.latency ?? []) {
        assert.ok(l.scheduleToStart.n > 0 && l.failedSends === 0 && l.notStarted === 0, l.system);
        const threads = [l.mainThreadGc, ...Object.values(l.workerThreadGc ?? {})];
        for (const p of threads.flatMap((t) => [t.scavenges, t.markCompacts]))
          assert.ok(
            Number.isInteger(p.count) && p.count >= 0 && p.maxMs >= 0 && p.maxMs <= p.totalMs,
            l.system,
          );
      }
      // Nexusflow's client and executors run in worker threads: their collections are recorded too.
      const ours = report.latency?.find((l) => l.system === "nexusflow");
      assert.deepEqual(Object.keys(ours?.workerThreadGc ?? {}).sort(), ["client", "executors"]);
      // Section 3 runs on the systems with a workflow model, Nexusflow and DBOS, the same shapes.
      assert.deepEqual(
        report.dag?.map((d) => d.system),
        ["nexusflow", "dbos"],
      );
      for (const d of report.dag ?? []) {
        assert.ok(Number.isFinite(d.fanOut.makespan.p50), `${d.system} fan-out ran`);
        // Every run completed, and every fan-out branch started (one missing start makes this NaN).
        assert.equal(d.fanOut.makespanMs.length, d.fanOut.runs, d.system);
        assert.ok(Number.isFinite(d.fanOut.lastFanStartMs), `${d.system} fan-out branches started`);
        assert.equal(d.chain.perHop.n, d.chain.steps - 1, `${d.system} chain: every hop measured`);
        assert.ok(d.fanOut.statementsPerRun > 0 && d.chain.statementsPerHop > 0, `${d.system} cost`);
      }
      assert.ok(printed.join("\n").includes("DAG shapes"));
      assert.equal(report.sessions?.idle.sessions, report.sessions?.busy.sessions);
      assert.ok((report.sessions?.busy.tasksPerSecond ?? 0) > 0);
      assert.ok(printed.join("\n").includes("No-op throughput"));
      // Section 6: drains without and with a purge, alternating; every old run deleted by the purge.
      const retention = report.retention;
      assert.deepEqual(
        retention?.phases.map((p) => p.purging),
        [false, true, false, true, false, true],
      );
      for (const p of retention?.phases ?? []) {
        assert.ok(p.tasksPerSecond > 0);
        if (p.purging) assert.equal(p.purge?.deleted, p.oldRuns, "the purge deletes every old run");
        else assert.equal(p.purge, undefined);
      }
      assert.ok(Number.isFinite(retention?.ratio));
      assert.ok(printed.join("\n").includes("retention purge"));
      const files = (await readdir(out)).filter((f) => f.endsWith(".json"));
      assert.equal(files.length, 1);
      const written = JSON.parse(await readFile(join(out, files[0] as string), "utf8")) as BenchReport;
      assert.equal(written.postgres.server["synchronous_commit"], "on");
      assert.ok(written.machine["cores"]);
    });
  });

  it(
    "runs the partitioning section: a scheduler without and with cluster mode, alternating",
    { timeout: 150_000 },
    async () => {
      await inTempDir(async (out) => {
        const printed: string[] = [];
        const report: BenchReport = await runBench(
          ["--only", "partitioning", "--scale", "0.005", "--systems", "nexusflow", "--out", out],
          { print: (s) => printed.push(s), note: () => undefined },
        );
        assert.deepEqual(report.errors, []);
        const r = report.partitioning;
        // A smoke run's scale makes two rounds after the warm-up, the second in the reverse order.
        const modes = ["0 sole", "1 sole", "1 cluster-1", "2 cluster-1", "2 sole"];
        assert.deepEqual(
          r?.drains.map((d) => `${d.round} ${d.mode}`),
          modes,
        );
        assert.deepEqual(
          r?.openLoops.map((o) => `${o.round} ${o.mode}`),
          modes,
        );
        assert.deepEqual(
          r?.drains.map((d) => d.warmUp),
          modes.map((_, i) => i === 0),
        );
        for (const d of r?.drains ?? []) assert.ok(d.tasksPerSecond > 0 && d.tasks === 100, d.mode);
        for (const o of r?.openLoops ?? []) {
          assert.ok(o.notStarted === 0 && o.p50 > 0, o.mode);
          // What tells a stall apart (bench/notes/22-session-twenty-six.md): each phase starts with
          // the earlier phases' garbage collected, so its heap is what the process keeps.
          assert.ok(o.stall.slowestMs >= o.p99 && o.stall.slowestAtSecond >= 0, o.mode);
          assert.ok(o.stall.mainThreadLoopDelayMaxMs > 0 && o.stall.heapUsedAtStartMiB > 0, o.mode);
          assert.ok(o.stall.checkpoints === null || o.stall.checkpoints >= 0, o.mode);
        }
        assert.ok(Number.isFinite(r?.drainRatio) && Number.isFinite(r?.openLoopRatio.p99));
        assert.ok(report.targets?.some((t) => t.target === "cost of partitioning, one replica in process"));
        assert.ok(printed.join("\n").includes("without and with cluster mode"));
      });
    },
  );
  it(
    "runs the scaling section: one scheduler, one replica and three as processes, rounds in alternating order",
    { timeout: 300_000 },
    async () => {
      await inTempDir(async (out) => {
        const printed: string[] = [];
        const report: BenchReport = await runBench(
          ["--only", "scaling", "--scale", "0.01", "--systems", "nexusflow", "--out", out],
          { print: (s) => printed.push(s), note: () => undefined },
        );
        assert.deepEqual(report.errors, []);
        const r = report.scaling;
        assert.deepEqual(
          r?.scale.map((d) => `${d.round} ${d.mode}`),
          ["1 sole", "1 cluster-1", "1 cluster-3", "2 cluster-3", "2 cluster-1", "2 sole"],
        );
        for (const d of r?.scale ?? []) {
          assert.ok(d.runs === 1000 && d.tasksPerSecond > 0, d.mode);
          assert.ok(d.schedulerCpuMsPerTask > 0, `${d.mode}: scheduler CPU ${d.schedulerCpuMsPerTask}`);
          // Transaction ids assigned over the drain: its group commits, counted at once (the
          // statistics view counted them only when a backend flushed, which a short drain may not see).
          assert.ok(d.commitsPerTask > 0, `${d.mode}: commits ${d.commitsPerTask}`);
          assert.ok(d.postgresCpuMsPerTask > 0 && d.machineBusyPct > 0, d.mode);
        }
        assert.equal(r?.scaleRatios.oneOverSole.length, 2);
        assert.equal(r?.scaleRatios.threeOverOne.length, 2);
        assert.ok(Number.isFinite(r?.scaleRatios.medianThreeOverOne));
        const names = (report.targets ?? []).map((t) => t.target);
        assert.ok(
          names.includes("cost of partitioning, one replica") &&
            names.includes("three replicas on these cores"),
        );
        assert.ok(printed.join("\n").includes("medians of the rounds' ratios"));
      });
    },
  );
  it(
    "runs the telemetry section: sections 1 and 2 off and with metrics and 10% tracing, a bench process per phase",
    { timeout: 150_000 },
    async () => {
      await inTempDir(async (out) => {
        const printed: string[] = [];
        const report: BenchReport = await runBench(
          ["--only", "telemetry", "--scale", "0.005", "--systems", "nexusflow", "--out", out],
          { print: (s) => printed.push(s), note: () => undefined },
        );
        assert.deepEqual(report.errors, []);
        const r = report.telemetry;
        // A smoke run's scale makes one pair.
        assert.deepEqual(
          r?.phases.map((p) => [p.round, p.mode]),
          [
            [1, "off"],
            [1, "on"],
          ],
        );
        for (const p of r?.phases ?? []) {
          assert.ok(p.drainTasksPerSecond > 0 && p.p50 > 0 && p.p99 >= p.p50, p.mode);
          // --warm-up: the measured drain is the process's second; the first is reported as cold.
          assert.ok((p.coldDrainTasksPerSecond ?? 0) > 0, p.mode);
          assert.ok(p.drainCpuMsPerTask !== undefined && p.drainCpuMsPerTask.benchProcess > 0, p.mode);
        }
        // The "on" phase traced (its sink received spans); the "off" one has no export thread.
        const [off, on] = r?.phases ?? [];
        assert.equal(off?.spansExported, undefined);
        assert.ok((on?.spansExported ?? 0) > 0, `spans exported: ${on?.spansExported}`);
        if (existsSync("/proc/self/task"))
          assert.equal(off?.drainThreadsUsPerTask?.["otlp-scheduler"], undefined);
        assert.deepEqual(r?.failures, []);
        for (const v of Object.values(r?.ratios ?? {})) assert.ok(Number.isFinite(v) && v > 0, String(v));
        assert.ok(report.targets?.some((t) => t.target === "metrics and 10% tracing (#20)"));
        assert.ok(printed.join("\n").includes("What metrics and 10% tracing cost"));
        // The phases' own output directories are gone: only this run's report is left.
        assert.deepEqual((await readdir(out)).filter((f) => f.endsWith(".json")).length, 1);
      });
    },
  );

  it(
    "runs the sampling section with tracing on: drains with none and a tenth sampled by the caller, alternating",
    { timeout: 150_000 },
    async () => {
      await inTempDir(async (out) => {
        // Tracing starts before the services' modules load (bench/start.ts): a process of its own.
        const args = ["--only", "sampling", "--tracing", "0", "--scale", "0.005", "--systems", "nexusflow"];
        await promisify(execFile)(
          process.execPath,
          ["--import", "tsx", join(ROOT, "bench", "start.ts"), ...args, "--out", out],
          { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 },
        );
        const files = (await readdir(out)).filter((f) => f.endsWith(".json"));
        assert.equal(files.length, 1);
        const report = JSON.parse(await readFile(join(out, files[0] as string), "utf8")) as BenchReport;
        assert.deepEqual(report.errors, []);
        const r = report.sampling;
        assert.deepEqual(
          r?.drains.map((d) => [d.sampled, d.warmUp]),
          [
            [0, true],
            [0, false],
            [0.1, false],
            [0.1, false],
            [0, false],
            [0, false],
            [0.1, false],
            [0.1, false],
            [0, false],
          ],
        );
        for (const d of r?.drains ?? []) assert.ok(d.tasksPerSecond > 0 && d.tasks === 100);
        // Where the CPU went, by thread (Linux): the scheduler's and the executors' at least.
        if (existsSync("/proc/self/task")) {
          const threads = r?.threads.map((t) => t.thread) ?? [];
          for (const t of ["main (scheduler)", "executor-host"])
            assert.ok(threads.includes(t), `${t} in ${threads.join(", ")}`);
        }
        assert.ok(Number.isFinite(r?.drainRatio) && Number.isFinite(r?.cpuRatio));
        // The scheduler samples nothing by itself (ratio 0): the spans exported are the sampled
        // runs', the callers' decision followed by the scheduler and the executors.
        assert.ok((report.tracing?.services["nexusflow-scheduler"] ?? 0) > 0, "scheduler spans exported");
        assert.ok((report.tracing?.services["nexusflow-executor"] ?? 0) > 0, "executor spans exported");
        // The sink counts spans by name: at most one of each kind per sampled run (4 drains of 100
        // runs, a tenth sampled), so a span made for a sampled-out run would show.
        const spans = report.tracing?.spans ?? {};
        for (const name of ["grpc.nexusflow.v1.WorkflowService/StartRun", "run", "attempt", "handler"]) {
          const count = spans[name] ?? 0;
          assert.ok(count > 0 && count <= 40, `${name}: ${count} spans (${JSON.stringify(spans)})`);
        }
      });
    },
  );

  it("refuses the sampling section without tracing, naming the flag", async () => {
    await inTempDir(async (out) => {
      const report = await runBench(["--only", "sampling", "--systems", "nexusflow", "--out", out], {
        print: () => undefined,
        note: () => undefined,
      });
      assert.equal(report.sampling, undefined);
      assert.match(report.errors[0]?.message ?? "", /--tracing/);
    });
  });
});
