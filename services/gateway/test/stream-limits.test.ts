/**
 * How long streams last and how many a client may hold, over the wire: the streams of the RPCs that
 * need no token (reflection, health Watch) are limited per remote address, with authentication on or
 * off; a stream opened with a token ends UNAUTHENTICATED when the token expires, over gRPC, Connect
 * and REST (NDJSON), and the scheduler's stream behind it is cancelled. The upstream is an
 * in-process fake.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type Transport,
  createClient,
  createRouterTransport,
} from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { createTokenVerifier } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";
import { RunStatus, WorkflowService } from "@nexusflow/gen";
import { Health } from "@nexusflow/gen/grpc/health/v1/health_pb";
import { decodeJwt } from "jose";
import { ServerReflection } from "../src/gen/grpc/reflection/v1/reflection_pb.js";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";

const T = { timeout: 20_000 };

/** WatchRun streams the fake scheduler saw cancelled, by run id. */
const cancelled = new Set<string>();

function fakeUpstream(router: ConnectRouter): void {
  router.service(WorkflowService, {
    async *watchRun(req, ctx) {
      yield { run: { id: req.runId, status: RunStatus.RUNNING } };
      await new Promise<void>((resolve) => {
        if (ctx.signal.aborted) resolve();
        else ctx.signal.addEventListener("abort", () => resolve(), { once: true });
      });
      cancelled.add(req.runId);
    },
  });
}

/** A stream held open: its first message is in; `cancel()` ends it from the client's side. */
interface OpenStream {
  cancel(): void;
}

/** The error a call or stream ended with. */
async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (e) {
    return ConnectError.from(e);
  }
  assert.fail("expected the call to fail");
}

/** Opens a health Watch (no token) and waits for its first status. */
async function openWatch(transport: Transport): Promise<OpenStream> {
  const abort = new AbortController();
  const statuses = createClient(Health, transport).watch({ service: "" }, { signal: abort.signal });
  const it = statuses[Symbol.asyncIterator]();
  await it.next();
  return { cancel: () => abort.abort() };
}

/** Opens a reflection stream (no token), asks one question and waits for the answer. */
async function openReflection(transport: Transport): Promise<OpenStream> {
  const abort = new AbortController();
  let hangUp!: () => void;
  const hungUp = new Promise<void>((resolve) => (hangUp = resolve));
  async function* questions() {
    yield { messageRequest: { case: "listServices" as const, value: "" } };
    await hungUp;
  }
  const answers = createClient(ServerReflection, transport).serverReflectionInfo(questions(), {
    signal: abort.signal,
  });
  const it = answers[Symbol.asyncIterator]();
  await it.next();
  return {
    cancel: () => {
      abort.abort();
      hangUp();
    },
  };
}

