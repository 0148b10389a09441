/**
 * The export thread of a service's spans (started by ./worker-span-processor.ts): it receives the
 * ended spans in batches, each an OTLP `ExportTraceServiceRequest` body already encoded by the
 * service's thread (./otlp-spans.ts), and sends each through the transport of the SDK's own
 * OTLP/HTTP protobuf exporter (its retries, timeout, compression and concurrency limit),
 * configured as the service's thread would configure that exporter (the URL and headers of the
 * telemetry configuration; the other `OTEL_EXPORTER_OTLP_*` variables from this thread's copy of
 * the environment). It answers each batch with `done` once it is sent or has failed, a `flush`
 * once every batch before it is done, and `shutdown` after the transport's own.
 */
import { parentPort, workerData } from "node:worker_threads";
import {
  convertLegacyHttpOptions,
  createOtlpHttpExportDelegate,
} from "@opentelemetry/otlp-exporter-base/node-http";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import type { EncodedSpans } from "./otlp-spans.js";

/** What the service's thread passes as `workerData`. */
export interface ExportWorkerData {
  url: string;
  headers: Record<string, string>;
  /** The longest one batch's export may take before it counts as failed, ms. */
  exportTimeoutMs: number;
}

/** A message to the export thread. */
export type ToExportWorker =
  ({ kind: "spans"; seq: number } & EncodedSpans) | { kind: "flush"; id: number } | { kind: "shutdown" };

/** A message from the export thread. */
export type FromExportWorker =
  | { kind: "done"; seq: number; ok: boolean; error?: string }
  | { kind: "flushed"; id: number }
  | { kind: "closed" };

const port = parentPort;
if (port === null) throw new Error("export-worker.ts runs in a worker thread");
const data = workerData as ExportWorkerData;
/** The OTLP/HTTP exporter's transport, given bodies already serialized. */
const exporter = createOtlpHttpExportDelegate<EncodedSpans, unknown>(
  convertLegacyHttpOptions({ url: data.url, headers: data.headers }, "TRACES", "v1/traces", {
    "Content-Type": "application/x-protobuf",
  }),
  {
    serializeRequest: (spans) => spans.body,
    deserializeResponse: (body) => ProtobufTraceSerializer.deserializeResponse(body),
  },
  // What the SDK's OTLPTraceExporter names itself (its own telemetry, off here: no meter provider).
  "otlp_http_span_exporter",
  { name: "span", countItems: (spans) => spans.count },
  undefined,
);
/**
 * Batches sent at once, at most; the others wait here (as many as the service's queue bound lets
 * through). The SDK's batch processor sends one at a time; two keep a slow collector's round trip
 * from halving the rate, and stay far below the exporter's own limit of concurrent requests.
 */
const MAX_CONCURRENT_EXPORTS = 2;
const waiting: { seq: number; spans: EncodedSpans }[] = [];
let exporting = 0;
let idle: (() => void)[] = [];

function post(message: FromExportWorker): void {
  port!.postMessage(message);
}

function exportBatch(seq: number, spans: EncodedSpans): Promise<void> {
  return new Promise<void>((resolve) => {
    let finished = false;
    const settle = (ok: boolean, error?: string): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      post(error === undefined ? { kind: "done", seq, ok } : { kind: "done", seq, ok, error });
      resolve();
    };
    const timer = setTimeout(
      () => settle(false, `export timed out after ${data.exportTimeoutMs} ms`),
      data.exportTimeoutMs,
    );
    try {
      exporter.export(spans, (result) =>
        // ExportResultCode.SUCCESS (@opentelemetry/core) is 0.
        settle((result.code as number) === 0, result.error?.message),
      );
    } catch (e) {
      settle(false, e instanceof Error ? e.message : String(e));
    }
  });
}

/** Starts the waiting batches' exports, up to the limit. */
function pump(): void {
  while (exporting < MAX_CONCURRENT_EXPORTS && waiting.length > 0) {
    const { seq, spans } = waiting.shift()!;
    exporting++;
    void exportBatch(seq, spans).then(() => {
      exporting--;
      pump();
    });
  }
  if (exporting === 0 && waiting.length === 0) {
    const waiters = idle;
    idle = [];
    for (const resolve of waiters) resolve();
  }
}

/** Resolves once every batch received so far is done. */
function settled(): Promise<void> {
  if (exporting === 0 && waiting.length === 0) return Promise.resolve();
  return new Promise<void>((resolve) => idle.push(resolve));
}

port.on("message", (message: ToExportWorker) => {
  switch (message.kind) {
    case "spans":
      waiting.push({ seq: message.seq, spans: message });
      pump();
      return;
    case "flush":
      void settled().then(() => post({ kind: "flushed", id: message.id }));
      return;
    case "shutdown":
      void settled()
        .then(() => exporter.shutdown())
        .catch(() => undefined)
        .then(() => {
          post({ kind: "closed" });
          port.close();
        });
      return;
  }
});
