/**
 * Tracing in the benchmark (`--tracing RATIO`): the scheduler (this thread) and the executors
 * (their worker thread) export spans over OTLP/HTTP to a sink in its own process, as a deployment
 * exports to a collector on another machine; the sink discards them. {@link startBenchTracing} is
 * called by bench/start.ts before the services' modules are imported, since the gRPC, HTTP and pg
 * instrumentations patch modules as they load.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { shutdownTelemetry, startTelemetry, type TelemetryConfig } from "@nexusflow/common/telemetry";

/** What the sink received. */
export interface SinkStats {
  /** OTLP export requests (each a batch of spans). */
  requests: number;
  /** Bytes of their bodies. */
  bytes: number;
  /** Requests by the exporting service's name (`nexusflow-scheduler`, `nexusflow-executor`). */
  services: Record<string, number>;
  /** Spans received by name (its first word: `attempt`, not `attempt s1`). */
  spans: Record<string, number>;
}

/** Tracing of this run, once started. */
export interface BenchTracing {
  /** The configuration the worker threads start their own telemetry with. */
  config: TelemetryConfig;
  stats(): Promise<SinkStats>;
  stop(): Promise<void>;
}

let current: BenchTracing | undefined;

/** Tracing of this run, if `--tracing` started it. */
export function benchTracing(): BenchTracing | undefined {
  return current;
}

/** Starts the sink and this thread's telemetry, sampling `ratio` of new traces. */
export async function startBenchTracing(ratio: number): Promise<BenchTracing> {
  if (current !== undefined) return current;
  const sink = await startSink();
  const config: TelemetryConfig = {
    tracesUrl: `http://127.0.0.1:${sink.port}/v1/traces`,
    serviceName: "nexusflow-scheduler",
    sampleRatio: ratio,
    headers: {},
  };
  await startTelemetry(config);
  current = {
    config,
    stats: () => sink.stats(),
    stop: async () => {
      current = undefined;
      await shutdownTelemetry();
      await sink.stop();
    },
  };
  return current;
}

async function startSink(): Promise<{ port: number; stats(): Promise<SinkStats>; stop(): Promise<void> }> {
  const child: ChildProcess = spawn(
    process.execPath,
    [fileURLToPath(new URL("./trace-sink-child.mjs", import.meta.url))],
    { stdio: ["ignore", "pipe", "inherit", "ipc"] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.once("error", reject);
    child.once("exit", (code) =>
      reject(new Error(`trace sink exited with ${String(code)} before listening`)),
    );
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const m = /listening (\d+)/.exec(out);
      if (m !== null) resolve(Number(m[1]));
    });
  });
  child.removeAllListeners("exit");
  child.removeAllListeners("error");
  return {
    port,
    stats: async () => {
      const reply = once(child, "message") as Promise<[SinkStats]>;
      child.send("stats");
      const [stats] = await reply;
      return stats;
    },
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = once(child, "exit");
      child.send("stop");
      await exited;
    },
  };
}