describe("token-free streams", () => {
  let keys: TestKeys;
  let gateway: Gateway;
  let open: Gateway;
  let sessions: Http2SessionManager[];
  let transport: Transport;
  let openTransport: Transport;

  before(async () => {
    keys = await createTestKeys();
    const common = {
      schedulerAddress: "127.0.0.1:1",
      transport: createRouterTransport(fakeUpstream),
      port: 0,
      ready: () => Promise.resolve(undefined),
      maxPublicStreamsPerAddress: 2,
      maxStreamsPerClient: 2,
      drainTimeoutMs: 2000,
    };
    gateway = createGateway({
      ...common,
      verifier: await createTokenVerifier({
        publicKeyFiles: [keys.keys.EdDSA.jwkFile],
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
    });
    // Authentication off (AUTH_DISABLED=true): the token-free streams are limited all the same.
    open = createGateway(common);
    const connect = (baseUrl: string): Transport => {
      const sessionManager = new Http2SessionManager(baseUrl);
      sessions.push(sessionManager);
      return createGrpcTransport({ baseUrl, sessionManager });
    };
    sessions = [];
    transport = connect((await gateway.listen()).url);
    openTransport = connect((await open.listen()).url);
  });

  after(async () => {
    for (const s of sessions) s.abort();
    await gateway.close();
    await open.close();
    await keys.close();
  });

  it("are limited per remote address, reflection and health Watch together", T, async () => {
    const first = await openWatch(transport);
    const second = await openReflection(transport);
    for (const refused of [openWatch(transport), openReflection(transport)]) {
      const err = await failure(refused);
      assert.equal(err.code, Code.ResourceExhausted, err.message);
      assert.match(
        err.rawMessage,
        /too many concurrent token-free streams \(reflection, health Watch\) from this address \(limit 2\)/,
      );
    }
    // A stream with a token counts against its subject, not against the address.
    const token = await keys.sign(keys.keys.EdDSA, { sub: "erin", scope: "runs:read" });
    const watch = createClient(WorkflowService, transport).watchRun(
      { runId: "with-a-token" },
      { headers: { authorization: `Bearer ${token}` } },
    );
    for await (const message of watch) {
      assert.equal(message.run?.id, "with-a-token");
      break;
    }
    // A slot given back is taken again.
    first.cancel();
    const third = await waitFor("a token-free stream let in again", () => openWatch(transport));
    second.cancel();
    third.cancel();
  });

  it("are limited per remote address with authentication off too", T, async () => {
    const streams = [await openReflection(openTransport), await openWatch(openTransport)];
    const err = await failure(openReflection(openTransport));
    assert.equal(err.code, Code.ResourceExhausted, err.message);
    for (const s of streams) s.cancel();
  });
});

describe("a stream whose token expires", () => {
  let keys: TestKeys;
  let gateway: Gateway;
  let url: string;
  let sessions: Http2SessionManager;

  before(async () => {
    keys = await createTestKeys();
    gateway = createGateway({
      schedulerAddress: "127.0.0.1:1",
      transport: createRouterTransport(fakeUpstream),
      port: 0,
      // The default tolerance of 30 s for exp: a token about to expire is still let in.
      verifier: await createTokenVerifier({
        publicKeyFiles: [keys.keys.EdDSA.jwkFile],
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
      drainTimeoutMs: 2000,
    });
    ({ url } = await gateway.listen());
    sessions = new Http2SessionManager(url);
  });

  after(async () => {
    sessions.abort();
    await gateway.close();
    await keys.close();
  });

  /** A token for `sub` valid for 1 to 2 more seconds, and its expiry in epoch milliseconds. */
  async function shortLived(sub: string): Promise<{ token: string; expiresAtMs: number }> {
    const token = await keys.sign(keys.keys.EdDSA, { sub, scope: "runs:read", expIn: 2 });
    return { token, expiresAtMs: (decodeJwt(token).exp ?? 0) * 1000 };
  }

  /** Watches `runId` over `transport`: the first message, then how the stream ended. */
  async function watchUntilEnd(transport: Transport, runId: string, token: string): Promise<ConnectError> {
    const updates = createClient(WorkflowService, transport).watchRun(
      { runId },
      { headers: { authorization: `Bearer ${token}` } },
    );
    const it = updates[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.done === true ? undefined : first.value.run?.id, runId);
    return failure(it.next());
  }

  for (const [protocol, makeTransport] of [
    ["gRPC", (baseUrl: string) => createGrpcTransport({ baseUrl, sessionManager: sessions })],
    [
      "Connect",
      (baseUrl: string) => createConnectTransport({ baseUrl, httpVersion: "2", sessionManager: sessions }),
    ],
  ] as const) {
    it(`ends UNAUTHENTICATED at the token's exp over ${protocol}`, T, async () => {
      const { token, expiresAtMs } = await shortLived(`${protocol}-user`);
      const runId = `expiring-${protocol}`;
      const err = await watchUntilEnd(makeTransport(url), runId, token);
      assert.equal(err.code, Code.Unauthenticated, err.message);
      assert.match(err.rawMessage, /^token expired at /);
      assert.ok(Date.now() >= expiresAtMs, "not before the token's exp");
      await waitFor("the scheduler's stream cancelled", () => cancelled.has(runId));
    });
  }

  it("ends its REST NDJSON stream with an UNAUTHENTICATED line at the token's exp", T, async () => {
    const { token, expiresAtMs } = await shortLived("rest-user");
    const res = await fetch(`${url}/v1/runs/expiring-rest:watch`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 200);
    // The body ends when the stream does.
    const lines = (await res.text())
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { result?: { run?: { id?: string } }; error?: unknown });
    assert.ok(Date.now() >= expiresAtMs, "not before the token's exp");
    assert.equal(lines[0]?.result?.run?.id, "expiring-rest");
    const last = lines.at(-1)?.error as { code?: number; message?: string } | undefined;
    assert.equal(last?.code, Code.Unauthenticated, JSON.stringify(lines));
    assert.match(last?.message ?? "", /^token expired at /);
    await waitFor("the scheduler's stream cancelled", () => cancelled.has("expiring-rest"));
  });

  it("lets a stream whose token is valid for longer than a timer can wait run on", T, async (t) => {
    // 30 days: past the longest delay of a Node timer (about 24.8 days), which fires at once instead.
    const overflows: string[] = [];
    const onWarning = (w: Error): void => {
      if (w.name === "TimeoutOverflowWarning") overflows.push(w.message);
    };
    process.on("warning", onWarning);
    t.after(() => process.off("warning", onWarning));
    const token = await keys.sign(keys.keys.EdDSA, {
      sub: "long-lived",
      scope: "runs:read",
      expIn: 30 * 86_400,
    });
    const client = createClient(
      WorkflowService,
      createGrpcTransport({ baseUrl: url, sessionManager: sessions }),
    );
    const abort = new AbortController();
    const updates = client.watchRun(
      { runId: "long" },
      { headers: { authorization: `Bearer ${token}` }, signal: abort.signal },
    );
    const it = updates[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.done === true ? undefined : first.value.run?.id, "long");
    let outcome: string | undefined;
    const ended = it.next().then(
      () => (outcome = "ended"),
      (e: unknown) => (outcome = Code[ConnectError.from(e).code]),
    );
    // Another stream opened and answered meanwhile: the first one's timers have had their turn.
    for await (const message of client.watchRun(
      { runId: "long-2" },
      { headers: { authorization: `Bearer ${token}` } },
    )) {
      assert.equal(message.run?.id, "long-2");
      break;
    }
    assert.equal(outcome, undefined, "the stream is still open");
    abort.abort();
    await ended;
    // Ended by its client, not by the gateway.
    assert.equal(outcome, "Canceled");
    assert.deepEqual(overflows, []);
  });
});
