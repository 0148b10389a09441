/**
 * In-process CPU profiling with the inspector: a .cpuprofile per phase (open it in Chrome DevTools
 * or speedscope) and a summary of the hottest functions by self time.
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
}

/** A running profile; `stop()` writes it and returns its summary. */
export interface Profiling {
  stop(): Promise<ProfileSummary>;
}

/** Starts profiling this process; the profile is written to `file` on stop. */
export async function startProfile(file: string, intervalUs = 200): Promise<Profiling> {
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: intervalUs });
  await session.post("Profiler.start");
  return {
    async stop() {
      const { profile } = (await session.post("Profiler.stop")) as unknown as { profile: CpuProfile };
      session.disconnect();
      await writeFile(file, JSON.stringify(profile));
      return { file, functions: hotSpots(profile), packages: hotPackages(profile) };
    },
  };
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
