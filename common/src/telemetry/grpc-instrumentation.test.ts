import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { type SpanContext, SpanKind, SpanStatusCode, context, trace } from "@opentelemetry/api";
import { AlwaysOnSampler, ParentBasedSampler } from "@opentelemetry/sdk-trace";
import { json, jsonMethod, serveOnLoopback, type Serving } from "../grpc-test-support.js";
import { waitFor } from "../testing.js";
import { GrpcTracing } from "./grpc-instrumentation.js";
import { traceparentOf } from "./index.js";
import { type TestTracing, startTestTracing } from "./testing.js";

const method = (name: string, responseStream: boolean) => jsonMethod("test.v1.Echo", name, responseStream);

const ECHO: grpc.ServiceDefinition = {
  Say: method("Say", false),
  Fail: method("Fail", false),
  Ignored: method("Ignored", false),
  Count: method("Count", true),
  Zero: method("Zero", false),
  Hang: method("Hang", true),
};

/** What a handler saw: the `traceparent` of its active context. */
interface Seen {
  traceparent: string | undefined;
}

const TRACE_ID = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID = "b7ad6b7169203331";
const sampledParent = `00-${TRACE_ID}-${PARENT_ID}-01`;
const unsampledParent = `00-${TRACE_ID}-${PARENT_ID}-00`;

