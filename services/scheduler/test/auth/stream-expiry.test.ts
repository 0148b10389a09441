/**
 * A stream outlives no token on the scheduler: a WatchRun opened with a token that expires soon
 * ends UNAUTHENTICATED when it expires (the clock skew allowed is 0 here), and its handler lets go
 * of its watcher; a stream opened with a token that lives on (30 days: longer than a Node timer
 * can wait) is not ended with it. On a test server with the interceptor: an executor's Session is
 * never ended for its token, and a stream that ended by itself leaves no timer behind.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import {
  type TokenVerifier,
  clientConstructor,
  createTokenVerifier,
  serviceDefinition,
} from "@nexusflow/common";
import {
  ExecutorService,
  WatchRunRequestSchema,
  type WatchRunResponse,
  WorkflowService,
} from "@nexusflow/gen";
import { type CryptoKey, SignJWT, exportJWK, generateKeyPair } from "jose";
import { pino } from "pino";
import { authInterceptor } from "../../src/api/auth.js";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec, startRunOf, startTestDatabase, startTestScheduler, waitFor } from "../support.js";
import { TEST_AUDIENCE, TEST_ISSUER, bearer, withToken } from "./tokens.js";

const T = { timeout: 60_000 };

/** How a WatchRun stream ended, and when (epoch milliseconds). */
interface Ending {
  status: grpc.StatusObject;
  atMs: number;
}

