/**
 * In-process CPU profiling with the inspector: a .cpuprofile per phase (open it in Chrome DevTools
 * or speedscope) and a summary of the hottest functions by self time; with `allocations`, V8's
 * sampling heap profiler beside it, keeping the samples of objects already collected too, so that
 * its .heapprofile (Chrome DevTools, Memory) says what the phase allocated, not what it kept.
 */
import { writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { ROOT } from "./machine.js";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
}

/** One hot function. */
export interface HotSpot {
  selfMs: number;
  selfPct: number;
  fn: string;
  where: string;
}

/** What a profile says, in short. */
export interface ProfileSummary {
  file: string;
  functions: HotSpot[];
  packages: { where: string; selfPct: number }[];
  /** What the thread allocated meanwhile (with `allocations`). */
  allocations?: AllocationSummary;
}

/** What a thread allocated during a phase, from the sampling heap profiler. */
export interface AllocationSummary {
  file: string;
  /** Bytes allocated, estimated from the samples (one every {@link ALLOCATION_SAMPLING_BYTES} on average). */
  bytes: number;
  /** The functions that allocated most, by bytes allocated in them. */
  functions: { bytes: number; fn: string; where: string }[];
}

/** Mean bytes between two allocation samples: fine enough for per-task figures of a phase. */
export const ALLOCATION_SAMPLING_BYTES = 1024;

interface HeapProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children?: HeapProfileNode[];
}

/** A running profile; `stop()` writes it and returns its summary. */
export interface Profiling {
  stop(): Promise<ProfileSummary>;
}

/**
 * Starts profiling this thread; the profile is written to `file` on stop, and with `allocations`
 * the heap profile to the same name ending in .heapprofile.
 */
export async function startProfile(
  file: string,
  { intervalUs = 200, allocations = false }: { intervalUs?: number; allocations?: boolean } = {},
): Promise<Profiling> {
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: intervalUs });
  if (allocations) {
    await session.post("HeapProfiler.enable");
    await session.post("HeapProfiler.startSampling", {
      samplingInterval: ALLOCATION_SAMPLING_BYTES,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  }
  await session.post("Profiler.start");
  return {
    async stop() {
      const { profile } = (await session.post("Profiler.stop")) as unknown as { profile: CpuProfile };
      let allocated: AllocationSummary | undefined;
      if (allocations) {
        const { profile: heap } = (await session.post("HeapProfiler.stopSampling")) as unknown as {
          profile: { head: HeapProfileNode };
        };
        const heapFile = file.replace(/\.cpuprofile$/, "") + ".heapprofile";
        await writeFile(heapFile, JSON.stringify(heap));
        allocated = { file: heapFile, ...allocationSummary(heap.head) };
      }
      session.disconnect();
      await writeFile(file, JSON.stringify(profile));
      return {
        file,
        functions: hotSpots(profile),
        packages: hotPackages(profile),
        ...(allocated === undefined ? {} : { allocations: allocated }),
      };
    },
  };
}

/** Bytes allocated under `head`, and by the functions that allocated most themselves. */
export function allocationSummary(head: HeapProfileNode, top = 12): Omit<AllocationSummary, "file"> {
  const byKey = new Map<string, { bytes: number; fn: string; where: string }>();
  let bytes = 0;
  const stack: HeapProfileNode[] = [head];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    bytes += node.selfSize;
    if (node.selfSize > 0) {
      const fn = node.callFrame.functionName || "(anonymous)";
      const where =
        node.callFrame.url === "" ? "" : `${shortUrl(node.callFrame.url)}:${node.callFrame.lineNumber + 1}`;
      const key = `${fn}@${where}`;
      const entry = byKey.get(key) ?? { bytes: 0, fn, where };
      entry.bytes += node.selfSize;
      byKey.set(key, entry);
    }
    for (const child of node.children ?? []) stack.push(child);
  }
  return { bytes, functions: [...byKey.values()].sort((a, b) => b.bytes - a.bytes).slice(0, top) };
}

function shortUrl(url: string): string {
  const u = url.replace(/^file:\/\//, "").replace(`${ROOT}/`, "");
  const nm = u.lastIndexOf("node_modules/");
  return nm >= 0 ? u.slice(nm + "node_modules/".length) : u;
}

/** Self time by function (idle and GC included as their own entries), hottest first. */
export function hotSpots(profile: CpuProfile, top = 20): HotSpot[] {
  const totalMs = (profile.endTime - profile.startTime) / 1000;
  const samples = profile.samples?.length ?? 0;
  const perSample = samples > 0 ? totalMs / samples : 0;
  const byKey = new Map<string, HotSpot>();
  for (const n of profile.nodes) {
    const hits = n.hitCount ?? 0;
    if (hits === 0) continue;
    const fn = n.callFrame.functionName || "(anonymous)";
    const where = n.callFrame.url === "" ? "" : `${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
    const key = `${fn}@${where}`;
    const h = byKey.get(key) ?? { selfMs: 0, selfPct: 0, fn, where };
    h.selfMs += hits * perSample;
    byKey.set(key, h);
  }
  const list = [...byKey.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, top);
  for (const h of list) {
    h.selfPct = totalMs > 0 ? Math.round((h.selfMs / totalMs) * 1000) / 10 : 0;
    h.selfMs = Math.round(h.selfMs);
  }
  return list;
}

/** Self time aggregated by package or source folder, hottest first. */
export function hotPackages(profile: CpuProfile): { where: string; selfPct: number }[] {
  const totals = new Map<string, number>();
  let all = 0;
  for (const n of profile.nodes) {
    const hits = n.hitCount ?? 0;
    if (hits === 0) continue;
    all += hits;
    const u = shortUrl(n.callFrame.url);
    const where =
      u === ""
        ? n.callFrame.functionName || "(native)"
        : u.startsWith("@")
          ? u.split("/").slice(0, 2).join("/")
          : u.includes("/src/")
            ? u.slice(0, u.indexOf("/src/") + 5) + (u.slice(u.indexOf("/src/") + 5).split("/")[0] ?? "")
            : (u.split("/")[0] ?? u);
    totals.set(where, (totals.get(where) ?? 0) + hits);
  }
  return [...totals]
    .map(([where, hits]) => ({ where, selfPct: Math.round((hits / Math.max(1, all)) * 1000) / 10 }))
    .sort((a, b) => b.selfPct - a.selfPct)
    .slice(0, 15);
}
