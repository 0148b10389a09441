/**
 * Every method a running scheduler serves, as grpc-js registered it (not a list kept by hand: a
 * service or method added later is enumerated here too), is checked against its access rule with
 * real calls: without a token it is UNAUTHENTICATED, with a token lacking its scope
 * PERMISSION_DENIED naming the scope, with its scope (or admin) it reaches its handler; public
 * ones (reflection, health) answer without a token. A method with no access rule is refused.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { PUBLIC, RPC_ALSO_GRANTED_TO, Scope, requiredScope, rpcName } from "@nexusflow/common";
import type { Scheduler } from "../../src/scheduler.js";
import { startTestDatabase, startTestScheduler } from "../support.js";
import { bearer, createTestIssuer, type TestIssuer } from "./tokens.js";

const T = { timeout: 120_000 };

/** The kind of a registered grpc-js handler. */
type HandlerType = "unary" | "clientStream" | "serverStream" | "bidi";

/** The methods the scheduler's grpc-js server registered: path -> kind. */
function registeredMethods(scheduler: Scheduler): Map<string, HandlerType> {
  // grpc-js keeps them in the server's (private) `handlers` map: the one source of what is served.
  const server = (scheduler as unknown as { server?: { handlers?: unknown } }).server;
  const handlers = server?.handlers;
  assert.ok(handlers instanceof Map, "the scheduler's grpc-js server keeps its handlers in a Map");
  const methods = new Map<string, HandlerType>();
  for (const [path, handler] of handlers as Map<string, { type: HandlerType }>)
    methods.set(path, handler.type);
  return methods;
}

const identity = (b: Buffer): Buffer => b;

/**
 * Calls `path` (of `kind`) with an empty request and `metadata`; resolves with the call's status,
 * or with OK once the first response arrives (a stream that would go on is then cancelled).
 */
function call(
  client: grpc.Client,
  path: string,
  kind: HandlerType,
  metadata: grpc.Metadata,
): Promise<{ code: grpc.status; details: string }> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (code: grpc.status, details: string, stream?: grpc.ClientReadableStream<Buffer>): void => {
      if (settled) return;
      settled = true;
      resolve({ code, details });
      stream?.cancel();
    };
    const empty = Buffer.alloc(0);
    const options = { deadline: Date.now() + 20_000 };
    switch (kind) {
      case "unary":
        client.makeUnaryRequest(path, identity, identity, empty, metadata, options, (e) =>
          e === null ? done(grpc.status.OK, "") : done(e.code, e.details),
        );
        return;
      case "clientStream": {
        const s = client.makeClientStreamRequest(path, identity, identity, metadata, options, (e) =>
          e === null ? done(grpc.status.OK, "") : done(e.code, e.details),
        );
        s.write(empty);
        s.end();
        return;
      }
      case "serverStream": {
        const s = client.makeServerStreamRequest(path, identity, identity, empty, metadata, options);
        s.on("data", () => done(grpc.status.OK, "", s));
        s.on("error", () => undefined);
        s.on("status", (st: grpc.StatusObject) => done(st.code, st.details));
        return;
      }
      case "bidi": {
        const s = client.makeBidiStreamRequest(path, identity, identity, metadata, options);
        s.on("data", () => done(grpc.status.OK, "", s));
        s.on("error", () => undefined);
        s.on("status", (st: grpc.StatusObject) => done(st.code, st.details));
        // An empty message: a handler answers it (an error for most), and the call ends.
        s.write(empty);
        s.end();
        return;
      }
    }
  });
}

const AUTH_CODES = new Set([grpc.status.UNAUTHENTICATED, grpc.status.PERMISSION_DENIED]);

