import assert from "node:assert/strict";
import { once } from "node:events";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { type IncomingHttpHeaders, type ServerResponse, createServer } from "node:http";
import { type AddressInfo } from "node:net";
import { Worker } from "node:worker_threads";
import { after, before, describe, it } from "node:test";
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  createTraceState,
  trace,
  type Tracer,
} from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { BatchSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";
import { waitFor } from "../testing.js";
import { WorkerSpanProcessor, startExportWorker } from "./worker-span-processor.js";

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * An OTLP/HTTP receiver: keeps every request; answers at once unless `hold` is set, and refuses
 * (400) what is sent to /refuse.
 */
class Sink {
  readonly received: Received[] = [];
  hold = false;
  private held: ServerResponse[] = [];
  private readonly server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      this.received.push({ path: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks) });
      if (req.url === "/refuse") res.writeHead(400).end();
      else if (this.hold) this.held.push(res);
      else res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });

  async start(): Promise<string> {
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  release(): void {
    this.hold = false;
    for (const res of this.held.splice(0)) res.writeHead(200).end();
  }

  bodies(path: string): Buffer[] {
    return this.received.filter((r) => r.path === path).map((r) => r.body);
  }

  async stop(): Promise<void> {
    this.release();
    this.server.closeAllConnections();
    this.server.close();
    await once(this.server, "close");
  }
}

const PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c";

/** Spans using what OTLP carries: kinds, every attribute type, events, links, status, trace state. */
function makeSpans(tracer: Tracer, other: Tracer): void {
  const remote = trace.setSpanContext(ROOT_CONTEXT, {
    traceId: PARENT_TRACE,
    spanId: "b7ad6b7169203331",
    traceFlags: 1,
    isRemote: true,
    traceState: createTraceState("vendor=a,other=b"),
  });
  const root = tracer.startSpan(
    "run orders",
    {
      kind: SpanKind.SERVER,
      attributes: {
        "nexusflow.run_id": "r1",
        "nexusflow.attempt": 3,
        ratio: 0.25,
        ok: true,
        tags: ["a", "b"],
        counts: [1, 2, 3],
        flags: [true, false],
      },
      links: [
        {
          context: {
            traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
            spanId: "00f067aa0ba902b7",
            traceFlags: 1,
            isRemote: true,
            traceState: createTraceState("k=v"),
          },
          attributes: { why: "rerun" },
        },
      ],
    },
    remote,
  );
  root.addEvent("started", { "nexusflow.attempt": 1 });
  root.addEvent("bare");
  const child = other.startSpan(
    "attempt charge",
    { kind: SpanKind.CLIENT, attributes: { a1: "x", a2: "y", a3: "z", a4: "dropped" } },
    trace.setSpan(ROOT_CONTEXT, root),
  );
  child.recordException(new Error("card declined"));
  child.setStatus({ code: SpanStatusCode.ERROR, message: "card declined" });
  child.end();
  const local = tracer.startSpan("local root", { kind: SpanKind.INTERNAL });
  local.setStatus({ code: SpanStatusCode.OK });
  local.end();
  root.end();
}

