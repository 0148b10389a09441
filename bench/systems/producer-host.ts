/**
 * Worker-thread entry: the client that calls StartRun, on its own event loop, as the application
 * calling Nexusflow would be its own process. It runs the harness's closed loop (pre-load) and open
 * loop (fixed schedule) and records actual send times into shared memory on the parent's clock.
 *
 * Messages from the parent: {@link ProducerCommand}. Replies: `{ kind: "ready" }` once loaded, then
 * `{ kind: "done", errors, firstError? }` per command.
 */
import { parentPort, workerData } from "node:worker_threads";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue } from "@nexusflow/common";
import { WorkflowService } from "@nexusflow/gen";

/** What the parent passes as `workerData`. */
export interface ProducerHostData {
  /** This module, for the bootstrap (worker.mjs). */
  module: string;
  schedulerAddress: string;
  workflowName: string;
  /** The parent's `performance.timeOrigin`: times are exchanged on its clock. */
  parentTimeOrigin: number;
}

/** Commands of the parent. */
export type ProducerCommand =
  | { kind: "closed"; n: number; concurrency: number }
  | { kind: "open"; n: number; rate: number; t0: number; sentAt: Float64Array };

const port = parentPort;
if (port === null) throw new Error("producer-host.ts runs as a worker thread");
const data = workerData as ProducerHostData;
const offset = performance.timeOrigin - data.parentTimeOrigin;
/** Now, on the parent's clock. */
const now = (): number => offset + performance.now();
const client = createClient(
  WorkflowService,
  createGrpcTransport({ baseUrl: `http://${data.schedulerAddress}` }),
);
let errors = 0;
let firstError: string | undefined;

function startRun(i: number): Promise<void> {
  return client.startRun({ workflowName: data.workflowName, input: jsonToValue({ i }) }).then(
    () => undefined,
    (e: unknown) => {
      errors++;
      firstError ??= e instanceof Error ? e.message : String(e);
    },
  );
}

async function closedLoop(n: number, concurrency: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) await startRun(next++);
    }),
  );
}

/** Sends run i at `t0 + i / rate` (parent clock) whether or not earlier calls answered. */
async function openLoop(n: number, rate: number, t0: number, sentAt: Float64Array): Promise<void> {
  const pending: Promise<void>[] = [];
  const intended = (k: number): number => t0 + (k * 1000) / rate;
  let i = 0;
  while (i < n) {
    const t = now();
    while (i < n && intended(i) <= t) {
      sentAt[i] = now();
      pending.push(startRun(i));
      i++;
    }
    if (i < n) await new Promise((r) => setTimeout(r, Math.max(0, Math.floor(intended(i) - now()))));
  }
  await Promise.all(pending);
}

port.on("message", (command: ProducerCommand) => {
  errors = 0;
  firstError = undefined;
  const run =
    command.kind === "closed"
      ? closedLoop(command.n, command.concurrency)
      : openLoop(command.n, command.rate, command.t0, command.sentAt);
  run.then(
    () => port.postMessage({ kind: "done", errors, ...(firstError === undefined ? {} : { firstError }) }),
    (e: unknown) => port.postMessage({ kind: "done", errors: -1, firstError: String(e) }),
  );
});
port.postMessage({ kind: "ready" });
