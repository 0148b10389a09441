/**
 * The gateway in front of a fake upstream (a Connect server implementing WorkflowService with
 * canned answers), called over gRPC, Connect (HTTP/2 and HTTP/1.1) and gRPC-Web.
 */
import assert from "node:assert/strict";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { after, before, describe, it } from "node:test";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type Transport,
  createClient,
  createRouterTransport,
} from "@connectrpc/connect";
import {
  Http2SessionManager,
  connectNodeAdapter,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { freePort } from "@nexusflow/common";
import { RunStatus, WorkflowService } from "@nexusflow/gen";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { type Gateway, GatewayListenError, createGateway } from "./server.js";

const TEST_TIMEOUT = { timeout: 15_000 };

/** What the fake saw of one call. */
interface Seen {
  headers: Headers;
  timeoutMs: number | undefined;
}

interface Fake {
  /** host:port, as the gateway wants it. */
  address: string;
  /** Calls received, by run id. */
  seen: Map<string, Seen>;
  /** Resolves when the WatchRun stream for `runId` sees its signal abort. */
  watchAborted(runId: string): Promise<void>;
  close(): Promise<void>;
}

/** A Connect server on HTTP/2 (h2c) with canned WorkflowService answers. */
async function startFake(): Promise<Fake> {
  const seen = new Map<string, Seen>();
  const aborted = new Map<string, { promise: Promise<void>; resolve: () => void }>();
  const abortEntry = (runId: string): { promise: Promise<void>; resolve: () => void } => {
    let entry = aborted.get(runId);
    if (entry === undefined) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      entry = { promise, resolve };
      aborted.set(runId, entry);
    }
    return entry;
  };
  const routes = (router: ConnectRouter): void => {
    router.service(WorkflowService, {
      getRun(req, ctx) {
        seen.set(req.runId, { headers: new Headers(ctx.requestHeader), timeoutMs: ctx.timeoutMs() });
        ctx.responseHeader.set("x-upstream", "fake");
        ctx.responseTrailer.set("x-upstream-trailer", "done");
        return { run: { id: req.runId, workflowName: "orders", status: RunStatus.RUNNING } };
      },
      startRun() {
        throw new ConnectError("bad", Code.InvalidArgument, undefined, [
          {
            desc: BadRequestSchema,
            value: { fieldViolations: [{ field: "input.orderId", description: "is required" }] },
          },
        ]);
      },
      async *watchRun(req, ctx) {
        if (req.runId.startsWith("hang")) {
          yield { run: { id: req.runId, status: RunStatus.RUNNING } };
          const entry = abortEntry(req.runId);
          await new Promise<void>((resolve) => {
            if (ctx.signal.aborted) resolve();
            else ctx.signal.addEventListener("abort", () => resolve(), { once: true });
          });
          entry.resolve();
          return;
        }
        for (const status of [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.SUCCEEDED]) {
          yield { run: { id: req.runId, status } };
        }
      },
    });
  };
  const sessions = new Set<http2.ServerHttp2Session>();
  const server = http2.createServer({}, connectNodeAdapter({ routes }));
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    address: `127.0.0.1:${port}`,
    seen,
    watchAborted: (runId) => abortEntry(runId).promise,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sessions) s.destroy();
      }),
  };
}

/** A client protocol under test and how to release its connections. */
interface Protocol {
  name: string;
  transport: Transport;
  dispose(): void;
}

function protocols(baseUrl: string): Protocol[] {
  const h2 = (make: (sessionManager: Http2SessionManager) => Transport) => {
    const sessionManager = new Http2SessionManager(baseUrl);
    return { transport: make(sessionManager), dispose: () => sessionManager.abort() };
  };
  const h1 = (make: (agent: http.Agent) => Transport) => {
    const agent = new http.Agent({ keepAlive: true });
    return { transport: make(agent), dispose: () => agent.destroy() };
  };
  return [
    { name: "gRPC (h2c)", ...h2((sessionManager) => createGrpcTransport({ baseUrl, sessionManager })) },
    {
      name: "Connect binary (h2c)",
      ...h2((sessionManager) =>
        createConnectTransport({ baseUrl, httpVersion: "2", sessionManager, useBinaryFormat: true }),
      ),
    },
    {
      name: "Connect JSON (HTTP/1.1)",
      ...h1((agent) => createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { agent } })),
    },
    {
      name: "gRPC-Web (HTTP/1.1)",
      ...h1((agent) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { agent } })),
    },
    {
      name: "gRPC-Web (h2c)",
      ...h2((sessionManager) => createGrpcWebTransport({ baseUrl, httpVersion: "2", sessionManager })),
    },
  ];
}

