/**
 * Preloaded (`--import`) into every service the dev stack starts: when the CLI that started the
 * process disappears without stopping it (SIGKILL, crash), the service gets SIGTERM and shuts
 * down as usual instead of lingering; if it is still there after a grace period, its process
 * group (the dev stack makes each service a group leader) gets SIGKILL.
 *
 * The watch runs in a worker thread because a service whose stdout reader is gone can block its
 * main thread for good: pino's synchronous flush at exit retries a write that fails with EPIPE
 * (sonic-boom 4.2 `flushSync`), so timers of the main thread would never fire.
 * A re-parented process sees a different `process.ppid`.
 */
import { Worker, isMainThread } from "node:worker_threads";

const CHECK_INTERVAL_MS = 1000;
const KILL_AFTER_MS = 10_000;

const WATCH = `
const { workerData } = require("node:worker_threads");
const { parent, pid, checkIntervalMs, killAfterMs } = workerData;
const timer = setInterval(() => {
  if (process.ppid === parent) return;
  clearInterval(timer);
  try { process.kill(pid, "SIGTERM"); } catch {}
  setTimeout(() => {
    try { process.kill(-pid, "SIGKILL"); } catch { try { process.kill(pid, "SIGKILL"); } catch {} }
  }, killAfterMs);
}, checkIntervalMs);
`;

if (isMainThread) {
  const worker = new Worker(WATCH, {
    eval: true,
    // Not the service's flags: they would load tsx and this module again inside the worker.
    execArgv: [],
    workerData: {
      parent: process.ppid,
      pid: process.pid,
      checkIntervalMs: CHECK_INTERVAL_MS,
      killAfterMs: KILL_AFTER_MS,
    },
  });
  // The watch must never keep a service alive, nor crash it.
  worker.unref();
  worker.on("error", () => undefined);
}
