/**
 * How the gateway treats connections and streams that go quiet or away: a REST server stream with
 * nothing to send yet still answers 200 with its headers; an h2c REST client that resets its stream
 * cancels the upstream call and gives its stream slot back; an HTTP/1.1 request whose headers never
 * end has its connection closed after `headersTimeoutMs`.
 */
import assert from "node:assert/strict";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { type ConnectRouter, createRouterTransport } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createTokenVerifier } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";
import { RunStatus, WorkflowService } from "@nexusflow/gen";
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
