/**
 * Section 4: many executor sessions. The scheduler runs in a child process (so its RSS and CPU
 * are its own) as the container image runs it: the JavaScript compiled by scripts/build-dist.mjs
 * (built once per bench run into .cache/bench-dist), `node entrypoint.mjs scheduler` with the
 * image's NODE_ENV (and, as the image, no NODE_OPTIONS), after `entrypoint.mjs migrate` (MIGRATE_ON_START=false, as
 * deployed); sessions-child.ts, preloaded, answers samples. 200 executors attach from this
 * process, each on its own connection. Measured with no sessions, with 200 idle sessions
 * (heartbeats and pings only), and with 10% of them busy: 20 executors of one slot each whose
 * 100 ms tasks are kept coming by a closed loop, so each of the 20 always has a task running or
 * queued. Each window says what the RSS is made of (V8 heap, young generation, external memory,
 * anonymous vs file-backed pages).
 */
import { fork, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createLogger, jsonToValue } from "@nexusflow/common";
import ts from "typescript";
import { Executor } from "@nexusflow/executor";
import { WorkflowService } from "@nexusflow/gen";
import { scaled } from "../lib/cli.js";
import type { BenchContext } from "./context.js";
import { ROOT } from "../lib/machine.js";
import { workflowSpec } from "../systems/nexusflow.js";
import { pollUntil } from "../systems/types.js";

/** Sessions attached. */
export const SESSIONS = 200;
/** Share of them that is busy. */
export const BUSY_SHARE = 0.1;
/** Duration of one busy task, ms. */
export const BUSY_TASK_MS = 100;

/** What sessions-child.ts answers, plus the sessions attached when it was taken. */
interface Sample {
  at: number;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  youngGeneration: number;
  external: number;
  arrayBuffers: number;
  smaps?: { anonymous: number; fileBacked: number; sharedClean: number };
  cpu: { user: number; system: number };
  sessions: number;
}

/** RSS and CPU of the scheduler over one window; the memory figures at its end. */
export interface SessionWindow {
  sessions: number;
  busy: number;
  seconds: number;
  rssMiB: number;
  heapUsedMiB: number;
  /** V8 heap reserved (heapTotal), young generation included. */
  heapTotalMiB: number;
  /** The young generation's semi-spaces (V8's new_space size), part of heapTotal. */
  youngGenerationMiB: number;
  /** Memory of C++ objects tied to JS objects (Buffers included), outside the V8 heap. */
  externalMiB: number;
  /** ArrayBuffers and Buffers, part of external. */
  arrayBuffersMiB: number;
  /** Anonymous pages of the RSS (heap, malloc, stacks): /proc/self/smaps_rollup; null elsewhere. */
  anonymousMiB: number | null;
  /** File-backed pages of the RSS (the node binary's code and data, shared libraries); null elsewhere. */
  fileBackedMiB: number | null;
  /** Percent of one core. */
  cpuPercent: number;
  tasksPerSecond: number;
}

/** Result of section 4. */
export interface SessionsResult {
  /** How the scheduler was run (the compiled build, as the image runs it). */
  scheduler: string;
  heartbeatIntervalMs: number;
  busyTaskMs: number;
  baseline: SessionWindow;
  idle: SessionWindow;
  busy: SessionWindow;
}

class Child {
  private waiters: ((m: Record<string, unknown>) => void)[] = [];
  constructor(
    readonly process: ChildProcess,
    private readonly sessions: () => number,
  ) {
    process.on("message", (m: Record<string, unknown>) => this.waiters.shift()?.(m));
  }
  private next(): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("the scheduler child did not answer")), 60_000);
      this.waiters.push((m) => {
        clearTimeout(t);
        resolve(m);
      });
    });
  }
  async sample(): Promise<Sample> {
    const answer = this.next();
    this.process.send({ type: "sample" });
    return { ...((await answer) as unknown as Omit<Sample, "sessions">), sessions: this.sessions() };
  }
}

const mib = (bytes: number): number => Math.round((bytes / 2 ** 20) * 10) / 10;

