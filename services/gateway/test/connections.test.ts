/**
 * How the gateway treats connections and streams that go quiet or away: a REST server stream with
 * nothing to send yet still answers 200 with its headers; an h2c REST client that resets its stream
 * cancels the upstream call and gives its stream slot back; an HTTP/1.1 request whose headers never
 * end has its connection closed after `headersTimeoutMs`; a stream whose client keeps its side open
 * (grpcurl's reflection stream) is reset once answered, and holds no drain open.
 */
import assert from "node:assert/strict";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createClient,
  createRouterTransport,
} from "@connectrpc/connect";
import { Http2SessionManager, connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { createTokenVerifier } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";
import { RunStatus, WorkflowService } from "@nexusflow/gen";
import { ServerReflection } from "../src/gen/grpc/reflection/v1/reflection_pb.js";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";

const T = { timeout: 20_000 };

describe("a REST server stream that is quiet at first", () => {
  let gateway: Gateway;
  let url: string;
  before(async () => {
    gateway = createGateway({
      schedulerAddress: "127.0.0.1:1",
      port: 0,
      drainTimeoutMs: 500,
      transport: createRouterTransport((router) =>
        router.service(WorkflowService, {
          // A run with no change to report yet (or `logs --follow` of a step that logged nothing).
          // eslint-disable-next-line require-yield -- a stream that never sends
          async *watchRun(_req, ctx) {
            await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
          },
        }),
      ),
    });
    ({ url } = await gateway.listen());
  });
  after(() => gateway.close());

  it("sends 200 and its headers before any message", T, async () => {
    const req = http.get(`${url}/v1/runs/quiet:watch`);
    req.on("error", () => undefined);
    const status = await new Promise<number | undefined>((resolve) =>
      req.once("response", (res) => resolve(res.statusCode)),
    );
    req.destroy();
    assert.equal(status, 200);
  });
});

describe("an h2c REST client that goes away", () => {
  const upstreamAborted = new Set<string>();
  let upstream: http2.Http2Server;
  let gateway: Gateway;
  let url: string;
  let keys: TestKeys;
  before(async () => {
    const routes = (router: ConnectRouter): void => {
      router.service(WorkflowService, {
        async *watchRun(req, ctx) {
          yield { run: { id: req.runId, status: RunStatus.RUNNING } };
          await new Promise<void>((resolve) =>
            ctx.signal.aborted ? resolve() : ctx.signal.addEventListener("abort", () => resolve()),
          );
          upstreamAborted.add(req.runId);
        },
      });
    };
    upstream = http2.createServer({}, connectNodeAdapter({ routes }));
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    keys = await createTestKeys();
    gateway = createGateway({
      schedulerAddress: `127.0.0.1:${(upstream.address() as AddressInfo).port}`,
      port: 0,
      drainTimeoutMs: 500,
      maxStreamsPerClient: 2,
      verifier: await createTokenVerifier({
        publicKeyFiles: [keys.keys.EdDSA.jwkFile],
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
    });
    ({ url } = await gateway.listen());
  });
  after(async () => {
    await gateway.close();
    upstream.close();
    await keys.close();
  });

  /** Opens a REST watch over h2c; once it answered (and sent a line when 200), `cancel` resets it. */
  async function watch(token: string, runId: string): Promise<{ status: number; cancel: () => void }> {
    const session = http2.connect(url);
    session.on("error", () => undefined);
    const stream = session.request({ ":path": `/v1/runs/${runId}:watch`, authorization: `Bearer ${token}` });
    stream.on("error", () => undefined);
    const status = await new Promise<number>((resolve) =>
      stream.once("response", (h) => resolve(Number(h[":status"]))),
    );
    if (status === 200) await new Promise((resolve) => stream.once("data", resolve));
    const cancel = (): void => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      session.close();
    };
    if (status !== 200) cancel();
    return { status, cancel };
  }

  it("cancels the upstream WatchRun and gives the stream slot back", T, async () => {
    const token = await keys.sign(keys.keys.EdDSA, { sub: "carol", scope: "runs:read" });
    for (const id of ["h2-1", "h2-2"]) {
      const w = await watch(token, id);
      assert.equal(w.status, 200);
      w.cancel();
    }
    await waitFor(
      "the upstream streams cancelled",
      () => upstreamAborted.has("h2-1") && upstreamAborted.has("h2-2"),
    );
    // Two slots (maxStreamsPerClient), both given back: a third stream is let in.
    let third = 0;
    await waitFor("a third stream let in", async () => {
      const w = await watch(token, "h2-3");
      w.cancel();
      third = w.status;
      return third === 200;
    });
    assert.equal(third, 200);
  });
});

describe("an HTTP/1.1 request whose headers never end", () => {
  let gateway: Gateway;
  let port: number;
  before(async () => {
    gateway = createGateway({
      schedulerAddress: "127.0.0.1:1",
      transport: createRouterTransport(() => undefined),
      port: 0,
      drainTimeoutMs: 500,
      headersTimeoutMs: 300,
    });
    ({ port } = await gateway.listen());
  });
  after(() => gateway.close());

  it("has its connection closed after headersTimeoutMs", T, async () => {
    const socket = net.connect(port, "127.0.0.1");
    socket.on("error", () => undefined);
    await new Promise((resolve) => socket.once("connect", resolve));
    const closed = new Promise((resolve) => socket.once("close", resolve));
    socket.write("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    await closed;
    assert.equal(socket.destroyed, true);
  });
});

describe("a request larger as protobuf than as JSON", () => {
  let starts = 0;
  let upstream: http2.Http2Server;
  let gateway: Gateway;
  let url: string;
  before(async () => {
    const routes = (router: ConnectRouter): void => {
      router.service(WorkflowService, {
        startRun() {
          starts++;
          return {};
        },
      });
    };
    upstream = http2.createServer({}, connectNodeAdapter({ routes }));
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    gateway = createGateway({
      schedulerAddress: `127.0.0.1:${(upstream.address() as AddressInfo).port}`,
      port: 0,
      drainTimeoutMs: 500,
    });
    ({ url } = await gateway.listen());
  });
  after(async () => {
    await gateway.close();
    upstream.close();
  });

  it("is refused RESOURCE_EXHAUSTED, not sent past the scheduler's 16 MiB receive limit", T, async () => {
    // 4 MB of JSON, within the gateway's default 4 MiB; 22 MB as protobuf (each 0 a Value message).
    // REST bodies are checked as protobuf by the gateway's own router; a Connect JSON call is
    // forwarded as it came, and encoded as protobuf only for the scheduler.
    const body = `{"workflowName":"w","input":[${Array.from({ length: 2_000_000 }, () => "0").join(",")}]}`;
    assert.ok(body.length < 4 * 1024 * 1024);
    for (const [path, code] of [
      ["/nexusflow.v1.WorkflowService/StartRun", "resource_exhausted"],
      ["/v1/workflows/w/runs", 8],
    ] as const) {
      const res = await fetch(`${url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      const answer = (await res.json()) as { code?: number | string; message?: string };
      assert.equal(answer.code, code, `${path}: ${JSON.stringify(answer).slice(0, 300)}`);
      assert.equal(res.status, 429);
    }
    assert.equal(starts, 0);
  });
});

describe("a bidi stream whose client keeps its side open", () => {
  /** Far longer than the test may take: close() resolving at all shows it did not wait for it. */
  const DRAIN_FOREVER_MS = 3_600_000;
  let keys: TestKeys;
  let gateway: Gateway;
  let url: string;
  let sessions: Http2SessionManager;
  before(async () => {
    keys = await createTestKeys();
    gateway = createGateway({
      schedulerAddress: "127.0.0.1:1",
      transport: createRouterTransport(() => undefined),
      port: 0,
      drainTimeoutMs: DRAIN_FOREVER_MS,
      verifier: await createTokenVerifier({
        publicKeyFiles: [keys.keys.EdDSA.jwkFile],
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
    });
    ({ url } = await gateway.listen());
    sessions = new Http2SessionManager(url);
  });
  after(async () => {
    sessions.abort();
    await gateway.close();
    await keys.close();
  });

  it("is reset with NO_ERROR after its answer, which the client keeps", T, async () => {
    // A reflection question that does not decode: the call fails after its request was read, while
    // the client's side stays open.
    const session = http2.connect(url);
    session.on("error", () => undefined);
    try {
      const stream = session.request({
        ":method": "POST",
        ":path": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.on("error", () => undefined);
      stream.resume();
      const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once("trailers", resolve));
      const closed = new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode)));
      // One gRPC message (uncompressed, 2 bytes) that is no protobuf: a field tag that never ends.
      stream.write(Buffer.from([0, 0, 0, 0, 2, 0xff, 0xff]));
      const status = (await trailers)["grpc-status"];
      assert.ok(status !== undefined && status !== "0", `grpc-status ${String(status)}`);
      assert.equal(await closed, http2.constants.NGHTTP2_NO_ERROR);
    } finally {
      session.destroy();
    }
  });

  // Last: it closes the gateway.
  it("does not hold close() once answered (grpcurl's reflection stream)", T, async () => {
    const client = createClient(
      ServerReflection,
      createGrpcTransport({ baseUrl: url, sessionManager: sessions }),
    );
    let hangUp!: () => void;
    const hungUp = new Promise<void>((resolve) => (hangUp = resolve));
    // One question, then the request side stays open, as grpcurl's is.
    async function* questions() {
      yield { messageRequest: { case: "listServices" as const, value: "" } };
      await hungUp;
    }
    const answers = client.serverReflectionInfo(questions())[Symbol.asyncIterator]();
    try {
      const first = await answers.next();
      assert.equal(
        first.done === true ? undefined : first.value.messageResponse.case,
        "listServicesResponse",
      );
      const rest = answers.next().then(
        () => assert.fail("the stream ended without an error"),
        (e: unknown) => ConnectError.from(e),
      );
      // Resolves long before the drain timeout only if nothing held the connection open.
      await gateway.close();
      const err = await rest;
      assert.equal(err.code, Code.Unavailable, err.message);
      assert.match(err.rawMessage, /gateway is shutting down/);
    } finally {
      hangUp();
    }
  });
});
