/**
 * Section 4: many executor sessions. The scheduler runs in a child process (so its RSS and CPU
 * are its own); 200 executors attach from this process, each on its own connection. Measured with
 * no sessions, with 200 idle sessions (heartbeats and pings only), and with 10% of them busy: 20
 * executors of one slot each whose 100 ms tasks are kept coming by a closed loop, so each of the
 * 20 always has a task running or queued.
 */
import { fork, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createLogger, jsonToValue } from "@nexusflow/common";
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

interface Sample {
  at: number;
  rss: number;
  heapUsed: number;
  cpu: { user: number; system: number };
  sessions: number;
}

/** RSS and CPU of the scheduler over one window. */
export interface SessionWindow {
  sessions: number;
  busy: number;
  seconds: number;
  rssMiB: number;
  heapUsedMiB: number;
  /** Percent of one core. */
  cpuPercent: number;
  tasksPerSecond: number;
}

/** Result of section 4. */
export interface SessionsResult {
  heartbeatIntervalMs: number;
  busyTaskMs: number;
  baseline: SessionWindow;
  idle: SessionWindow;
  busy: SessionWindow;
}

class Child {
  private waiters: ((m: Record<string, unknown>) => void)[] = [];
  constructor(readonly process: ChildProcess) {
    process.on("message", (m: Record<string, unknown>) => this.waiters.shift()?.(m));
  }
  next(): Promise<Record<string, unknown>> {
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
    return (await answer) as unknown as Sample;
  }
}

function windowOf(a: Sample, b: Sample, busy: number, tasks: number): SessionWindow {
  const wallMs = b.at - a.at;
  const cpuMs = (b.cpu.user - a.cpu.user + b.cpu.system - a.cpu.system) / 1000;
  return {
    sessions: b.sessions,
    busy,
    seconds: Math.round(wallMs / 100) / 10,
    rssMiB: Math.round((b.rss / 2 ** 20) * 10) / 10,
    heapUsedMiB: Math.round((b.heapUsed / 2 ** 20) * 10) / 10,
    cpuPercent: Math.round((cpuMs / wallMs) * 1000) / 10,
    tasksPerSecond: Math.round((tasks / wallMs) * 1000),
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs section 4. */
export async function sessionsSection(ctx: BenchContext): Promise<SessionsResult> {
  const sessions = scaled(SESSIONS, ctx.options.scale, 10);
  const busyCount = Math.max(1, Math.round(sessions * BUSY_SHARE));
  const windowMs = Math.max(1000, 10_000 * ctx.options.scale);
  const settleMs = Math.max(300, 2000 * Math.min(1, ctx.options.scale * 2));
  const db = await ctx.freshDatabase("nf_sessions");
  const child = new Child(
    fork(join(ROOT, "bench", "sessions-child.ts"), [db.url], {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    }),
  );
  const executors: Executor[] = [];
  let looping = true;
  let completed = 0;
  try {
    const ready = await child.next();
    const address = String(ready["address"]);
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
  }
}