function windowOf(a: Sample, b: Sample, busy: number, tasks: number): SessionWindow {
  const wallMs = b.at - a.at;
  const cpuMs = (b.cpu.user - a.cpu.user + b.cpu.system - a.cpu.system) / 1000;
  return {
    sessions: b.sessions,
    busy,
    seconds: Math.round(wallMs / 100) / 10,
    rssMiB: mib(b.rss),
    heapUsedMiB: mib(b.heapUsed),
    heapTotalMiB: mib(b.heapTotal),
    youngGenerationMiB: mib(b.youngGeneration),
    externalMiB: mib(b.external),
    arrayBuffersMiB: mib(b.arrayBuffers),
    anonymousMiB: b.smaps === undefined ? null : mib(b.smaps.anonymous),
    fileBackedMiB: b.smaps === undefined ? null : mib(b.smaps.fileBacked),
    cpuPercent: Math.round((cpuMs / wallMs) * 1000) / 10,
    tasksPerSecond: Math.round((tasks / wallMs) * 1000),
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Where the bench builds the services (inside the checkout, so that their node_modules resolve). */
export const BENCH_DIST = join(ROOT, ".cache", "bench-dist");
let built: Promise<void> | undefined;

/** Runs `node ...args` (this process's Node); rejects with the end of its output when it fails. */
async function runNode(args: string[], env: NodeJS.ProcessEnv, what: string): Promise<void> {
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => (output += c));
  child.stderr.setEncoding("utf8").on("data", (c: string) => (output += c));
  const [code, signal] = (await once(child, "exit")) as [number | null, string | null];
  if (code !== 0) throw new Error(`${what} exited with ${code ?? signal}: ${output.slice(-2000)}`);
}

/** The probe preloaded into the scheduler: sessions-child.ts compiled beside the build. */
const PROBE = join(BENCH_DIST, "sessions-child.mjs");

/**
 * Compiles the services as the Dockerfile's build stage does, once per bench run, and the probe
 * with them: preloading the .ts itself would have Node load its TypeScript stripper (a WebAssembly
 * module) into the scheduler, ~9 MiB of RSS that a deployed scheduler does not have.
 */
function compiledServices(): Promise<void> {
  built ??= (async () => {
    await runNode(
      [join(ROOT, "scripts", "build-dist.mjs"), "--out", BENCH_DIST, "--link-node-modules"],
      process.env,
      "scripts/build-dist.mjs",
    );
    const source = await readFile(join(ROOT, "bench", "sessions-child.ts"), "utf8");
    const js = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    });
    await writeFile(PROBE, js.outputText);
  })();
  return built;
}

/**
 * The scheduler's environment: the image's Node settings (Dockerfile) and the bench's database;
 * metrics served (on a free port, not scraped) with --metrics, as the image's default has them.
 */
function serviceEnv(databaseUrl: string, dataDir: string, metrics: boolean): NodeJS.ProcessEnv {
  return {
    PATH: process.env["PATH"] ?? "",
    NODE_ENV: "production",
    // No NODE_OPTIONS, as the image (entrypoint.mjs maps Nexusflow's own code, not node_modules).
    NEXUSFLOW_DATA_DIR: dataDir,
    HEALTH_PORT: "0",
    DATABASE_URL: databaseUrl,
    MIGRATE_ON_START: "false",
    AUTH_DISABLED: "true",
    SCHEDULER_PORT: "0",
    METRICS_PORT: metrics ? "0" : "off",
    LOG_LEVEL: "info",
  };
}

/**
 * Starts `entrypoint.mjs scheduler` from the build with sessions-child.ts preloaded; resolves
 * with the process and the address it logs once listening. Its error and fatal lines are passed on.
 */
async function startScheduler(env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; address: string }> {
  const child = fork(join(BENCH_DIST, "entrypoint.mjs"), ["scheduler"], {
    cwd: env["NEXUSFLOW_DATA_DIR"],
    env,
    execArgv: ["--import", pathToFileURL(PROBE).href],
    stdio: ["ignore", "pipe", "pipe", "ipc"],
  });
  const output: string[] = [];
  let listening: ((address: string) => void) | undefined;
  let buffered = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    for (const line of lines) {
      output.push(line);
      if (output.length > 50) output.shift();
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (entry["msg"] === "scheduler listening") listening?.(String(entry["address"]));
      if (typeof entry["level"] === "number" && entry["level"] >= 50) process.stderr.write(`${line}\n`);
    }
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => process.stderr.write(chunk));
  try {
    const address = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("the scheduler did not listen within 60 s")), 60_000);
      listening = (a) => {
        clearTimeout(t);
        resolve(a);
      };
      child.once("exit", (code) => {
        clearTimeout(t);
        reject(new Error(`the scheduler exited with ${code}: ${output.join("\n")}`));
      });
    });
    return { child, address };
  } catch (e) {
    child.kill("SIGKILL");
    throw e;
  }
}

