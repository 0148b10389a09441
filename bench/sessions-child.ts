/**
 * Section 4's probe inside the scheduler process. sections/sessions.ts starts the scheduler as the
 * container image does, `node entrypoint.mjs scheduler` on the JavaScript compiled by
 * scripts/build-dist.mjs (no tsx, no TypeScript compiler in the process), and preloads this module
 * with `--import`, compiled to JavaScript beside the build (not Node's own type stripping, whose
 * WebAssembly would add ~9 MiB to what is measured). It answers the bench's "sample" messages over IPC
 * with the process's memory and CPU, and on "stop" (or when the bench goes away) sends the process
 * the SIGTERM a deployment would. It imports only `node:` modules, so it adds next to nothing to
 * what it measures.
 */
import { readFileSync } from "node:fs";
import { getHeapSpaceStatistics } from "node:v8";

/** A message from the bench. */
type Command = { type: "sample" } | { type: "stop" };

/** Bytes of the lines of /proc/self/smaps_rollup that say what the RSS is made of, or undefined. */
function smapsRollup(): { anonymous: number; fileBacked: number; sharedClean: number } | undefined {
  let text: string;
  try {
    text = readFileSync("/proc/self/smaps_rollup", "utf8");
  } catch {
    return undefined; // not Linux, or a kernel before 4.14
  }
  const kb = (field: string): number => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
    return m?.[1] === undefined ? 0 : Number(m[1]) * 1024;
  };
  const anonymous = kb("Anonymous");
  return { anonymous, fileBacked: kb("Rss") - anonymous, sharedClean: kb("Shared_Clean") };
}

const send = process.send?.bind(process);
if (send === undefined) {
  process.stderr.write("sessions-child: preloaded by the bench into a scheduler with an IPC channel\n");
  process.exit(2);
}
let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  process.kill(process.pid, "SIGTERM");
};
// The bench went away (crash, Ctrl-C): stop too, rather than outlive it.
process.once("disconnect", stop);
process.on("message", (m: Command) => {
  if (m.type === "stop") {
    stop();
    return;
  }
  const mem = process.memoryUsage();
  const young = getHeapSpaceStatistics().find((s) => s.space_name === "new_space");
  send({
    type: "sample",
    at: performance.now() + performance.timeOrigin,
    rss: mem.rss,
    heapUsed: mem.heapUsed,
    heapTotal: mem.heapTotal,
    youngGeneration: young?.space_size ?? 0,
    external: mem.external,
    arrayBuffers: mem.arrayBuffers,
    smaps: smapsRollup(),
    cpu: process.cpuUsage(),
  });
});
