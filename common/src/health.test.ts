import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  type HealthCheckRequest,
  ServingStatus,
  addHealthService,
  healthServiceDefinition,
  sharedReadiness,
} from "./health.js";

/** A promise with its resolve, for a check that answers when the test says. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe("sharedReadiness", () => {
  it("runs one evaluation for any number of callers at once, and reuses its answer while fresh", async () => {
    let runs = 0;
    const answer = deferred<string | undefined>();
    const ready = sharedReadiness(() => {
      runs++;
      return answer.promise;
    }, 60_000);
    const calls = Array.from({ length: 500 }, () => ready());
    assert.equal(runs, 1);
    answer.resolve("PostgreSQL did not answer within 2 s");
    assert.deepEqual(new Set(await Promise.all(calls)), new Set(["PostgreSQL did not answer within 2 s"]));
    assert.equal(await ready(), "PostgreSQL did not answer within 2 s");
    assert.equal(runs, 1);
  });

  it("evaluates again once the answer is older than maxAgeMs, and turns a thrown error into a reason", async () => {
    let runs = 0;
    const ready = sharedReadiness(() => {
      runs++;
      return runs === 1 ? Promise.reject(new Error("pool ended")) : Promise.resolve(undefined);
    }, 0);
    assert.equal(await ready(), "pool ended");
    assert.equal(await ready(), undefined);
    assert.equal(runs, 2);
  });
});

describe("the health service's Watch calls", () => {
  let server: grpc.Server;
  let client: grpc.Client;
  let evaluations = 0;

  before(async () => {
    server = new grpc.Server();
    addHealthService(server, {
      ready: sharedReadiness(() => {
        evaluations++;
        return Promise.resolve(undefined);
      }, 60_000),
      services: [],
      maxWatches: 3,
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e === null ? resolve(p) : reject(e),
      ),
    );
    client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await new Promise<void>((resolve) => (server ? server.tryShutdown(() => resolve()) : resolve()));
  });

  /** Opens a Watch; resolves with the call and its first status, or the error that ended it first. */
  function watch(): Promise<{
    call: grpc.ClientReadableStream<ServingStatus>;
    first?: ServingStatus;
    error?: grpc.ServiceError;
  }> {
    const m = healthServiceDefinition.watch;
    const call = client.makeServerStreamRequest<HealthCheckRequest, ServingStatus>(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      { service: "" },
    );
    return new Promise((resolve) => {
      call.once("data", (first: ServingStatus) => resolve({ call, first }));
      call.once("error", (error: grpc.ServiceError) => resolve({ call, error }));
    });
  }

  it("refuses Watch calls above maxWatches RESOURCE_EXHAUSTED, and takes one again once one closes", async () => {
    const open = [await watch(), await watch(), await watch()];
    for (const w of open) assert.equal(w.first, ServingStatus.SERVING);
    // Three streams, one evaluation of the readiness they share.
    assert.equal(evaluations, 1);
    const refused = await watch();
    assert.equal(refused.error?.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(refused.error?.details ?? "", /3 health Watch calls are open/);

    open[0]?.call.on("error", () => undefined);
    open[0]?.call.cancel();
    // The server learns of the cancel after a round trip: asked again until it has.
    let again = await watch();
    for (let i = 0; again.error?.code === grpc.status.RESOURCE_EXHAUSTED && i < 500; i++) {
      await new Promise((r) => setImmediate(r));
      again = await watch();
    }
    assert.equal(again.first, ServingStatus.SERVING);
    for (const w of [...open.slice(1), again]) {
      w.call.on("error", () => undefined);
      w.call.cancel();
    }
  });
});