async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected the call to fail");
}

describe("gateway proxy", () => {
  let fake: Fake;
  let gateway: Gateway;
  let url: string;
  let clients: Protocol[];

  before(async () => {
    fake = await startFake();
    gateway = createGateway({ schedulerAddress: fake.address, port: 0, drainTimeoutMs: 2000 });
    ({ url } = await gateway.listen());
    clients = protocols(url);
  });

  after(async () => {
    for (const c of clients) c.dispose();
    await gateway.close();
    await fake.close();
  });

  for (const index of [0, 1, 2, 3, 4]) {
    describe(`over ${protocols("http://x")[index]?.name ?? "?"}`, () => {
      const client = () => createClient(WorkflowService, (clients[index] as Protocol).transport);
      const name = () => (clients[index] as Protocol).name;

      it("forwards a unary call with its headers, deadline and response metadata", TEST_TIMEOUT, async () => {
        const runId = `run-${index}`;
        let header: Headers | undefined;
        const res = await client().getRun(
          { runId },
          {
            headers: { authorization: "Bearer t0k3n", "x-request-id": "req-1" },
            timeoutMs: 5000,
            onHeader: (h) => (header = h),
          },
        );
        assert.equal(res.run?.id, runId);
        assert.equal(res.run?.status, RunStatus.RUNNING);
        assert.equal(header?.get("x-upstream"), "fake", `${name()}: upstream response header`);
        const seen = fake.seen.get(runId);
        assert.ok(seen !== undefined);
        assert.equal(seen.headers.get("authorization"), "Bearer t0k3n");
        assert.equal(seen.headers.get("x-request-id"), "req-1");
        // The upstream hop is always gRPC, whatever the caller spoke.
        assert.match(seen.headers.get("content-type") ?? "", /^application\/grpc/);
        assert.ok(
          seen.timeoutMs !== undefined && seen.timeoutMs > 0 && seen.timeoutMs <= 5000,
          `deadline ${seen.timeoutMs}`,
        );
      });

      it("passes an upstream error through with code, message and details", TEST_TIMEOUT, async () => {
        const err = await rejection(client().startRun({ workflowName: "orders" }));
        assert.equal(err.code, Code.InvalidArgument);
        assert.equal(err.rawMessage, "bad");
        const [badRequest] = err.findDetails(BadRequestSchema);
        assert.equal(badRequest?.fieldViolations[0]?.field, "input.orderId");
      });

      it("passes a server stream through in order", TEST_TIMEOUT, async () => {
        const statuses: RunStatus[] = [];
        for await (const msg of client().watchRun({ runId: `stream-${index}` }))
          statuses.push(msg.run?.status ?? RunStatus.UNSPECIFIED);
        assert.deepEqual(statuses, [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.SUCCEEDED]);
      });

      it("cancels the upstream stream when the client aborts", TEST_TIMEOUT, async () => {
        const runId = `hang-${index}`;
        const abort = new AbortController();
        const stream = client().watchRun({ runId }, { signal: abort.signal });
        const err = await rejection(
          (async () => {
            for await (const msg of stream) {
              assert.equal(msg.run?.id, runId);
              abort.abort();
            }
          })(),
        );
        assert.equal(err.code, Code.Canceled);
        await fake.watchAborted(runId);
      });
    });
  }

  it("answers /healthz over HTTP/1.1 and 404s unknown paths", TEST_TIMEOUT, async () => {
    const ok = await fetch(`${url}/healthz`);
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { status: "ok" });
    const missing = await fetch(`${url}/nope`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
  });
});