describe("WorkerSpanProcessor", () => {
  const sink = new Sink();
  let base = "";
  before(async () => {
    base = await sink.start();
  });
  after(() => sink.stop());

  it("sends the same OTLP bytes as the SDK's batch processor and exporter, with the headers", async () => {
    const worker = new WorkerSpanProcessor({
      url: `${base}/worker`,
      headers: { "x-api-key": "secret" },
    });
    const provider = new TracerProvider({
      // Small limits, so that the dropped counts are sent too.
      spanLimits: { attributeCountLimit: 7 },
      spanProcessors: [
        new BatchSpanProcessor({
          exporter: new OTLPTraceExporter({ url: `${base}/sdk`, headers: { "x-api-key": "secret" } }),
        }),
        worker,
      ],
    });
    makeSpans(provider.getTracer("nexusflow-scheduler", "1.2.3"), provider.getTracer("other"));
    await provider.forceFlush();
    makeSpans(provider.getTracer("nexusflow-scheduler", "1.2.3"), provider.getTracer("other"));
    await provider.shutdown();

    const sdk = sink.bodies("/sdk");
    const ours = sink.bodies("/worker");
    assert.equal(sdk.length, 2);
    assert.equal(ours.length, 2);
    for (let i = 0; i < 2; i++) assert.ok(ours[i]!.equals(sdk[i]!), `export ${i} differs`);
    // Not two empty bodies: the spans, their trace, a link's trace state, an event, a status.
    const body = ours[0]!;
    for (const part of ["run orders", "attempt charge", "local root", "vendor=a,other=b", "k=v"])
      assert.ok(body.includes(part), part);
    for (const part of ["started", "exception", "card declined", "nexusflow-scheduler", "1.2.3"])
      assert.ok(body.includes(part), part);
    assert.ok(body.includes(Buffer.from(PARENT_TRACE, "hex")));
    const request = sink.received.find((r) => r.path === "/worker")!;
    assert.equal(request.headers["x-api-key"], "secret");
    assert.equal(request.headers["content-type"], "application/x-protobuf");
    assert.deepEqual(worker.exportCounts, { exported: 6, failed: 0, dropped: 0 });
  });

  it("drops spans past its queue, counted and warned, and sends the rest", async () => {
    sink.hold = true;
    const warnings: Record<string, unknown>[] = [];
    const worker = new WorkerSpanProcessor({
      url: `${base}/full`,
      maxQueueSize: 4,
      maxExportBatchSize: 2,
      warn: (message, fields) => warnings.push({ message, ...fields }),
    });
    const provider = new TracerProvider({ spanProcessors: [worker] });
    const tracer = provider.getTracer("t");
    // Two batches of two handed over, held unanswered by the receiver: the queue is full.
    for (let i = 0; i < 4; i++) tracer.startSpan(`kept ${i}`).end();
    await waitFor("both batches reach the receiver", () =>
      sink.bodies("/full").length === 2 ? true : undefined,
    );
    for (let i = 0; i < 3; i++) tracer.startSpan(`dropped ${i}`).end();
    assert.equal(worker.exportCounts.dropped, 3);
    assert.equal(warnings.length, 1);
    assert.match(String(warnings[0]!["message"]), /trace export queue full \(4 spans\): 1 spans dropped/);
    sink.release();
    await waitFor("the held batches are done", () => (worker.exportCounts.exported === 4 ? true : undefined));
    tracer.startSpan("after").end();
    await provider.shutdown();
    assert.deepEqual(worker.exportCounts, { exported: 5, failed: 0, dropped: 3 });
    // The drops not warned of yet are at shutdown.
    assert.equal(warnings.at(-1)!["dropped_spans"], 2);
    const all = Buffer.concat(sink.bodies("/full"));
    assert.ok(all.includes("after") && all.includes("kept 3") && !all.includes("dropped"));
  });

  it("outlives a failing export thread: its spans are counted, a new thread sends the next", async () => {
    const warnings: string[] = [];
    let started = 0;
    const worker = new WorkerSpanProcessor({
      url: `${base}/crash`,
      warn: (message) => warnings.push(message),
      // The first thread dies on its first batch; the next is the real one.
      startThread: (data, name) =>
        ++started === 1
          ? new Worker(
              `require("node:worker_threads").parentPort.on("message", () => { throw new Error("boom"); });`,
              { eval: true },
            )
          : startExportWorker(data, name),
    });
    const provider = new TracerProvider({ spanProcessors: [worker] });
    const tracer = provider.getTracer("t");
    tracer.startSpan("lost").end();
    await provider.forceFlush();
    await waitFor("the thread's failure is seen", () =>
      worker.exportCounts.failed === 1 ? true : undefined,
    );
    assert.match(warnings[0] ?? "", /trace export thread failed/);
    tracer.startSpan("sent").end();
    await provider.shutdown();
    assert.equal(started, 2);
    assert.deepEqual(worker.exportCounts, { exported: 1, failed: 1, dropped: 0 });
    assert.ok(Buffer.concat(sink.bodies("/crash")).includes("sent"));
  });

  it(
    "names its export thread, as the operating system shows it",
    { skip: !existsSync("/proc/self/task") },
    async () => {
      const worker = new WorkerSpanProcessor({ url: `${base}/named`, threadName: "otlp-named" });
      const names = (): string[] =>
        readdirSync("/proc/self/task").map((t) => {
          try {
            return readFileSync(`/proc/self/task/${t}/comm`, "utf8").trim();
          } catch {
            return ""; // the thread ended meanwhile
          }
        });
      await waitFor("the export thread runs under its name", () =>
        names().includes("otlp-named") ? true : undefined,
      );
      await worker.shutdown();
    },
  );

  it("counts a batch it cannot assemble as failed, warns, and goes on", async () => {
    const warnings: string[] = [];
    const worker = new WorkerSpanProcessor({ url: `${base}/assemble`, warn: (m) => warnings.push(m) });
    const provider = new TracerProvider({ spanProcessors: [worker] });
    const tracer = provider.getTracer("t");
    // The buffer's assembly of a batch fails once (as an allocation would), at the flush below.
    const buffer = (worker as unknown as { buffer: { take: (max: number) => unknown } }).buffer;
    const take = buffer.take.bind(buffer);
    buffer.take = () => {
      buffer.take = take;
      throw new RangeError("Array buffer allocation failed");
    };
    tracer.startSpan("lost").end();
    await provider.forceFlush();
    assert.match(warnings[0] ?? "", /a batch could not be assembled .*1 spans are lost/);
    tracer.startSpan("sent").end();
    await provider.shutdown();
    assert.deepEqual(worker.exportCounts, { exported: 1, failed: 1, dropped: 0 });
    const all = Buffer.concat(sink.bodies("/assemble"));
    assert.ok(all.includes("sent") && !all.includes("lost"));
  });

  it("counts an export the receiver refuses as failed", async () => {
    const worker = new WorkerSpanProcessor({ url: `${base}/refuse` });
    const provider = new TracerProvider({ spanProcessors: [worker] });
    provider.getTracer("t").startSpan("nowhere").end();
    await provider.shutdown();
    assert.deepEqual(worker.exportCounts, { exported: 0, failed: 1, dropped: 0 });
  });
});
