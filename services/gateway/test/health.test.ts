/**
 * grpc.health.v1.Health on the gateway's port, called over real gRPC by grpc-js (the client
 * grpc_health_probe and the kubelet's gRPC probe resemble: plain HTTP/2, no token) and by grpcurl:
 * SERVING exactly while GET /readyz answers 200, NOT_SERVING otherwise, NOT_FOUND for an unknown
 * service, and Watch reporting each change and NOT_SERVING when the gateway drains.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createRouterTransport } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import {
  HEALTH_SERVICE,
  ServingStatus,
  checkGrpcHealth,
  createTokenVerifier,
  healthServiceDefinition,
} from "@nexusflow/common";
import { WorkflowService } from "@nexusflow/gen";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";
import { grpcurl, missingGrpcurl, tool } from "./tools.js";

/** A server-streaming Watch call by grpc-js: every status received, and how the call ended. */
class Watch {
  readonly statuses: ServingStatus[] = [];
  readonly ended: Promise<grpc.StatusObject>;
  readonly #call: grpc.ClientReadableStream<ServingStatus>;
  readonly #waiters: (() => void)[] = [];

  constructor(client: grpc.Client, service: string) {
    const m = healthServiceDefinition.watch;
    this.#call = client.makeServerStreamRequest(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      { service },
      new grpc.Metadata(),
      {},
    );
    this.#call.on("data", (s: ServingStatus) => {
      this.statuses.push(s);
      for (const w of this.#waiters.splice(0)) w();
    });
    this.#call.on("error", () => undefined);
    this.ended = new Promise((resolve) => this.#call.on("status", resolve));
  }

  /** Resolves once `n` statuses have arrived. */
  async received(n: number): Promise<ServingStatus[]> {
    while (this.statuses.length < n) await new Promise<void>((resolve) => this.#waiters.push(resolve));
    return this.statuses.slice(0, n);
  }

  cancel(): void {
    this.#call.cancel();
  }
}

describe("the gateway's grpc.health.v1.Health over gRPC", () => {
  let keys: TestKeys;
  let gateway: Gateway;
  let address: string;
  let url: string;
  let client: grpc.Client;
  /** The readiness the gateway is given (serve.ts: the scheduler's health). */
  let notReady: string | undefined;

  before(async () => {
    keys = await createTestKeys();
    gateway = createGateway({
      schedulerAddress: "127.0.0.1:1",
      transport: createRouterTransport(() => undefined),
      port: 0,
      // Authentication on: probes carry no token and must still be answered.
      verifier: await createTokenVerifier({
        publicKeyFiles: [keys.keys.ES256.jwkFile],
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
      ready: () => Promise.resolve(notReady),
      healthWatchIntervalMs: 20,
      drainTimeoutMs: 2000,
    });
    const listening = await gateway.listen();
    address = `127.0.0.1:${listening.port}`;
    url = listening.url;
    client = new grpc.Client(address, grpc.credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await gateway?.close();
    await keys?.close();
  });

  const readyz = async (): Promise<number> => (await fetch(`${url}/readyz`)).status;

  it("Check answers SERVING while /readyz is 200 and NOT_SERVING while it is 503, without a token", async () => {
    notReady = undefined;
    assert.equal(await checkGrpcHealth(address), ServingStatus.SERVING);
    assert.equal(await readyz(), 200);
    for (const service of [WorkflowService.typeName, "nexusflow.v1.ArtifactService"])
      assert.equal(await checkGrpcHealth(address, { service }), ServingStatus.SERVING, service);
    notReady = "the scheduler is not serving";
    assert.equal(await checkGrpcHealth(address), ServingStatus.NOT_SERVING);
    assert.equal(
      await checkGrpcHealth(address, { service: WorkflowService.typeName }),
      ServingStatus.NOT_SERVING,
    );
    assert.equal(await readyz(), 503);
    notReady = undefined;
    assert.equal(await checkGrpcHealth(address), ServingStatus.SERVING);
  });

  it("Check of an unknown service is NOT_FOUND", async () => {
    await assert.rejects(checkGrpcHealth(address, { service: "no.such.Service" }), (e: grpc.ServiceError) => {
      assert.equal(e.code, grpc.status.NOT_FOUND);
      assert.match(e.details, /unknown service "no\.such\.Service"/);
      return true;
    });
  });

  it("Watch sends the status at once and each change, and SERVICE_UNKNOWN for an unknown name", async () => {
    notReady = undefined;
    const watch = new Watch(client, "");
    assert.deepEqual(await watch.received(1), [ServingStatus.SERVING]);
    notReady = "the scheduler at 127.0.0.1:1 does not answer";
    assert.deepEqual(await watch.received(2), [ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
    notReady = undefined;
    assert.deepEqual(await watch.received(3), [
      ServingStatus.SERVING,
      ServingStatus.NOT_SERVING,
      ServingStatus.SERVING,
    ]);
    watch.cancel();
    assert.equal((await watch.ended).code, grpc.status.CANCELLED);

    const unknown = new Watch(client, "no.such.Service");
    assert.deepEqual(await unknown.received(1), [ServingStatus.SERVICE_UNKNOWN]);
    unknown.cancel();
    await unknown.ended;
  });

  it("grpcurl checks health through reflection, without a .proto", { timeout: 900_000 }, async (t) => {
    const bin = await grpcurl();
    const missing = missingGrpcurl(bin);
    if (missing !== undefined || bin === undefined) {
      t.skip(missing);
      return;
    }
    notReady = undefined;
    const list = await tool(bin, ["-plaintext", address, "list"]);
    assert.ok(list.split("\n").includes(HEALTH_SERVICE), list);
    const ok = await tool(bin, ["-plaintext", address, `${HEALTH_SERVICE}/Check`]);
    assert.deepEqual(JSON.parse(ok), { status: "SERVING" });
    const one = await tool(bin, [
      "-plaintext",
      "-d",
      JSON.stringify({ service: WorkflowService.typeName }),
      address,
      `${HEALTH_SERVICE}/Check`,
    ]);
    assert.deepEqual(JSON.parse(one), { status: "SERVING" });
    notReady = "the scheduler is not serving";
    const down = await tool(bin, ["-plaintext", address, `${HEALTH_SERVICE}/Check`]);
    assert.deepEqual(JSON.parse(down), { status: "NOT_SERVING" });
    notReady = undefined;
  });

  // Last: it closes the gateway.
  it("a Watch open when the gateway drains gets NOT_SERVING, then UNAVAILABLE", async () => {
    notReady = undefined;
    const watch = new Watch(client, "");
    assert.deepEqual(await watch.received(1), [ServingStatus.SERVING]);
    const closing = gateway.close();
    assert.deepEqual(await watch.received(2), [ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
    assert.equal((await watch.ended).code, grpc.status.UNAVAILABLE);
    await closing;
  });
});