describe("streams end when their token expires", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let dir: string;
  let scheduler: Scheduler;
  let privateKey: CryptoKey;
  let verifier: TokenVerifier;
  let client: grpc.Client & {
    watchRun(req: unknown, md: grpc.Metadata): grpc.ClientReadableStream<WatchRunResponse>;
  };
  /** WatchRun subscriptions the engine holds now. */
  let watching = 0;

  /** A token with `scope` that expires at `expSec` (epoch seconds). */
  const sign = (scope: string, expSec: number): Promise<string> =>
    new SignJWT({ scope })
      .setProtectedHeader({ alg: "EdDSA", kid: "k1" })
      .setIssuer(TEST_ISSUER)
      .setAudience(TEST_AUDIENCE)
      .setSubject("watcher")
      .setExpirationTime(expSec)
      .sign(privateKey);

  /** Opens WatchRun of `runId` with `token`; resolves with how it ended. */
  const watch = (
    runId: string,
    token: string,
  ): { call: grpc.ClientReadableStream<WatchRunResponse>; ended: Promise<Ending> } => {
    const call = client.watchRun(create(WatchRunRequestSchema, { runId }), bearer(token));
    const ended = new Promise<Ending>((resolve) => {
      call.on("data", () => undefined);
      call.on("error", () => undefined);
      call.on("status", (status: grpc.StatusObject) => resolve({ status, atMs: Date.now() }));
    });
    return { call, ended };
  };

  before(async () => {
    db = await startTestDatabase();
    dir = await mkdtemp(join(tmpdir(), "nf-stream-expiry-"));
    const pair = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
    privateKey = pair.privateKey;
    const jwkFile = join(dir, "issuer.jwk.json");
    await writeFile(
      jwkFile,
      JSON.stringify({ ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "EdDSA" }),
    );
    // No clock skew: streams end at their token's exp.
    verifier = await createTokenVerifier({
      publicKeyFiles: [jwkFile],
      issuer: TEST_ISSUER,
      audience: TEST_AUDIENCE,
      clockToleranceSec: 0,
    });
    scheduler = await startTestScheduler(db.url, { auth: verifier });
    // Counts the watchers WatchRun handlers hold (each unsubscribes once).
    const engine = scheduler.engine;
    const subscribe = engine.watch.bind(engine);
    engine.watch = (runId, listener) => {
      watching++;
      const unsubscribe = subscribe(runId, listener);
      let held = true;
      return () => {
        if (held) watching--;
        held = false;
        unsubscribe();
      };
    };
    const Ctor = clientConstructor(WorkflowService);
    client = new Ctor(scheduler.address, grpc.credentials.createInsecure()) as unknown as typeof client;
  });

  after(async () => {
    client.close();
    await scheduler.stop();
    await db.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("ends a WatchRun UNAUTHENTICATED at its token's expiry and releases its watcher", T, async () => {
    const admin = createClient(
      WorkflowService,
      createGrpcTransport({
        baseUrl: `http://${scheduler.address}`,
        interceptors: [
          withToken(await sign("workflows:write runs:write", Math.floor(Date.now() / 1000) + 600)),
        ],
      }),
    );
    // No executor takes its step: the run stays queued and its watch open.
    await registerSpec(admin, { name: "se-wait", version: 1, steps: [{ id: "s", type: "se.never" }] });
    const runId = await startRunOf(admin, "se-wait");

    const long = watch(runId, await sign("runs:read", Math.floor(Date.now() / 1000) + 30 * 86_400));
    const expSec = Math.floor(Date.now() / 1000) + 2;
    const short = watch(runId, await sign("runs:read", expSec));
    await waitFor("both watches hold a watcher", () => watching === 2);

    const { status, atMs } = await short.ended;
    assert.equal(status.code, grpc.status.UNAUTHENTICATED, status.details);
    assert.equal(
      status.details,
      `token expired at ${new Date(expSec * 1000).toISOString()}: the stream ended with it; ` +
        "open it again with a new token",
    );
    assert.ok(atMs >= expSec * 1000, `ended at ${atMs}, before the token expired at ${expSec * 1000}`);
    // The handler learnt its call ended: its watcher is gone; the other watch goes on.
    await waitFor("the expired watch's watcher released", () => watching === 1);
    let longEnded = false;
    void long.ended.then(() => (longEnded = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(longEnded, false, "the watch with a valid token is still open");

    long.call.cancel();
    assert.equal((await long.ended).status.code, grpc.status.CANCELLED);
    await waitFor("the cancelled watch's watcher released", () => watching === 0);
  });

  it("refuses to open a stream whose token is already past its expiry plus the skew", T, async () => {
    const expSec = Math.floor(Date.now() / 1000) - 5;
    const { status } = await watch("00000000-0000-0000-0000-000000000000", await sign("runs:read", expSec))
      .ended;
    assert.equal(status.code, grpc.status.UNAUTHENTICATED, status.details);
    assert.match(status.details, /expired/);
    assert.equal(watching, 0);
  });

  it("leaves a Session open, and clears the timer of a stream that ended by itself", T, async () => {
    // A test server with the interceptor: its handlers say when grpc-js tells them their call ended.
    const lines: string[] = [];
    const log = pino({ level: "info" }, { write: (line: string) => lines.push(line) });
    const cancelled = new Set<string>();
    let endedBySelf = false;
    const server = new grpc.Server({ interceptors: [authInterceptor(verifier, log, { streamGraceMs: 0 })] });
    server.addService(serviceDefinition(WorkflowService), {
      watchRun: (call: grpc.ServerWritableStream<{ runId: string }, unknown>) => {
        call.on("cancelled", () => cancelled.add(call.request.runId));
        if (call.request.runId === "ends-by-itself") {
          endedBySelf = true;
          call.end();
        }
      },
    });
    server.addService(serviceDefinition(ExecutorService), {
      session: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
        call.on("data", () => undefined);
        call.on("cancelled", () => cancelled.add("session"));
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e === null ? resolve(p) : reject(e),
      ),
    );
    const address = `127.0.0.1:${port}`;
    const watcher = new (clientConstructor(WorkflowService))(
      address,
      grpc.credentials.createInsecure(),
    ) as unknown as typeof client;
    const executor = new (clientConstructor(ExecutorService))(
      address,
      grpc.credentials.createInsecure(),
    ) as unknown as grpc.Client & { session(md: grpc.Metadata): grpc.ClientDuplexStream<unknown, unknown> };
    try {
      const now = Math.floor(Date.now() / 1000);
      // Ends by itself at once; its token expires first: a timer left armed would fire before the
      // other stream's and say so in the log.
      const ownEnd = watcher.watchRun(
        create(WatchRunRequestSchema, { runId: "ends-by-itself" }),
        bearer(await sign("runs:read", now + 1)),
      );
      const ownEnded = new Promise<grpc.StatusObject>((resolve) => {
        ownEnd.on("error", () => undefined);
        ownEnd.on("status", resolve);
      });
      const session = executor.session(bearer(await sign("executor", now + 1)));
      let sessionStatus: grpc.StatusObject | undefined;
      session.on("error", () => undefined);
      session.on("data", () => undefined);
      session.on("status", (st: grpc.StatusObject) => (sessionStatus = st));
      const expiring = watcher.watchRun(
        create(WatchRunRequestSchema, { runId: "expires" }),
        bearer(await sign("runs:read", now + 2)),
      );
      const expired = new Promise<grpc.StatusObject>((resolve) => {
        expiring.on("error", () => undefined);
        expiring.on("data", () => undefined);
        expiring.on("status", resolve);
      });

      assert.equal((await ownEnded).code, grpc.status.OK);
      assert.ok(endedBySelf);
      const status = await expired;
      assert.equal(status.code, grpc.status.UNAUTHENTICATED, status.details);
      await waitFor("the expired stream's handler told its call was cancelled", () =>
        cancelled.has("expires"),
      );
      const ended = lines.filter((l) => l.includes("stream ended: token expired"));
      assert.equal(ended.length, 1, ended.join(""));
      // Its token expired a second before: the Session is open all the same.
      assert.equal(sessionStatus, undefined);
      assert.ok(!cancelled.has("session"), "the Session's handler was not cancelled");
      session.cancel();
    } finally {
      watcher.close();
      executor.close();
      server.forceShutdown();
    }
  });
});
