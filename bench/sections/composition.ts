/**
 * Section 8: composition (issue #26), Nexusflow only. What the issue asks the benchmark to show:
 *
 * - a 1 -> 10,000 -> 1 **map** (a root, a map step over a run-time list of 10,000 elements, a join
 *   over the map's output): its makespan from the start call to the run's committed completion, and
 *   the scheduler's heap while it runs (the scheduler runs on this process's main thread; the
 *   executors run in a worker thread, whose heap is not counted);
 * - **1,000 schedules due in the same second**: each schedule fires once at one chosen second; how
 *   late each fire's run started its task (the handler's start, after the fire's commit and the
 *   task's dispatch: an upper bound on the fire's own lateness).
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue } from "@nexusflow/common";
import { ScheduleService, ScheduleSpecSchema } from "@nexusflow/gen";
import { scaled } from "../lib/cli.js";
import { roundSummary, summarize, type Summary } from "../lib/stats.js";
import { formatTable } from "../lib/table.js";
import { NOOP_TYPE, workflowSpec } from "../systems/nexusflow.js";
import { pollUntil } from "../systems/types.js";
import type { BenchContext } from "./context.js";

/** Elements of the map. */
export const MAP_WIDTH = 10_000;
/** The map step's parallelism (the issue's test uses 50; executors' slots bound it too). */
export const MAP_PARALLELISM = 1000;
/** Schedules due in the same second. */
export const SCHEDULES = 1000;

/** Section 6's results. */
export interface CompositionResult {
  map: {
    width: number;
    parallelism: number;
    runs: number;
    /** Start call to committed completion, ms, per run. */
    makespanMs: number[];
    makespan: Summary;
    /** Elements per second over the median run. */
    elementsPerSecond: number;
    /** The main thread's heap used before the first run, after a full collection, MiB. */
    heapBeforeMiB: number;
    /** The highest heap used sampled (every 20 ms) while the maps ran, MiB. */
    heapPeakMiB: number;
    /** Heap used once they ended, after a full collection, MiB. */
    heapAfterMiB: number;
  };
  schedules: {
    count: number;
    /** Time taken to create them, ms. */
    createMs: number;
    /** Due time to each fire's task starting, ms. */
    lateness: Summary;
    /** Fires whose task started more than one second after the due time. */
    laterThanOneSecond: number;
  };
}

function heapMiB(): number {
  return Math.round((process.memoryUsage().heapUsed / 2 ** 20) * 10) / 10;
}

/** A full collection, so that heap figures count what is live (exposed for this call only). */
function collect(): void {
  setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
}