describe("every RPC the scheduler serves is checked against its scope", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let dir: string;
  let issuer: TestIssuer;
  let scheduler: Scheduler;
  let client: grpc.Client;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-every-rpc-"));
    issuer = await createTestIssuer(dir);
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url, { auth: await issuer.verifier() });
    client = new grpc.Client(scheduler.address, grpc.credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await scheduler?.stop();
    await db?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("has an access rule for every registered method", T, () => {
    const methods = registeredMethods(scheduler);
    const services = new Set([...methods.keys()].map((p) => rpcName(p).split("/")[0]));
    for (const s of [
      "nexusflow.v1.WorkflowService",
      "nexusflow.v1.ScheduleService",
      "nexusflow.v1.RateLimitService",
      "nexusflow.v1.EventService",
      "nexusflow.v1.ExecutorService",
      "nexusflow.v1.ArtifactService",
      "nexusflow.v1.ClusterService",
      "nexusflow.v1.ReplicaService",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
      "grpc.health.v1.Health",
    ])
      assert.ok(services.has(s), `${s} is served: ${[...services].join(", ")}`);
    const unmapped = [...methods.keys()].filter((p) => requiredScope(rpcName(p)) === undefined);
    assert.deepEqual(unmapped, [], "served methods without an entry in RPC_ACCESS (common/src/auth.ts)");
  });

  it("refuses every non-public method without a token, and serves the public ones", T, async () => {
    for (const [path, kind] of registeredMethods(scheduler)) {
      const r = await call(client, path, kind, new grpc.Metadata());
      if (requiredScope(rpcName(path)) === PUBLIC) {
        assert.ok(!AUTH_CODES.has(r.code), `${path} is public: ${r.code} ${r.details}`);
      } else {
        assert.equal(r.code, grpc.status.UNAUTHENTICATED, `${path}: ${r.code} ${r.details}`);
        assert.match(r.details, /missing bearer token/, path);
      }
    }
  });

  it("refuses every non-public method to a token without its scope, naming the scope", T, async () => {
    const nobody = bearer(await issuer.sign("nobody", { scope: "nothing:at-all" }));
    for (const [path, kind] of registeredMethods(scheduler)) {
      const rpc = rpcName(path);
      const scope = requiredScope(rpc);
      const r = await call(client, path, kind, nobody);
      if (scope === PUBLIC) continue;
      assert.equal(r.code, grpc.status.PERMISSION_DENIED, `${path}: ${r.code} ${r.details}`);
      assert.equal(r.details, `${rpc} requires the scope "${scope}"`);
    }
  });

  it("lets a token with each method's scope, and an admin token, reach its handler", T, async () => {
    const admin = bearer(await issuer.sign("operator", { scope: Scope.ADMIN }));
    for (const [path, kind] of registeredMethods(scheduler)) {
      const rpc = rpcName(path);
      const scope = requiredScope(rpc);
      if (scope === PUBLIC || scope === undefined) continue;
      const granted = [scope, ...(RPC_ALSO_GRANTED_TO[rpc] ?? [])];
      for (const s of granted) {
        const r = await call(client, path, kind, bearer(await issuer.sign(`holder-${s}`, { scope: s })));
        assert.ok(!AUTH_CODES.has(r.code), `${path} with ${s}: ${r.code} ${r.details}`);
      }
      const r = await call(client, path, kind, admin);
      assert.ok(!AUTH_CODES.has(r.code), `${path} with admin: ${r.code} ${r.details}`);
      // Every other scope is refused (admin aside).
      for (const other of Object.values(Scope)) {
        if (other === Scope.ADMIN || granted.includes(other)) continue;
        const refused = await call(client, path, kind, bearer(await issuer.sign("other", { scope: other })));
        assert.equal(
          refused.code,
          grpc.status.PERMISSION_DENIED,
          `${path} with ${other}: ${refused.details}`,
        );
      }
    }
  });

  it("refuses a method added without an access rule, even to admin, before its handler runs", T, async () => {
    // A service registered on the running server with no entry in RPC_ACCESS, as one added later
    // without a rule would be: its handler must never run.
    const server = (scheduler as unknown as { server: grpc.Server }).server;
    let ran = 0;
    server.addService(
      {
        open: {
          path: "/nexusflow.v1.ProbeService/Open",
          requestStream: false,
          responseStream: false,
          requestSerialize: identity,
          requestDeserialize: identity,
          responseSerialize: identity,
          responseDeserialize: identity,
        },
      },
      {
        open: (_c: unknown, cb: grpc.sendUnaryData<Buffer>) => {
          ran++;
          cb(null, Buffer.alloc(0));
        },
      },
    );
    assert.equal(registeredMethods(scheduler).get("/nexusflow.v1.ProbeService/Open"), "unary");
    const admin = bearer(await issuer.sign("operator", { scope: Scope.ADMIN }));
    for (const md of [new grpc.Metadata(), admin]) {
      const r = await call(client, "/nexusflow.v1.ProbeService/Open", "unary", md);
      assert.equal(r.code, grpc.status.PERMISSION_DENIED, r.details);
      assert.equal(r.details, "no access rule for nexusflow.v1.ProbeService/Open");
    }
    assert.equal(ran, 0, "the handler never ran");
    server.removeService({
      open: { path: "/nexusflow.v1.ProbeService/Open" } as grpc.MethodDefinition<unknown, unknown>,
    });
  });
});