describe("gateway proxy, errors too long for trailers", () => {
  it(
    "cuts an upstream error's message and details so that a gRPC client still gets the status",
    TEST_TIMEOUT,
    async () => {
      // In process, the upstream can say as much as it likes; a gRPC client hears it in trailers,
      // which Node sends up to 64 KiB only.
      const huge = "x".repeat(100_000);
      const upstream = createRouterTransport((router) =>
        router.service(WorkflowService, {
          startRun() {
            throw new ConnectError(`not a workflow: ${huge}`, Code.InvalidArgument, undefined, [
              {
                desc: BadRequestSchema,
                value: { fieldViolations: [{ field: "workflow_name", description: huge }] },
              },
            ]);
          },
        }),
      );
      const gateway = createGateway({ schedulerAddress: "127.0.0.1:1", transport: upstream, port: 0 });
      const { url } = await gateway.listen();
      const clients = protocols(url);
      try {
        for (const { name, transport } of clients) {
          const err = await rejection(
            createClient(WorkflowService, transport).startRun({ workflowName: "w" }),
          );
          assert.equal(err.code, Code.InvalidArgument, `${name}: ${err.rawMessage.slice(0, 200)}`);
          assert.ok(err.rawMessage.length < 2100, `${name}: ${err.rawMessage.length} characters`);
          assert.match(err.rawMessage, /^not a workflow: x+… \(\d+ more characters\)$/, name);
          const [badRequest] = err.findDetails(BadRequestSchema);
          assert.equal(badRequest?.fieldViolations[0]?.field, "workflow_name", name);
          assert.ok((badRequest?.fieldViolations[0]?.description.length ?? 0) < 600, name);
        }
      } finally {
        for (const c of clients) c.dispose();
        await gateway.close();
      }
    },
  );
});

describe("gateway lifecycle", () => {
  it("reports UNAVAILABLE when the scheduler cannot be reached", TEST_TIMEOUT, async () => {
    const gateway = createGateway({ schedulerAddress: `127.0.0.1:${await freePort()}`, port: 0 });
    const { url } = await gateway.listen();
    const sessionManager = new Http2SessionManager(url);
    try {
      const client = createClient(WorkflowService, createGrpcTransport({ baseUrl: url, sessionManager }));
      const err = await rejection(client.getRun({ runId: "x" }));
      assert.equal(err.code, Code.Unavailable);
    } finally {
      sessionManager.abort();
      await gateway.close();
    }
  });

  it("fails with one line naming the port when it is in use", TEST_TIMEOUT, async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    const gateway = createGateway({ schedulerAddress: "127.0.0.1:1", port });
    try {
      await assert.rejects(gateway.listen(), (e: unknown) => {
        assert.ok(e instanceof GatewayListenError);
        assert.equal(e.code, "EADDRINUSE");
        assert.equal(e.message, `cannot listen on 127.0.0.1:${port}: port ${port} is already in use`);
        return true;
      });
      assert.equal(gateway.state, "idle");
    } finally {
      await gateway.close();
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
    assert.equal(gateway.state, "stopped");
  });

  it(
    "close() ends open streams with UNAVAILABLE, cancels them upstream and drains",
    TEST_TIMEOUT,
    async () => {
      const fake = await startFake();
      const gateway = createGateway({ schedulerAddress: fake.address, port: 0, drainTimeoutMs: 5000 });
      const { url } = await gateway.listen();
      const sessionManager = new Http2SessionManager(url);
      const agent = new http.Agent({ keepAlive: true });
      try {
        const h2Client = createClient(WorkflowService, createGrpcTransport({ baseUrl: url, sessionManager }));
        const h1Client = createClient(
          WorkflowService,
          createConnectTransport({ baseUrl: url, httpVersion: "1.1", nodeOptions: { agent } }),
        );
        // An idle keep-alive HTTP/1.1 connection must not hold up the drain either.
        await h1Client.getRun({ runId: "warm-up" });
        const h2Stream = h2Client.watchRun({ runId: "hang-close-h2" })[Symbol.asyncIterator]();
        const h1Stream = h1Client.watchRun({ runId: "hang-close-h1" })[Symbol.asyncIterator]();
        for (const [stream, runId] of [
          [h2Stream, "hang-close-h2"],
          [h1Stream, "hang-close-h1"],
        ] as const) {
          const first = await stream.next();
          assert.equal(first.done, false);
          assert.equal(first.done === false ? first.value.run?.id : undefined, runId);
        }

        const closed = gateway.close();
        assert.equal(gateway.state, "stopping");
        for (const stream of [h2Stream, h1Stream]) {
          const err = await rejection(stream.next());
          assert.equal(err.code, Code.Unavailable);
        }
        await Promise.all([fake.watchAborted("hang-close-h2"), fake.watchAborted("hang-close-h1")]);
        await closed;
        assert.equal(gateway.state, "stopped");
        await assert.rejects(fetch(`${url}/healthz`));
      } finally {
        sessionManager.abort();
        agent.destroy();
        await gateway.close();
        await fake.close();
      }
    },
  );
});
