/**
 * Worker-thread entry: Nexusflow executors running outside the scheduler's event loop, as they do
 * in a deployment (executors are their own processes). The handler records its start time into the
 * recorder's shared arrays, on the main thread's clock.
 *
 * The thread is spawned (and its modules loaded) before the clock runs; `{ kind: "start" }` then
 * attaches the executors. Messages from the parent: `start`, `{ kind: "recorder", starts, counts }`
 * (after every reset) and `{ kind: "stop", reason }`. Messages to the parent: `ready`, `started`,
 * `stopped`, `{ kind: "error", message }`.
 */
import { parentPort, workerData } from "node:worker_threads";
import { createLogger } from "@nexusflow/common";
import { Executor } from "@nexusflow/executor";
import { recordStart } from "./types.js";

/** What the parent passes as `workerData`. */
export interface ExecutorHostData {
  /** This module, for the bootstrap (worker.mjs). */
  module: string;
  schedulerAddress: string;
  taskType: string;
  executors: number;
  slots: number;
  /** The parent's `performance.timeOrigin`: starts are recorded on its clock. */
  parentTimeOrigin: number;
  starts: Float64Array;
  counts: Int32Array;
}

/** Messages a host accepts. */
export type ExecutorHostMessage =
  | { kind: "start" }
  | { kind: "recorder"; starts: Float64Array; counts: Int32Array }
  | { kind: "stop"; reason: string };

const port = parentPort;
if (port === null) throw new Error("executor-host.ts runs as a worker thread");
const data = workerData as ExecutorHostData;
let starts = data.starts;
let counts = data.counts;
const offset = performance.timeOrigin - data.parentTimeOrigin;
const logger = createLogger("executor", "warn");
const executors: Executor[] = [];
for (let e = 0; e < data.executors; e++) {
  const executor = new Executor({
    schedulerAddress: data.schedulerAddress,
    executorId: `bench-executor-${e}`,
    slots: data.slots,
    logger,
    builtins: false,
  });
  executor.register(data.taskType, (input: { i: number }) => {
    recordStart(starts, counts, input.i, offset + performance.now());
    Atomics.add(counts, 1, 1);
    return null;
  });
  executors.push(executor);
}

port.on("message", (message: ExecutorHostMessage) => {
  if (message.kind === "recorder") {
    starts = message.starts;
    counts = message.counts;
    return;
  }
  if (message.kind === "start") {
    Promise.all(executors.map((e) => e.start())).then(
      () => port.postMessage({ kind: "started" }),
      (e: unknown) => port.postMessage({ kind: "error", message: String(e) }),
    );
    return;
  }
  Promise.all(executors.map((e) => e.stop(message.reason))).then(
    () => {
      port.postMessage({ kind: "stopped" });
      port.close();
    },
    (e: unknown) => port.postMessage({ kind: "error", message: String(e) }),
  );
});

port.postMessage({ kind: "ready" });