describe("GrpcTracing: the gRPC instrumentation's server side", () => {
  let tracing: TestTracing;
  let instrumentation: GrpcTracing;
  let server: grpc.Server;
  let client: grpc.Client;
  let serving: Serving;
  /** The module object the instrumentation patches (the server is real; the client side is not patched here). */
  const exportsObject = {
    Server: grpc.Server,
    Client: class {
      makeUnaryRequest(): void {}
      makeClientStreamRequest(): void {}
      makeServerStreamRequest(): void {}
      makeBidiStreamRequest(): void {}
    },
    makeGenericClientConstructor: grpc.makeGenericClientConstructor,
    makeClientConstructor: grpc.makeClientConstructor,
    loadPackageDefinition: grpc.loadPackageDefinition,
  };
  const seen: Seen[] = [];
  const active = (): void => {
    seen.push({ traceparent: traceparentOf(context.active()) });
  };

  before(async () => {
    tracing = await startTestTracing({ sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }) });
    instrumentation = new GrpcTracing({ enabled: false, ignoreGrpcMethods: ["Ignored"] });
    for (const definition of instrumentation.getModuleDefinitions()) definition.patch?.(exportsObject);
    server = new grpc.Server();
    server.addService(ECHO, {
      Say: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        active();
        // Asynchronously, as handlers answer: the context follows the promise.
        void Promise.resolve().then(() => {
          active();
          const trailer = new grpc.Metadata();
          trailer.set("x-answered-by", "say");
          callback(null, { echo: call.request }, trailer);
        });
      },
      Fail: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        callback({ code: grpc.status.NOT_FOUND, message: "no such thing", name: "NotFound" });
      },
      Ignored: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        active();
        callback(null, {});
      },
      // An "error" whose code is OK: grpc-js sends status OK.
      Zero: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        callback({ code: grpc.status.OK, message: "not an error", name: "Fine" }, {});
      },
      // Never ends: the client cancels it.
      Hang: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        call.write({ n: 1 });
      },
      Count: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        active();
        call.write({ n: 1 });
        call.write({ n: 2 });
        call.end();
      },
    });
    serving = await serveOnLoopback(server);
    client = serving.client;
  });

  after(async () => {
    await serving.close();
    for (const definition of instrumentation.getModuleDefinitions()) definition.unpatch?.(exportsObject);
    await tracing.stop();
  });

  function metadata(traceparent?: string): grpc.Metadata {
    const m = new grpc.Metadata();
    if (traceparent !== undefined) m.set("traceparent", traceparent);
    return m;
  }

  function unary(
    name: string,
    traceparent?: string,
  ): Promise<{ error: grpc.ServiceError | null; value: unknown; trailer: grpc.Metadata | undefined }> {
    return new Promise((resolve) => {
      let trailer: grpc.Metadata | undefined;
      let answer: { error: grpc.ServiceError | null; value: unknown } | undefined;
      const call = client.makeUnaryRequest(
        `/test.v1.Echo/${name}`,
        json.serialize,
        json.deserialize,
        { hello: name },
        metadata(traceparent),
        (error, value) => {
          answer = { error, value };
        },
      );
      call.on("status", (status: grpc.StatusObject) => {
        trailer = status.metadata;
        // The status event comes after the callback.
        setImmediate(() => resolve({ ...(answer ?? { error: null, value: undefined }), trailer }));
      });
    });
  }

  function spansNamed(name: string): ReturnType<TestTracing["spans"]> {
    return tracing.spans().filter((s) => s.name === name);
  }

  function sampledOf(traceparent: string | undefined): SpanContext | undefined {
    if (traceparent === undefined) return undefined;
    const [, traceId, spanId, flags] = traceparent.split("-");
    return { traceId: traceId!, spanId: spanId!, traceFlags: parseInt(flags!, 16) };
  }

  it("records a sampled unary call as a server span, child of the caller's, with RPC attributes; the handler runs in it and its trailer reaches the client", async () => {
    seen.length = 0;
    const { error, value, trailer } = await unary("Say", sampledParent);
    assert.equal(error, null);
    assert.deepEqual(value, { echo: { hello: "Say" } });
    assert.deepEqual(trailer?.get("x-answered-by"), ["say"]);
    const [span, ...more] = spansNamed("grpc.test.v1.Echo/Say");
    assert.ok(span);
    assert.equal(more.length, 0);
    assert.equal(span.kind, SpanKind.SERVER);
    assert.equal(span.spanContext().traceId, TRACE_ID);
    assert.equal(span.parentSpanContext?.spanId, PARENT_ID);
    assert.deepEqual(span.attributes, {
      "rpc.system": "grpc",
      "rpc.method": "Say",
      "rpc.service": "test.v1.Echo",
      "rpc.grpc.status_code": 0,
    });
    assert.equal(span.status.code, SpanStatusCode.UNSET);
    // Synchronously and after an await, the handler's active span is the call's.
    assert.equal(seen.length, 2);
    for (const s of seen) assert.equal(sampledOf(s.traceparent)?.spanId, span.spanContext().spanId);
  });

  it("records a failed call's status code, error name and message", async () => {
    const { error } = await unary("Fail", sampledParent);
    assert.equal(error?.code, grpc.status.NOT_FOUND);
    const [span] = spansNamed("grpc.test.v1.Echo/Fail");
    assert.ok(span);
    assert.equal(span.status.code, SpanStatusCode.ERROR);
    assert.equal(span.status.message, "no such thing");
    assert.equal(span.attributes["rpc.grpc.status_code"], grpc.status.NOT_FOUND);
    assert.equal(span.attributes["grpc.error_name"], "NotFound");
    assert.equal(span.attributes["grpc.error_message"], "no such thing");
  });

  it("runs an unsampled call's handler in the caller's trace, not sampled, and records no span", async () => {
    const before = tracing.spans().length;
    seen.length = 0;
    const { error, trailer } = await unary("Say", unsampledParent);
    assert.equal(error, null);
    assert.deepEqual(trailer?.get("x-answered-by"), ["say"]);
    assert.equal(tracing.spans().length, before);
    assert.equal(seen.length, 2);
    for (const s of seen) {
      const sc = sampledOf(s.traceparent);
      assert.equal(sc?.traceId, TRACE_ID, "the caller's trace propagates to what the call does");
      assert.notEqual(sc?.spanId, PARENT_ID, "the call has a span of its own (not recorded)");
      assert.equal(sc?.traceFlags, 0);
    }
    // An unsampled failure still reaches the client with its code.
    assert.equal((await unary("Fail", unsampledParent)).error?.code, grpc.status.NOT_FOUND);
  });

  it("starts a new trace for a call without a traceparent (the root sampler decides)", async () => {
    seen.length = 0;
    await unary("Say");
    const spans = spansNamed("grpc.test.v1.Echo/Say").filter((s) => s.parentSpanContext === undefined);
    assert.equal(spans.length, 1);
    assert.equal(sampledOf(seen[0]?.traceparent)?.traceId, spans[0]?.spanContext().traceId);
  });

  it("leaves ignored methods untraced", async () => {
    const before = tracing.spans().length;
    seen.length = 0;
    await unary("Ignored", sampledParent);
    assert.equal(tracing.spans().length, before);
    assert.deepEqual(seen, [{ traceparent: undefined }]);
  });

  it("ends a server stream's span when the stream finishes", async () => {
    for (const parent of [sampledParent, unsampledParent]) {
      seen.length = 0;
      const call = client.makeServerStreamRequest(
        "/test.v1.Echo/Count",
        json.serialize,
        json.deserialize,
        {},
        metadata(parent),
      );
      const got: unknown[] = [];
      call.on("data", (m: unknown) => got.push(m));
      await new Promise((resolve) => call.on("status", resolve));
      assert.deepEqual(got, [{ n: 1 }, { n: 2 }]);
      assert.equal(sampledOf(seen[0]?.traceparent)?.traceId, TRACE_ID);
    }
    const spans = spansNamed("grpc.test.v1.Echo/Count");
    assert.equal(spans.length, 1, "the unsampled stream records nothing");
    assert.equal(spans[0]?.attributes["rpc.grpc.status_code"], 0);
    assert.equal(spans[0]?.kind, SpanKind.SERVER);
    assert.equal(trace.getActiveSpan(), undefined);
  });

  it("does not mark a call answered with an OK-coded error as failed", async () => {
    // grpc-js sends status OK (with no message, which the client then reports as a failure of its own).
    await unary("Zero", sampledParent);
    const [span] = spansNamed("grpc.test.v1.Echo/Zero");
    assert.equal(span?.status.code, SpanStatusCode.UNSET);
    assert.equal(span?.attributes["rpc.grpc.status_code"], 0);
  });

  it("ends a server stream's span CANCELLED when the client cancels it", async () => {
    const call = client.makeServerStreamRequest(
      "/test.v1.Echo/Hang",
      json.serialize,
      json.deserialize,
      {},
      metadata(sampledParent),
    );
    call.on("error", () => undefined);
    await new Promise((resolve) => call.once("data", resolve));
    call.cancel();
    const span = await waitFor("the cancelled stream's span", () => spansNamed("grpc.test.v1.Echo/Hang")[0]);
    assert.equal(span.status.code, SpanStatusCode.ERROR);
    assert.equal(span.attributes["rpc.grpc.status_code"], grpc.status.CANCELLED);
    assert.equal(spansNamed("grpc.test.v1.Echo/Hang").length, 1);
  });
});
