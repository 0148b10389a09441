/**
 * Worker-thread entry: the client that calls StartRun, on its own event loop, as the application
 * calling Nexusflow would be its own process. It runs the harness's closed loop (pre-load) and open
 * loop (fixed schedule) and records actual send times into shared memory on the parent's clock.
 *
 * Like the executors' host, the thread serves phase after phase with warm code: `connect` points its
 * client at the phase's scheduler (reply `started`), `disconnect` closes it (reply `stopped`).
 * Messages from the parent: {@link ProducerCommand}. Replies: `{ kind: "ready" }` once loaded, then
 * one per command (`done`, with `errors` and `firstError?`, for the loops).
 */
import { randomBytes } from "node:crypto";
import { parentPort, workerData } from "node:worker_threads";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { clientConstructor, jsonToValue } from "@nexusflow/common";
import {
  RunView,
  StartRunRequestSchema,
  WorkflowService,
  type StartRunRequest,
  type StartRunResponse,
} from "@nexusflow/gen";
import { watchGcPauses } from "../lib/gc-pauses.js";
import { closedLoop, openLoop, type OpenLoopResult } from "../lib/loops.js";
import type { WorkerHostData } from "./types.js";

/** Commands of the parent. */
export type ProducerCommand =
  | { kind: "connect"; schedulerAddress: string; workflowName: string }
  | { kind: "disconnect" }
  | {
      kind: "closed";
      n: number;
      concurrency: number;
      /**
       * Each StartRun carries a `traceparent` header (a new trace each), sampled for every
       * `sampledEvery`-th run and not for the others (0: none sampled), as a traced caller's
       * decision reaches the scheduler; unset, no header.
       */
      sampledEvery?: number;
    }
  | { kind: "open"; n: number; rate: number; t0: number; sentAt: Float64Array };

const port = parentPort;
if (port === null) throw new Error("producer-host.ts runs as a worker thread");
const data = workerData as WorkerHostData;
const offset = performance.timeOrigin - data.parentTimeOrigin;
/** Now, on the parent's clock. */
const now = (): number => offset + performance.now();
// @grpc/grpc-js, as the executor uses: per call it costs this thread about two thirds of the CPU of
// Connect's gRPC transport (0.27 vs 0.40 ms at 1,000 calls/s here), and this thread shares the
// machine with the scheduler.
const WorkflowClient = clientConstructor(WorkflowService);
type StartRunCall = (
  request: StartRunRequest,
  metadata: grpc.Metadata,
  callback: (error: grpc.ServiceError | null, response?: StartRunResponse) => void,
) => grpc.ClientUnaryCall;
let connection: { client: grpc.Client; workflowName: string; startRun: StartRunCall } | undefined;

function connect(schedulerAddress: string, workflowName: string): void {
  connection?.client.close();
  const client = new WorkflowClient(schedulerAddress, grpc.credentials.createInsecure());
  const startRun = (client as unknown as { startRun: StartRunCall }).startRun.bind(client);
  connection = { client, workflowName, startRun };
}

/** A `traceparent` of a new trace, sampled or not. */
function newTraceparent(sampled: boolean): string {
  return `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-${sampled ? "01" : "00"}`;
}

function startRun(i: number, sampledEvery?: number): Promise<void> {
  const current = connection;
  if (current === undefined) return Promise.reject(new Error("the producer is not connected"));
  // A producer needs only the run's id: the BASIC view leaves the input and tasks out of the answer.
  const request = create(StartRunRequestSchema, {
    workflowName: current.workflowName,
    input: jsonToValue({ i }),
    view: RunView.BASIC,
  });
  const metadata = new grpc.Metadata();
  if (sampledEvery !== undefined)
    metadata.set("traceparent", newTraceparent(sampledEvery > 0 && i % sampledEvery === 0));
  return new Promise((resolve, reject) => {
    current.startRun(request, metadata, (error) => (error === null ? resolve() : reject(error)));
  });
}

port.on("message", (command: ProducerCommand) => {
  if (command.kind === "connect" || command.kind === "disconnect") {
    if (command.kind === "connect") connect(command.schedulerAddress, command.workflowName);
    else {
      connection?.client.close();
      connection = undefined;
    }
    port.postMessage({ kind: command.kind === "connect" ? "started" : "stopped" });
    return;
  }
  // This thread's collections during the loop (they delay sends: counted as send lag).
  const gc = watchGcPauses();
  const run: Promise<OpenLoopResult> =
    command.kind === "closed"
      ? countFailures((send) => closedLoop(command.n, command.concurrency, send), command.sampledEvery)
      : openLoop(command.n, (k) => command.t0 + (k * 1000) / command.rate, now, startRun, command.sentAt);
  run.then(
    (result) => port.postMessage({ kind: "done", ...result, gc: gc.stop() }),
    (e: unknown) => port.postMessage({ kind: "done", errors: -1, firstError: String(e) }),
  );
});

/** Runs a closed loop of StartRun calls, counting failures instead of stopping at the first. */
async function countFailures(
  loop: (send: (i: number) => Promise<void>) => Promise<void>,
  sampledEvery?: number,
): Promise<OpenLoopResult> {
  let errors = 0;
  let firstError: string | undefined;
  await loop((i) =>
    startRun(i, sampledEvery).catch((e: unknown) => {
      errors++;
      firstError ??= e instanceof Error ? e.message : String(e);
    }),
  );
  return { errors, ...(firstError === undefined ? {} : { firstError }) };
}
port.postMessage({ kind: "ready" });
