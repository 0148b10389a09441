/**
 * The gateway in front of two fake scheduler replicas (Connect servers with canned
 * WorkflowService answers, each saying which replica it is): calls fail over from a replica that is
 * gone to the other without an error to the client, an UNAVAILABLE a replica answers is passed on
 * as it is, and a call that may have been applied is not sent twice. The errors and the /readyz a
 * client sees never name a scheduler's (internal) address; the gateway's log does.
 */
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import type * as net from "node:net";
import { Writable } from "node:stream";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Code, ConnectError, type ConnectRouter, createClient } from "@connectrpc/connect";
import { Http2SessionManager, connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { ServingStatus, checkGrpcHealth, freePort } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";
import { RunStatus, WorkflowService } from "@nexusflow/gen";
import { pino } from "pino";
import { type Gateway, createGateway } from "./server.js";
import { UpstreamAddressError, createUpstream, replicasReadiness } from "./upstream.js";

const TEST_TIMEOUT = { timeout: 20_000 };

interface Replica {
  name: string;
  address: string;
  /** Procedure and run id of every call received, in order. */
  calls: string[];
  /** Resolves when a call for `runId` has arrived (for the "hang" runs, which never answer). */
  arrived(runId: string): Promise<void>;
  /** Open HTTP/2 sessions (the gateway's connections). */
  sessions: Set<http2.ServerHttp2Session>;
  /** Gone at once, as a killed process: every connection cut, the port closed. */
  kill(): Promise<void>;
}

/**
 * A fake scheduler replica: its answers carry its name as the workflow name; calls for a run id
 * starting with "hang-on-NAME" never answer on replica NAME (a WatchRun sends one message first).
 */
async function startReplica(name: string): Promise<Replica> {
  const calls: string[] = [];
  const waiters = new Map<string, { promise: Promise<void>; resolve: () => void }>();
  const waiter = (runId: string) => {
    let w = waiters.get(runId);
    if (w === undefined) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      w = { promise, resolve };
      waiters.set(runId, w);
    }
    return w;
  };
  const hang = (runId: string, signal: AbortSignal): Promise<void> => {
    if (!runId.startsWith(`hang-on-${name}`)) return Promise.resolve();
    waiter(runId).resolve();
    return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
  };
  const routes = (router: ConnectRouter): void => {
    router.service(WorkflowService, {
      async getRun(req, ctx) {
        calls.push(`GetRun ${req.runId}`);
        if (req.runId === "moving") throw new ConnectError("moving between replicas", Code.Unavailable);
        await hang(req.runId, ctx.signal);
        return { run: { id: req.runId, workflowName: name, status: RunStatus.RUNNING } };
      },
      async cancelRun(req, ctx) {
        calls.push(`CancelRun ${req.runId}`);
        await hang(req.runId, ctx.signal);
        return { run: { id: req.runId, workflowName: name, status: RunStatus.CANCELLED } };
      },
      startRun(req) {
        calls.push(`StartRun ${req.workflowName}`);
        return { run: { id: `run-of-${name}`, workflowName: name, status: RunStatus.PENDING } };
      },
      async *watchRun(req, ctx) {
        calls.push(`WatchRun ${req.runId}`);
        yield { run: { id: req.runId, workflowName: name, status: RunStatus.PENDING } };
        await hang(req.runId, ctx.signal);
        yield { run: { id: req.runId, workflowName: name, status: RunStatus.SUCCEEDED } };
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
    name,
    address: `127.0.0.1:${port}`,
    calls,
    arrived: (runId) => waiter(runId).promise,
    sessions,
    kill: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sessions) s.destroy();
      }),
  };
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

describe("gateway over two scheduler replicas", () => {
  let a: Replica;
  let b: Replica;
  let gateway: Gateway;
  let sessionManager: Http2SessionManager;
  let client: ReturnType<typeof createClient<typeof WorkflowService>>;

  beforeEach(async () => {
    a = await startReplica("a");
    b = await startReplica("b");
    gateway = createGateway({ schedulerAddress: [a.address, b.address], port: 0, drainTimeoutMs: 2000 });
    const { url } = await gateway.listen();
    sessionManager = new Http2SessionManager(url);
    client = createClient(WorkflowService, createGrpcTransport({ baseUrl: url, sessionManager }));
  });

  afterEach(async () => {
    sessionManager.abort();
    await gateway.close();
    await Promise.all([a.kill(), b.kill()]);
  });

  it(
    "sends calls to the first address, then, once it is gone, unary calls and new streams to the second without an error",
    TEST_TIMEOUT,
    async () => {
      assert.equal((await client.getRun({ runId: "r1" })).run?.workflowName, "a");
      await a.kill();
      // The gateway's connection to a is gone with it: the next calls find the port closed.
      for (const runId of ["r2", "r3", "r4"])
        assert.equal((await client.getRun({ runId })).run?.workflowName, "b", runId);
      // Not safe to repeat, but it never reached a: sent to b as well.
      assert.equal((await client.startRun({ workflowName: "w" })).run?.workflowName, "b");
      const statuses: string[] = [];
      for await (const m of client.watchRun({ runId: "r5" }))
        statuses.push(`${m.run?.workflowName} ${RunStatus[m.run?.status ?? 0]}`);
      assert.deepEqual(statuses, ["b PENDING", "b SUCCEEDED"]);
      assert.deepEqual(a.calls, ["GetRun r1"]);
      assert.deepEqual(b.calls, ["GetRun r2", "GetRun r3", "GetRun r4", "StartRun w", "WatchRun r5"]);
    },
  );

  it(
    "passes an UNAVAILABLE answered by a replica on as it is, without asking the other",
    TEST_TIMEOUT,
    async () => {
      const err = await rejection(client.getRun({ runId: "moving" }));
      assert.equal(err.code, Code.Unavailable);
      assert.equal(err.rawMessage, "moving between replicas");
      assert.deepEqual(a.calls, ["GetRun moving"]);
      assert.deepEqual(b.calls, []);
      // The replica answered: it stays the one called.
      assert.equal((await client.getRun({ runId: "r1" })).run?.workflowName, "a");
    },
  );

  it(
    "sends a read again to the other replica when the connection breaks before the answer, but not a write",
    TEST_TIMEOUT,
    async () => {
      const read = client.getRun({ runId: "hang-on-a-read" });
      const write = rejection(client.cancelRun({ runId: "hang-on-a-write" }));
      await Promise.all([a.arrived("hang-on-a-read"), a.arrived("hang-on-a-write")]);
      await a.kill();
      assert.equal((await read).run?.workflowName, "b");
      const err = await write;
      assert.equal(err.code, Code.Unavailable);
      assert.match(err.rawMessage, /may or may not have been applied/);
      assert.ok(!err.rawMessage.includes(a.address), err.rawMessage);
      assert.deepEqual(b.calls, ["GetRun hang-on-a-read"]);
    },
  );

  it("ends a stream that had started with UNAVAILABLE when its replica goes away", TEST_TIMEOUT, async () => {
    const stream = client.watchRun({ runId: "hang-on-a-stream" })[Symbol.asyncIterator]();
    const first = await stream.next();
    assert.equal(first.done === false ? first.value.run?.workflowName : undefined, "a");
    await a.arrived("hang-on-a-stream");
    await a.kill();
    const err = await rejection(stream.next());
    assert.equal(err.code, Code.Unavailable, err.rawMessage);
    assert.ok(!err.rawMessage.includes(a.address), err.rawMessage);
    assert.deepEqual(b.calls, []);
    // A new stream goes to the other replica.
    const again: string[] = [];
    for await (const m of client.watchRun({ runId: "r6" })) again.push(m.run?.workflowName ?? "");
    assert.deepEqual(again, ["b", "b"]);
  });

  it("closes its connections to the replicas when it stops", TEST_TIMEOUT, async () => {
    await client.getRun({ runId: "r1" });
    assert.ok(a.sessions.size > 0);
    sessionManager.abort();
    await gateway.close();
    await waitFor("the gateway's sessions to a to close", () => a.sessions.size === 0);
  });
});

describe("gateway over replicas that are all gone", () => {
  it(
    "fails with UNAVAILABLE naming no address, and is not ready, saying no more; its log names them",
    TEST_TIMEOUT,
    async () => {
      const addresses = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`];
      const logs: string[] = [];
      const logger = pino(
        { level: "warn" },
        new Writable({
          write(chunk: Buffer, _enc, done) {
            logs.push(chunk.toString("utf8"));
            done();
          },
        }),
      );
      const gateway = createGateway({
        schedulerAddress: addresses,
        port: 0,
        logger,
        // What serve.ts gives it.
        ready: replicasReadiness(addresses, { check: (address) => checkGrpcHealth(address), logger }),
      });
      const { url } = await gateway.listen();
      const sessionManager = new Http2SessionManager(url);
      try {
        const client = createClient(WorkflowService, createGrpcTransport({ baseUrl: url, sessionManager }));
        const err = await rejection(client.getRun({ runId: "x" }));
        assert.equal(err.code, Code.Unavailable);
        assert.equal(err.rawMessage, "the scheduler is unavailable; retry shortly");
        const rest = await fetch(`${url}/v1/runs/x`);
        assert.equal(rest.status, 503);
        const restText = await rest.text();
        const readyz = await fetch(`${url}/readyz`);
        assert.equal(readyz.status, 503);
        assert.deepEqual(await readyz.json(), {
          status: "not ready",
          reason: "the scheduler is unavailable; retry shortly",
        });
        const text = logs.join("");
        for (const address of addresses) {
          assert.ok(!restText.includes(address), restText);
          assert.ok(text.includes(address), `the log names ${address}`);
        }
        assert.match(text, /no scheduler replica is serving/);
      } finally {
        sessionManager.abort();
        await gateway.close();
      }
    },
  );
});

describe("createUpstream", () => {
  it("refuses an empty list and an address listed twice", () => {
    assert.throws(() => createUpstream({ addresses: [] }), UpstreamAddressError);
    assert.throws(
      () => createUpstream({ addresses: ["127.0.0.1:1", "127.0.0.1:1"] }),
      (e: unknown) => e instanceof UpstreamAddressError && /127\.0\.0\.1:1 is listed twice/.test(e.message),
    );
  });
});

describe("replicasReadiness", () => {
  const statuses = (answers: Record<string, ServingStatus | Error>) => (address: string) => {
    const answer = answers[address];
    return answer instanceof Error || answer === undefined
      ? Promise.reject(answer ?? new Error("unknown address"))
      : Promise.resolve(answer);
  };

  it("is ready while one address serves, and else says what each answered", async () => {
    const addresses = ["a:1", "b:2"];
    const oneDown = replicasReadiness(addresses, {
      check: statuses({ "a:1": new Error("connect ECONNREFUSED"), "b:2": ServingStatus.SERVING }),
    });
    assert.equal(await oneDown(), undefined);
    const allDown = replicasReadiness(addresses, {
      check: statuses({ "a:1": new Error("connect ECONNREFUSED"), "b:2": ServingStatus.NOT_SERVING }),
    });
    assert.equal(
      await allDown(),
      "the scheduler at a:1 does not answer: connect ECONNREFUSED; " +
        "the scheduler at b:2 is not serving (status 2)",
    );
  });

  it("asks each scheduler once for calls that come together, and reuses the answer for maxAgeMs", async () => {
    const asked: string[] = [];
    const check = (address: string) => {
      asked.push(address);
      return Promise.resolve(ServingStatus.SERVING);
    };
    const ready = replicasReadiness(["a:1", "b:2"], { check });
    // A burst of unauthenticated /readyz or Health calls: one check of each address.
    assert.deepEqual(await Promise.all(Array.from({ length: 50 }, () => ready())), Array(50).fill(undefined));
    assert.deepEqual(asked, ["a:1", "b:2"]);
    assert.equal(await ready(), undefined);
    assert.equal(asked.length, 2, "reused within a second");
    const fresh = replicasReadiness(["a:1"], { check, maxAgeMs: 0 });
    await fresh();
    await fresh();
    assert.equal(asked.length, 4, "asked again once the answer is older than maxAgeMs");
  });
});