/** Runs section 4. */
export async function sessionsSection(ctx: BenchContext): Promise<SessionsResult> {
  const sessions = scaled(SESSIONS, ctx.options.scale, 10);
  const busyCount = Math.max(1, Math.round(sessions * BUSY_SHARE));
  const windowMs = Math.max(1000, 10_000 * ctx.options.scale);
  const settleMs = Math.max(300, 2000 * Math.min(1, ctx.options.scale * 2));
  ctx.note("  building the services (scripts/build-dist.mjs), as the image does");
  await compiledServices();
  const db = await ctx.freshDatabase("nf_sessions");
  const dataDir = await mkdtemp(join(tmpdir(), "nf-bench-sessions-"));
  const env = serviceEnv(db.url, dataDir, ctx.options.metrics);
  await runNode([join(BENCH_DIST, "entrypoint.mjs"), "migrate"], env, "entrypoint.mjs migrate");
  const started = await startScheduler(env).catch(async (e: unknown) => {
    await rm(dataDir, { recursive: true, force: true });
    throw e;
  });
  const executors: Executor[] = [];
  const child = new Child(started.child, () => executors.filter((e) => e.sessionId !== undefined).length);
  const address = started.address;
  let looping = true;
  let completed = 0;
  try {
    const client = createClient(WorkflowService, createGrpcTransport({ baseUrl: `http://${address}` }));
    await client.registerWorkflow({
      definition: {
        case: "specJson",
        value: workflowSpec("bench-busy", [{ id: "only", type: "bench-busy", input: { i: 0 } }]),
      },
    });
    await sleep(settleMs);
    ctx.note(`  baseline: 0 sessions, ${windowMs} ms`);
    const b0 = await child.sample();
    await sleep(windowMs);
    const b1 = await child.sample();

    const logger = createLogger("executor", "warn");
    const startOne = (): void => {
      client.startRun({ workflowName: "bench-busy", input: jsonToValue({}) }).catch(() => undefined);
    };
    for (let e = 0; e < sessions; e++) {
      const busy = e < busyCount;
      const executor = new Executor({
        schedulerAddress: address,
        executorId: `bench-session-${e}`,
        slots: 1,
        logger,
        builtins: false,
        // One connection per executor, as separate processes would have.
        channelOptions: { "grpc.use_local_subchannel_pool": 1 },
      });
      if (busy) {
        executor.register("bench-busy", async () => {
          await sleep(BUSY_TASK_MS);
          completed++;
          if (looping) startOne();
          return null;
        });
      } else {
        executor.register("bench-idle", () => null);
      }
      executors.push(executor);
    }
    ctx.note(`  attaching ${sessions} sessions`);
    await Promise.all(executors.map((e) => e.start()));
    await pollUntil(
      "sessions attached",
      async () => (await child.sample()).sessions >= sessions,
      60_000,
      100,
    );
    await sleep(settleMs);
    ctx.note(`  idle: ${sessions} sessions, ${windowMs} ms`);
    const i0 = await child.sample();
    await sleep(windowMs);
    const i1 = await child.sample();

    // Two tasks per busy session in flight: one running, one queued behind it.
    for (let k = 0; k < busyCount * 2; k++) startOne();
    await sleep(settleMs);
    ctx.note(`  busy: ${busyCount} of ${sessions} sessions busy, ${windowMs} ms`);
    const c0 = completed;
    const w0 = await child.sample();
    await sleep(windowMs);
    const w1 = await child.sample();
    const c1 = completed;
    looping = false;
    return {
      scheduler: `compiled (scripts/build-dist.mjs): node entrypoint.mjs scheduler (source maps of its own code), metrics ${ctx.options.metrics ? "on" : "off"}`,
      heartbeatIntervalMs: 2000,
      busyTaskMs: BUSY_TASK_MS,
      baseline: windowOf(b0, b1, 0, 0),
      idle: windowOf(i0, i1, 0, 0),
      busy: windowOf(w0, w1, busyCount, c1 - c0),
    };
  } finally {
    looping = false;
    await Promise.all(executors.map((e) => e.stop("bench done")));
    if (child.process.connected) {
      child.process.send({ type: "stop" });
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          child.process.kill("SIGKILL");
          resolve();
        }, 15_000);
        child.process.once("exit", () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    await rm(dataDir, { recursive: true, force: true });
  }
}
