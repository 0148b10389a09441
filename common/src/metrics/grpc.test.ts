import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Registry } from "prom-client";
import { json, jsonMethod, serveOnLoopback, type Serving } from "../grpc-test-support.js";
import { waitFor } from "../testing.js";
import { grpcServerMetrics, meterServerHandlers } from "./grpc.js";

const method = (name: string, responseStream: boolean, originalName?: string) =>
  jsonMethod("test.v1.Echo", name, responseStream, originalName);

const ECHO: grpc.ServiceDefinition = {
  Say: method("Say", false, "say"),
  Fail: method("Fail", false),
  Throw: method("Throw", false),
  Wait: method("Wait", false),
  Explode: method("Explode", false),
  Count: method("Count", true),
  Break: method("Break", true),
  Hang: method("Hang", true),
};

/** Handlers written as a class, as some implementations are: `this` must be the implementation. */
class Echo {
  readonly prefix = "echo:";
  waiting: (() => void) | undefined;

  // Found by its original (camelCase) name, as grpc-js finds it.
  say(call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>): void {
    const trailer = new grpc.Metadata();
    trailer.set("x-by", "say");
    callback(null, { said: `${this.prefix}${JSON.stringify(call.request)}` }, trailer);
  }

  Fail(_call: unknown, callback: grpc.sendUnaryData<unknown>): void {
    callback({ code: grpc.status.NOT_FOUND, details: "none" });
  }

  Throw(_call: unknown, callback: grpc.sendUnaryData<unknown>): void {
    callback(new Error("no code"));
  }

  /** Answers, with an error of its own, only once the client has cancelled. */
  Wait(call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>): void {
    call.once("cancelled", () => callback({ code: grpc.status.ABORTED, details: "gave up" }));
    this.waiting?.();
  }

  /** Throws instead of answering: grpc-js answers UNKNOWN. */
  Explode(): void {
    throw new Error("exploded");
  }

  Count(call: grpc.ServerWritableStream<unknown, unknown>): void {
    call.write({ n: 1 });
    call.end();
  }

  Break(call: grpc.ServerWritableStream<unknown, unknown>): void {
    call.write({ n: 1 });
    call.emit("error", { code: grpc.status.FAILED_PRECONDITION, details: "broken" });
  }

  /** Never ends: the client cancels it. */
  Hang(call: grpc.ServerWritableStream<unknown, unknown>): void {
    call.write({ n: 1 });
  }
}

for (const variant of ["handlers", "interceptor"] as const) {
  describe(`gRPC server call durations (${variant})`, () => {
    const registry = new Registry();
    const echo = new Echo();
    let server: grpc.Server;
    let client: grpc.Client;
    let serving: Serving;

    before(async () => {
      server = new grpc.Server(
        variant === "interceptor" ? { interceptors: [grpcServerMetrics(registry)] } : {},
      );
      if (variant === "handlers") meterServerHandlers(server, registry);
      server.addService(ECHO, echo as unknown as grpc.UntypedServiceImplementation);
      serving = await serveOnLoopback(server);
      client = serving.client;
    });

    after(() => serving.close());

    async function count(name: string, code: string): Promise<number> {
      const metric = await registry.getSingleMetric("nexusflow_grpc_server_duration_seconds")?.get();
      const sample = metric?.values.find(
        (v) =>
          (v as { metricName?: string }).metricName === "nexusflow_grpc_server_duration_seconds_count" &&
          v.labels["method"] === `test.v1.Echo/${name}` &&
          v.labels["code"] === code,
      );
      return sample?.value ?? 0;
    }

    async function codes(name: string): Promise<string[]> {
      const metric = await registry.getSingleMetric("nexusflow_grpc_server_duration_seconds")?.get();
      return (metric?.values ?? [])
        .filter(
          (v) =>
            (v as { metricName?: string }).metricName === "nexusflow_grpc_server_duration_seconds_count" &&
            v.labels["method"] === `test.v1.Echo/${name}`,
        )
        .map((v) => `${v.labels["code"]}=${v.value}`);
    }

    function unary(name: string): { call: grpc.ClientUnaryCall; answer: Promise<grpc.ServiceError | null> } {
      let call: grpc.ClientUnaryCall | undefined;
      const answer = new Promise<grpc.ServiceError | null>((resolve) => {
        call = client.makeUnaryRequest(
          `/test.v1.Echo/${name}`,
          json.serialize,
          json.deserialize,
          { a: 1 },
          (error) => resolve(error),
        );
      });
      return { call: call!, answer };
    }

    function stream(name: string): grpc.ClientReadableStream<unknown> {
      return client.makeServerStreamRequest(`/test.v1.Echo/${name}`, json.serialize, json.deserialize, {});
    }

    it("measures unary calls by method and code, the handlers called as the implementation's methods", async () => {
      const said = await new Promise<{ value: unknown; trailer: grpc.Metadata | undefined }>(
        (resolve, reject) => {
          let value: unknown;
          const call = client.makeUnaryRequest(
            "/test.v1.Echo/Say",
            json.serialize,
            json.deserialize,
            { a: 1 },
            (e, v) => (e ? reject(e) : (value = v)),
          );
          call.on("status", (status: grpc.StatusObject) =>
            setImmediate(() => resolve({ value, trailer: status.metadata })),
          );
        },
      );
      assert.deepEqual(said.value, { said: 'echo:{"a":1}' });
      assert.deepEqual(said.trailer?.get("x-by"), ["say"]);
      assert.equal((await unary("Fail").answer)?.code, grpc.status.NOT_FOUND);
      assert.equal((await unary("Throw").answer)?.code, grpc.status.UNKNOWN);
      assert.equal((await unary("Explode").answer)?.code, grpc.status.UNKNOWN);
      assert.deepEqual(await codes("Say"), ["OK=1"]);
      assert.deepEqual(await codes("Fail"), ["NOT_FOUND=1"]);
      assert.deepEqual(await codes("Throw"), ["UNKNOWN=1"]);
      assert.deepEqual(await codes("Explode"), ["UNKNOWN=1"]);
    });

    it("measures a unary call the client cancelled as CANCELLED, once, whatever its handler answered", async () => {
      const waiting = new Promise<void>((resolve) => (echo.waiting = resolve));
      const { call, answer } = unary("Wait");
      await waiting;
      call.cancel();
      assert.equal((await answer)?.code, grpc.status.CANCELLED);
      await waitFor("the cancelled call measured", async () =>
        (await count("Wait", "CANCELLED")) === 1 ? true : undefined,
      );
      assert.deepEqual(await codes("Wait"), ["CANCELLED=1"]);
    });

    it("measures streams at their end: OK, the handler's error once, a cancellation", async () => {
      const ok = stream("Count");
      ok.on("data", () => undefined);
      await once(ok, "status");
      const broken = stream("Break");
      broken.on("data", () => undefined);
      const [error] = (await once(broken, "error")) as [grpc.ServiceError];
      assert.equal(error.code, grpc.status.FAILED_PRECONDITION);
      const hanging = stream("Hang");
      await once(hanging, "data");
      hanging.on("error", () => undefined);
      hanging.cancel();
      await waitFor("the three streams measured", async () =>
        (await count("Count", "OK")) === 1 &&
        (await count("Break", "FAILED_PRECONDITION")) === 1 &&
        (await count("Hang", "CANCELLED")) === 1
          ? true
          : undefined,
      );
      assert.deepEqual(await codes("Count"), ["OK=1"]);
      assert.deepEqual(await codes("Break"), ["FAILED_PRECONDITION=1"]);
      assert.deepEqual(await codes("Hang"), ["CANCELLED=1"]);
    });
  });
}
