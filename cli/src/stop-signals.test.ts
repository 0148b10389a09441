/**
 * Ctrl-C of `nexusflow dev`: one Ctrl-C delivered twice (terminal and npm) stops the stack
 * cleanly; a second Ctrl-C later still kills everything at once. The real stack runs as a child.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { devStateFile, readDevState } from "./dev-state.js";
import { REPEAT_WINDOW_MS, stopSignalHandler } from "./stop-signals.js";

const BIN = join(dirname(fileURLToPath(import.meta.url)), "bin.mjs");
const T = { timeout: 240_000 };

describe("stopSignalHandler", () => {
  it("ignores repeats within the window and forces after it", () => {
    let clock = 0;
    const calls: string[] = [];
    const handle = stopSignalHandler({
      onStop: (s) => calls.push(`stop ${s}`),
      onForce: (s) => calls.push(`force ${s}`),
      now: () => clock,
    });
    handle("SIGINT");
    clock = REPEAT_WINDOW_MS - 1;
    handle("SIGINT");
    assert.deepEqual(calls, ["stop SIGINT"]);
    clock = REPEAT_WINDOW_MS;
    handle("SIGINT");
    assert.deepEqual(calls, ["stop SIGINT", "force SIGINT"]);
  });
});

/** A running `nexusflow dev` with its output collected. */
interface Dev {
  child: ChildProcess;
  output(): string;
  /** Resolves when the output contains `text`. */
  waitFor(text: string): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startDev(dataDir: string): Dev {
  // The stack as `npm start` runs it on a fresh machine: embedded PostgreSQL and filesystem storage,
  // whatever services the test run itself was given (test:all sets S3_ENDPOINT and KAFKA_BROKERS).
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^(NEXUSFLOW_|AUTH_|S3_|KAFKA_|DATABASE_URL$)/.test(k)),
  );
  const child = spawn(process.execPath, [BIN, "dev"], {
    env: {
      ...base,
      NO_COLOR: "1",
      NEXUSFLOW_DATA_DIR: dataDir,
      GATEWAY_PORT: "0",
      SCHEDULER_PORT: "0",
      // The stack's state file (dev-state.ts) goes here, not where a developer's stack keeps its own.
      XDG_RUNTIME_DIR: join(dataDir, "runtime"),
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let text = "";
  const waiters = new Set<() => void>();
  for (const stream of [child.stdout, child.stderr]) {
    stream.setEncoding("utf8").on("data", (chunk: string) => {
      text += chunk;
      for (const w of waiters) w();
    });
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    output: () => text,
    exited,
    waitFor: (wanted) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (!text.includes(wanted)) return;
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        void exited.then(() => {
          waiters.delete(check);
          if (!text.includes(wanted)) reject(new Error(`exited before "${wanted}":\n${text}`));
        });
        check();
      }),
  };
}

/** Pids of processes whose environment names `dataDir` (every service and its PostgreSQL). */
function processesOf(dataDir: string): number[] {
  const marker = `NEXUSFLOW_DATA_DIR=${dataDir}\0`;
  return readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/environ`, "latin1").includes(marker);
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** The parent pid of `pid` (from /proc/<pid>/stat; the command may hold spaces and parentheses). */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return undefined;
  }
}

/** Waits (polling) until no process of `dataDir` is left; returns what is left at the deadline. */
async function leftovers(dataDir: string): Promise<number[]> {
  const deadline = Date.now() + 15_000;
  let left = processesOf(dataDir);
  while (left.length > 0 && Date.now() < deadline) {
    await delay(50);
    left = processesOf(dataDir);
  }
  return left;
}

const linux = process.platform === "linux" ? {} : { skip: "reads /proc" };

describe("nexusflow dev and Ctrl-C", { ...T, ...linux }, () => {
  it("stops cleanly when one Ctrl-C arrives twice at once (terminal and npm)", T, async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "nf-dev-sigint-"));
    const dev = startDev(dataDir);
    try {
      await dev.waitFor("Press Ctrl-C to stop.");
      // While it runs, it says where its data is, for `nexusflow token` in other directories.
      const stateEnv = { XDG_RUNTIME_DIR: join(dataDir, "runtime") };
      const state = await readDevState(stateEnv);
      assert.deepEqual(
        { ...state, gatewayUrl: "", schedulerAddress: "" },
        {
          dataDir,
          gatewayUrl: "",
          pid: dev.child.pid,
          schedulerAddress: "",
          artifactsDir: join(dataDir, "artifacts"),
        },
      );
      assert.match(state?.gatewayUrl ?? "", /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.match(state?.schedulerAddress ?? "", /^127\.0\.0\.1:\d+$/);
      assert.match(
        dev.output(),
        /NEXUSFLOW_TOKEN=\$\(npm --prefix \S+ exec -- nexusflow token --scope admin/,
      );
      dev.child.kill("SIGINT");
      dev.child.kill("SIGINT");
      const exit = await dev.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, dev.output());
      assert.match(dev.output(), /\[scheduler\] scheduler stopped/);
      assert.match(dev.output(), /\nStopped\.\n/);
      assert.equal(existsSync(join(dataDir, "postgres", "postmaster.pid")), false, "stale postmaster.pid");
      assert.deepEqual(await leftovers(dataDir), []);
      assert.equal(existsSync(devStateFile(stateEnv)), false, "the state file is removed");
    } finally {
      dev.child.kill("SIGKILL");
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("still kills everything at once on a second Ctrl-C after the window", T, async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "nf-dev-sigint-"));
    const dev = startDev(dataDir);
    try {
      await dev.waitFor("Press Ctrl-C to stop.");
      // Frozen services cannot stop in order: only the second Ctrl-C can end the stack.
      const services = processesOf(dataDir).filter((pid) => parentOf(pid) === dev.child.pid);
      assert.equal(services.length, 4, `expected 4 services, got ${services.length}`);
      for (const pid of services) process.kill(pid, "SIGSTOP");
      const first = performance.now();
      dev.child.kill("SIGINT");
      await dev.waitFor("SIGINT: stopping");
      // A person's second Ctrl-C: the window itself is what is being tested, so wait it out.
      await delay(Math.max(0, REPEAT_WINDOW_MS + 50 - (performance.now() - first)));
      dev.child.kill("SIGINT");
      const exit = await dev.exited;
      assert.deepEqual(exit, { code: 130, signal: null }, dev.output());
      assert.doesNotMatch(dev.output(), /\nStopped\.\n/);
      assert.deepEqual(await leftovers(dataDir), []);
    } finally {
      dev.child.kill("SIGKILL");
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