/** Runs section 6 on a fresh Nexusflow. */
export async function compositionSection(ctx: BenchContext): Promise<CompositionResult> {
  const width = scaled(MAP_WIDTH, ctx.options.scale, 100);
  const count = scaled(SCHEDULES, ctx.options.scale, 10);
  const runs = ctx.options.scale < 0.5 ? 1 : 3;
  const nf = await ctx.nexusflow("composition");
  await ctx.prepare(nf);
  await nf.start();
  try {
    // The map: recorder index 0 is the root, 1..width the elements, width + 1 the join.
    await nf.register(
      workflowSpec("bench-map", [
        { id: "root", type: NOOP_TYPE, input: { i: 0 } },
        {
          id: "each",
          type: NOOP_TYPE,
          dependsOn: ["root"],
          map: { items: "input.items", parallelism: MAP_PARALLELISM },
          input: { i: "{{ item }}" },
        },
        { id: "join", type: NOOP_TYPE, dependsOn: ["each"], input: { i: width + 1 } },
      ]),
    );
    await nf.register(
      workflowSpec("bench-fire", [{ id: "fire", type: NOOP_TYPE, input: { i: "{{ input.i }}" } }]),
    );
    await nf.startConsumers();

    ctx.note(`  nexusflow: map 1 -> ${width} -> 1 (parallelism ${MAP_PARALLELISM}), ${runs} runs`);
    const items = Array.from({ length: width }, (_, k) => k + 1);
    collect();
    const heapBeforeMiB = heapMiB();
    let heapPeakMiB = heapBeforeMiB;
    const sampler = setInterval(() => (heapPeakMiB = Math.max(heapPeakMiB, heapMiB())), 20);
    const makespanMs: number[] = [];
    try {
      await ctx.profiled("nexusflow-map", async () => {
        for (let r = 0; r < runs; r++) {
          nf.recorder.reset(width + 2);
          const t0 = performance.now();
          await nf.finished(await nf.startRun("bench-map", { items }), 600_000);
          makespanMs.push(performance.now() - t0);
          if (nf.recorder.started < width + 2)
            throw new Error(`map run ${r}: ${nf.recorder.started} of ${width + 2} handlers started`);
        }
      });
    } finally {
      clearInterval(sampler);
    }
    collect();
    const heapAfterMiB = heapMiB();
    const makespan = roundSummary(summarize(makespanMs));

    ctx.note(`  nexusflow: ${count} schedules due in the same second`);
    nf.recorder.reset(count);
    const schedules = createClient(
      ScheduleService,
      createGrpcTransport({ baseUrl: `http://${nf.scheduler.address}` }),
    );
    // Due on a whole second far enough ahead for every schedule to exist by then.
    const c0 = performance.now();
    const due = new Date(Math.ceil((Date.now() + 15_000) / 1000) * 1000);
    const cron = `${due.getUTCSeconds()} ${due.getUTCMinutes()} ${due.getUTCHours()} ${due.getUTCDate()} ${due.getUTCMonth() + 1} *`;
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < count) {
          const i = next++;
          await schedules.createSchedule({
            scheduleId: `bench-${i}`,
            spec: create(ScheduleSpecSchema, {
              cron,
              timeZone: "UTC",
              workflowName: "bench-fire",
              input: jsonToValue({ i }),
            }),
          });
        }
      }),
    );
    const createMs = Math.round(performance.now() - c0);
    if (Date.now() >= due.getTime())
      throw new Error(`creating ${count} schedules took ${createMs} ms, past their due time`);
    await pollUntil(
      `${count} fires' tasks started`,
      () => nf.recorder.started >= count,
      due.getTime() - Date.now() + 120_000,
      5,
    );
    const dueMono = due.getTime() - performance.timeOrigin;
    const lateness = Array.from(nf.recorder.starts.subarray(0, count), (t) => t - dueMono);
    return {
      map: {
        width,
        parallelism: MAP_PARALLELISM,
        runs,
        makespanMs: makespanMs.map((m) => Math.round(m)),
        makespan,
        elementsPerSecond: Math.round(width / (makespan.p50 / 1000)),
        heapBeforeMiB,
        heapPeakMiB,
        heapAfterMiB,
      },
      schedules: {
        count,
        createMs,
        lateness: roundSummary(summarize(lateness)),
        laterThanOneSecond: lateness.filter((l) => l > 1000).length,
      },
    };
  } finally {
    await nf.stop();
  }
}

/** The section's tables. */
export function compositionTable(r: CompositionResult): string {
  const m = r.map;
  const s = r.schedules;
  return (
    "\n8. Composition (Nexusflow: maps, schedules)\n" +
    formatTable([
      ["shape", "runs", "makespan p50 ms", "max ms", "elements/s", "heap before / peak / after MiB"],
      [
        `map 1 -> ${m.width} -> 1, parallelism ${m.parallelism}`,
        m.runs,
        m.makespan.p50,
        m.makespan.max,
        m.elementsPerSecond,
        `${m.heapBeforeMiB} / ${m.heapPeakMiB} / ${m.heapAfterMiB}`,
      ],
    ]) +
    "\n" +
    formatTable([
      [
        "schedules due in one second",
        "created in ms",
        "task start after due p50 ms",
        "p99 ms",
        "max ms",
        "> 1 s",
      ],
      [s.count, s.createMs, s.lateness.p50, s.lateness.p99, s.lateness.max, s.laterThanOneSecond],
    ])
  );
}

/** The targets this section measures. */
export function compositionTargets(
  r: CompositionResult,
): { target: string; goal: string; measured: string; met: boolean }[] {
  return [
    {
      target: `1,000 schedules due in the same second`,
      goal: "all fire within one second (their tasks started)",
      measured: `${r.schedules.count} schedules: max ${r.schedules.lateness.max} ms, p50 ${r.schedules.lateness.p50} ms`,
      met: r.schedules.count >= SCHEDULES && r.schedules.lateness.max <= 1000,
    },
  ];
}
