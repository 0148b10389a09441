/**
 * Authentication and authorization at the gateway, end to end over the wire: the verifier with keys
 * from PEM and JWK files and a JWKS URL, every way a token can be wrong, scopes per RPC, public
 * reflection and health, REST error mapping, per-client stream limits, request size limits, and
 * no token in the logs. The upstream is an in-process fake (the proxy itself is tested elsewhere).
 */
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createClient,
  createRouterTransport,
} from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { AuthError, type TokenVerifier, createTokenVerifier } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";
import { RunStatus, WorkflowService } from "@nexusflow/gen";
import { SignJWT, UnsecuredJWT } from "jose";
import { pino } from "pino";
import { ServerReflection } from "../src/gen/grpc/reflection/v1/reflection_pb.js";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type JwksServer, type TestKeys, createTestKeys, startJwksServer } from "./keys.js";

const T = { timeout: 20_000 };

/** Authorization headers the fake upstream saw, by run id. */
const seenAuthorization = new Map<string, string | null>();
/** Aborted WatchRun streams, counted. */
let watchesEnded = 0;

function fakeUpstream(router: ConnectRouter): void {
  router.service(WorkflowService, {
    getRun(req, ctx) {
      seenAuthorization.set(req.runId, ctx.requestHeader.get("authorization"));
      return { run: { id: req.runId, status: RunStatus.RUNNING } };
    },
    startRun(req) {
      return { run: { id: `run-of-${req.workflowName}` }, created: true };
    },
    registerWorkflow() {
      return { workflow: { name: "w", version: 1 }, created: true };
    },
    async *watchRun(req, ctx) {
      yield { run: { id: req.runId, status: RunStatus.RUNNING } };
      await new Promise<void>((resolve) => {
        if (ctx.signal.aborted) resolve();
        else ctx.signal.addEventListener("abort", () => resolve(), { once: true });
      });
      watchesEnded++;
    },
  });
}

async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected the call to be refused");
}

describe("gateway authentication and authorization", () => {
  let keys: TestKeys;
  let jwks: JwksServer;
  let verifier: TokenVerifier;
  let gateway: Gateway;
  let url: string;
  let sessions: Http2SessionManager;
  const logLines: string[] = [];
  const issued: string[] = [];

  const sign = async (...args: Parameters<TestKeys["sign"]>): Promise<string> => {
    const token = await keys.sign(...args);
    issued.push(token);
    return token;
  };
  const client = () =>
    createClient(WorkflowService, createGrpcTransport({ baseUrl: url, sessionManager: sessions }));
  const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` }, timeoutMs: 10_000 });

  before(async () => {
    keys = await createTestKeys();
    // EdDSA from a JWK file (kid), RSA from a PEM file (no kid), ES256 only from the JWKS URL.
    jwks = await startJwksServer([keys.keys.ES256.publicJwk]);
    verifier = await createTokenVerifier({
      publicKeyFiles: [keys.keys.RS256.pemFile, keys.keys.EdDSA.jwkFile],
      jwksUrl: jwks.url,
      issuer: ISSUER,
      audience: AUDIENCE,
      clockToleranceSec: 30,
      jwksCooldownMs: 0,
    });
    const logs = new Writable({
      write(chunk: Buffer, _enc, done) {
        logLines.push(chunk.toString("utf8"));
        done();
      },
    });
    gateway = createGateway({
      schedulerAddress: "127.0.0.1:1",
      transport: createRouterTransport(fakeUpstream),
      port: 0,
      verifier,
      maxStreamsPerClient: 2,
      maxRequestBytes: 64 * 1024,
      logger: pino({ level: "debug" }, logs),
      drainTimeoutMs: 2000,
    });
    ({ url } = await gateway.listen());
    sessions = new Http2SessionManager(url);
  });

  after(async () => {
    sessions.abort();
    await gateway.close();
    await jwks.close();
    await keys.close();
  });

  it(
    "accepts RS256 (PEM file), ES256 (JWKS URL) and EdDSA (JWK file) tokens and forwards them",
    T,
    async () => {
      for (const alg of ["RS256", "ES256", "EdDSA"] as const) {
        const token = await sign(keys.keys[alg], { scope: "runs:read" });
        const res = await client().getRun({ runId: `ok-${alg}` }, bearer(token));
        assert.equal(res.run?.id, `ok-${alg}`);
        assert.equal(seenAuthorization.get(`ok-${alg}`), `Bearer ${token}`);
      }
    },
  );

  it("refuses every bad token with UNAUTHENTICATED and says why", T, async () => {
    const ed = keys.keys.EdDSA;
    const forger = await keys.newKey("EdDSA", "forger");
    const hmacWithPublicKey = await new SignJWT({ scope: "admin" })
      .setProtectedHeader({ alg: "HS256", kid: ed.kid })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject("mallory")
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode(JSON.stringify(ed.publicJwk)));
    const unsecured = new UnsecuredJWT({ scope: "admin" })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject("mallory")
      .setExpirationTime("1h")
      .encode();
    const cases: [string, string | undefined, RegExp][] = [
      ["no header", undefined, /missing bearer token/],
      ["not a bearer token", "Basic YWxpY2U6c2VjcmV0", /not 'Bearer <JWT>'/],
      ["malformed", "Bearer not.a.jwt", /malformed token/],
      ["alg none", `Bearer ${unsecured}`, /algorithm is not allowed/],
      ["HS256 keyed with the public key", `Bearer ${hmacWithPublicKey}`, /algorithm is not allowed/],
      ["expired", `Bearer ${await sign(ed, { scope: "admin", expIn: -300 })}`, /the token expired at \d{4}-/],
      ["not yet valid", `Bearer ${await sign(ed, { scope: "admin", nbfIn: 300 })}`, /not valid before/],
      [
        "wrong audience",
        `Bearer ${await sign(ed, { scope: "admin", aud: "other-api" })}`,
        /audience "other-api" is not "nexusflow-api"/,
      ],
      [
        "wrong issuer",
        `Bearer ${await sign(ed, { scope: "admin", iss: "https://evil.test" })}`,
        /issuer "https:\/\/evil.test" is not/,
      ],
      ["no exp", `Bearer ${await sign(ed, { scope: "admin", expIn: undefined })}`, /no "exp" claim/],
      ["no sub", `Bearer ${await sign(ed, { scope: "admin", sub: undefined })}`, /no "sub" claim/],
      [
        "forged under a trusted kid",
        `Bearer ${await sign(forger, { scope: "admin", kid: "ed-1" })}`,
        /signature is invalid/,
      ],
      ["unknown key", `Bearer ${await sign(keys.stranger, { scope: "admin" })}`, /no configured key matches/],
    ];
    for (const [name, header, message] of cases) {
      const err = await rejection(
        client().getRun(
          { runId: "x" },
          { headers: header === undefined ? {} : { authorization: header }, timeoutMs: 10_000 },
        ),
      );
      assert.equal(err.code, Code.Unauthenticated, `${name}: ${err.rawMessage}`);
      assert.match(err.rawMessage, message, name);
    }
  });

  it("tolerates a small clock skew on exp", T, async () => {
    const token = await sign(keys.keys.EdDSA, { scope: "runs:read", expIn: -10 });
    assert.equal((await client().getRun({ runId: "skew" }, bearer(token))).run?.id, "skew");
  });

  it("checks the RPC's scope from scope, scp or roles; admin may do everything", T, async () => {
    const ed = keys.keys.EdDSA;
    const reader = await sign(ed, { scope: "runs:read workflows:read" });
    const denied = await rejection(client().startRun({ workflowName: "orders" }, bearer(reader)));
    assert.equal(denied.code, Code.PermissionDenied);
    assert.equal(denied.rawMessage, 'nexusflow.v1.WorkflowService/StartRun requires the scope "runs:write"');
    const writerScp = await sign(ed, { scp: ["runs:write"] });
    assert.equal((await client().startRun({ workflowName: "orders" }, bearer(writerScp))).created, true);
    const deniedRead = await rejection(client().getRun({ runId: "x" }, bearer(writerScp)));
    assert.match(deniedRead.rawMessage, /requires the scope "runs:read"/);
    const adminRole = await sign(ed, { roles: ["admin"] });
    assert.equal((await client().registerWorkflow({}, bearer(adminRole))).created, true);
    const nothing = await sign(ed, {});
    assert.equal(
      (await rejection(client().getRun({ runId: "x" }, bearer(nothing)))).code,
      Code.PermissionDenied,
    );
  });

  it("caches the JWKS and fetches it again for an unknown kid (key rotation)", T, async () => {
    const ec = keys.keys.ES256;
    await client().getRun({ runId: "jwks-1" }, bearer(await sign(ec, { scope: "runs:read" })));
    const before = jwks.fetches;
    await client().getRun({ runId: "jwks-2" }, bearer(await sign(ec, { scope: "runs:read" })));
    assert.equal(jwks.fetches, before, "a known kid is served from the cache");
    const rotated = await keys.newKey("ES256", "ec-2");
    jwks.setKeys([ec.publicJwk, rotated.publicJwk]);
    const res = await client().getRun(
      { runId: "jwks-3" },
      bearer(await sign(rotated, { scope: "runs:read" })),
    );
    assert.equal(res.run?.id, "jwks-3");
    assert.equal(jwks.fetches, before + 1, "the unknown kid triggered one fetch");
  });

  it("answers UNAVAILABLE, not UNAUTHENTICATED, when the JWKS URL cannot be reached", T, async () => {
    const dead = await startJwksServer([]);
    await dead.close();
    const unreachable = await createTokenVerifier({
      jwksUrl: dead.url,
      issuer: ISSUER,
      audience: AUDIENCE,
      jwksTimeoutMs: 2000,
    });
    await assert.rejects(
      unreachable.verify(await sign(keys.keys.ES256, { scope: "runs:read" })),
      (e: unknown) =>
        e instanceof AuthError &&
        e.code === "UNAVAILABLE" &&
        /could not be fetched from the JWKS URL/.test(e.message),
    );
  });

  it("serves reflection and /healthz without a token", T, async () => {
    const reflection = createClient(
      ServerReflection,
      createGrpcTransport({ baseUrl: url, sessionManager: sessions }),
    );
    const names: string[] = [];
    for await (const res of reflection.serverReflectionInfo(
      createAsyncIterable([{ messageRequest: { case: "listServices" as const, value: "*" } }]),
      { timeoutMs: 10_000 },
    )) {
      if (res.messageResponse.case === "listServicesResponse")
        names.push(...res.messageResponse.value.service.map((s) => s.name));
    }
    assert.deepEqual(names.sort(), [
      "grpc.health.v1.Health",
      "nexusflow.v1.ArtifactService",
      "nexusflow.v1.ClusterService",
      "nexusflow.v1.EventService",
      "nexusflow.v1.RateLimitService",
      "nexusflow.v1.ReplicaService",
      "nexusflow.v1.ScheduleService",
      "nexusflow.v1.WorkflowService",
    ]);
    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
  });

  it("maps refusals of REST calls to 401 and 403 with a google.rpc.Status", T, async () => {
    const none = await fetch(`${url}/v1/runs/r1`);
    assert.equal(none.status, 401);
    assert.equal(none.headers.get("www-authenticate"), 'Bearer realm="nexusflow"');
    assert.deepEqual(await none.json(), {
      code: Code.Unauthenticated,
      message: "missing bearer token (send 'authorization: Bearer <JWT>')",
    });
    const expired = await fetch(`${url}/v1/runs/r1`, {
      headers: {
        authorization: `Bearer ${await sign(keys.keys.EdDSA, { scope: "runs:read", expIn: -3600 })}`,
      },
    });
    assert.equal(expired.status, 401);
    assert.match(expired.headers.get("www-authenticate") ?? "", /error="invalid_token"/);
    await expired.body?.cancel();
    const reader = await sign(keys.keys.EdDSA, { scope: "runs:read" });
    const forbidden = await fetch(`${url}/v1/workflows/orders/runs`, {
      method: "POST",
      headers: { authorization: `Bearer ${reader}`, "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(forbidden.status, 403);
    assert.deepEqual(await forbidden.json(), {
      code: Code.PermissionDenied,
      message: 'nexusflow.v1.WorkflowService/StartRun requires the scope "runs:write"',
    });
    const ok = await fetch(`${url}/v1/runs/r1`, { headers: { authorization: `Bearer ${reader}` } });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { run: { id: "r1", status: "RUN_STATUS_RUNNING" } });
  });

  it(
    "checks token and scope before reading a REST request: 401, 403, then 400 naming the field",
    T,
    async () => {
      const reader = await sign(keys.keys.EdDSA, { scope: "runs:read" });
      const writer = await sign(keys.keys.EdDSA, { scope: "runs:write" });
      const path = "/v1/workflows/orders/runs";
      // Each bad request, and what the caller with the right scope hears: the field, or 413.
      const cases: {
        name: string;
        path?: string;
        body: string;
        headers?: Record<string, string>;
        then: string;
      }[] = [
        { name: "malformed JSON", body: "{not json", then: "body" },
        { name: "truncated JSON", body: '{"input": {"name": "Ad', then: "body" },
        { name: "not an object", body: "[1, 2]", then: "body" },
        { name: "wrong type", body: '{"workflowVersion": "first"}', then: "workflowVersion" },
        { name: "wrong type, nested", body: '{"labels": {"env": 5}}', then: "labels" },
        { name: "huge number", body: '{"workflowVersion": 1e400}', then: "workflowVersion" },
        { name: "unknown field", body: '{"color": "red"}', then: "body" },
        { name: "too deep", body: `{"input": ${"[".repeat(5000)}${"]".repeat(5000)}}`, then: "body" },
        { name: "query parameter", path: `${path}?page_size=x`, body: "{}", then: "page_size" },
        {
          name: "bad deadline",
          body: "{}",
          headers: { "connect-timeout-ms": "soon" },
          then: "connect-timeout-ms",
        },
        { name: "oversized", body: JSON.stringify({ input: "x".repeat(100 * 1024) }), then: "413" },
      ];
      const post = async (c: (typeof cases)[number], token: string | undefined) => {
        const res = await fetch(`${url}${c.path ?? path}`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
            ...c.headers,
          },
          body: c.body,
        });
        const json = (await res.json()) as {
          code: number;
          message: string;
          details?: { fieldViolations?: { field: string }[] }[];
        };
        return { status: res.status, json };
      };
      for (const c of cases) {
        const none = await post(c, undefined);
        assert.deepEqual([none.status, none.json.code], [401, Code.Unauthenticated], `${c.name}, no token`);
        assert.match(none.json.message, /missing bearer token/, c.name);
        const denied = await post(c, reader);
        assert.deepEqual(
          [denied.status, denied.json.code],
          [403, Code.PermissionDenied],
          `${c.name}, no scope`,
        );
        assert.match(denied.json.message, /requires the scope "runs:write"/, c.name);
        const allowed = await post(c, writer);
        if (c.then === "413") {
          assert.deepEqual([allowed.status, allowed.json.code], [413, Code.ResourceExhausted], c.name);
          continue;
        }
        assert.deepEqual(
          [allowed.status, allowed.json.code],
          [400, Code.InvalidArgument],
          `${c.name}: ${allowed.json.message}`,
        );
        const fields = allowed.json.details?.[0]?.fieldViolations?.map((v) => v.field);
        assert.deepEqual(fields, [c.then], `${c.name}: ${allowed.json.message}`);
      }
      // A GET route's query is not read before the token is checked either.
      const query = await fetch(`${url}/v1/runs/r1?nonsense=1`);
      assert.equal(query.status, 401);
      await query.body?.cancel();
    },
  );

  it("checks token and scope before reading a Connect, gRPC or gRPC-Web request", T, async () => {
    const reader = await sign(keys.keys.EdDSA, { scope: "workflows:read" });
    const writer = await sign(keys.keys.EdDSA, { scope: "runs:write runs:read" });
    const auth = (token: string | undefined): Record<string, string> =>
      token === undefined ? {} : { authorization: `Bearer ${token}` };
    const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x0a, 0x05]);
    const envelope = (data: Buffer): Buffer => {
      const head = Buffer.alloc(5);
      head.writeUInt32BE(data.length, 1);
      return Buffer.concat([head, data]);
    };

    // Connect unary: the HTTP status and the error's code.
    const connectCases: [string, string, Buffer | string, number, string][] = [
      ["JSON garbage", "application/json", "{garbage", 400, "invalid_argument"],
      ["JSON of the wrong type", "application/json", '{"workflowVersion": "x"}', 400, "invalid_argument"],
      ["protobuf garbage", "application/proto", garbage, 400, "invalid_argument"],
      [
        "oversized",
        "application/json",
        JSON.stringify({ idempotencyKey: "x".repeat(100 * 1024) }),
        429,
        "resource_exhausted",
      ],
    ];
    for (const [name, contentType, body, status, code] of connectCases) {
      for (const [token, want] of [
        [undefined, [401, "unauthenticated"]],
        [reader, [403, "permission_denied"]],
        [writer, [status, code]],
      ] as const) {
        const res = await fetch(`${url}/nexusflow.v1.WorkflowService/StartRun`, {
          method: "POST",
          headers: { "content-type": contentType, ...auth(token) },
          body,
        });
        const json = (await res.json()) as { code: string; message: string };
        assert.deepEqual([res.status, json.code], want, `Connect, ${name}: ${json.message}`);
      }
    }

    // gRPC over h2c: unary and server streaming, a garbage message.
    const grpcStatus = (rpc: string, token: string | undefined, body: Buffer) =>
      new Promise<{ status: string | undefined; message: string | undefined }>((resolve, reject) => {
        const session = http2.connect(url);
        session.on("error", reject);
        const stream = session.request({
          ":method": "POST",
          ":path": `/nexusflow.v1.WorkflowService/${rpc}`,
          "content-type": "application/grpc+proto",
          te: "trailers",
          ...auth(token),
        });
        let headers: http2.IncomingHttpHeaders = {};
        stream.on("response", (h) => (headers = h));
        stream.on("trailers", (t: http2.IncomingHttpHeaders) => (headers = { ...headers, ...t }));
        stream.on("data", () => undefined);
        stream.on("end", () => {
          session.close();
          const message = headers["grpc-message"];
          resolve({
            status: headers["grpc-status"] as string | undefined,
            message: typeof message === "string" ? decodeURIComponent(message) : undefined,
          });
        });
        stream.on("error", reject);
        stream.end(body);
      });
    for (const [rpc, scoped] of [
      ["StartRun", reader],
      ["WatchRun", await sign(keys.keys.EdDSA, { scope: "runs:write" })],
    ] as const) {
      for (const [token, want] of [
        [undefined, String(Code.Unauthenticated)],
        [scoped, String(Code.PermissionDenied)],
        [writer, String(Code.InvalidArgument)],
      ] as const) {
        const res = await grpcStatus(rpc, token, envelope(garbage));
        assert.equal(res.status, want, `gRPC ${rpc}: ${res.message}`);
      }
    }

    // gRPC-Web over HTTP/1.1: the status is in the trailer frame at the end of the body.
    for (const [token, want] of [
      [undefined, Code.Unauthenticated],
      [reader, Code.PermissionDenied],
      [writer, Code.InvalidArgument],
    ] as const) {
      const res = await fetch(`${url}/nexusflow.v1.WorkflowService/StartRun`, {
        method: "POST",
        headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...auth(token) },
        body: envelope(garbage),
      });
      const bytes = Buffer.from(await res.arrayBuffer());
      const status =
        res.headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(bytes.toString("latin1"))?.[1];
      assert.equal(status, String(want), `gRPC-Web: ${bytes.toString("latin1")}`);
    }
  });

  it(
    "reads a REST body sent without a JSON content type as JSON, and refuses other types with 415",
    T,
    async () => {
      const writer = await sign(keys.keys.EdDSA, { scope: "runs:write" });
      const post = (contentType: string | undefined, body: string | Uint8Array) =>
        fetch(`${url}/v1/workflows/orders/runs`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${writer}`,
            ...(contentType === undefined ? {} : { "content-type": contentType }),
          },
          body,
        });
      const json = '{"input": {"name": "Ada"}}';
      for (const contentType of [
        "application/x-www-form-urlencoded", // curl -d
        "text/plain;charset=UTF-8", // fetch with a string body
        "application/json; charset=utf-8",
        "application/merge-patch+json",
      ]) {
        const res = await post(contentType, json);
        assert.equal(res.status, 200, contentType);
        assert.deepEqual(await res.json(), { run: { id: "run-of-orders" }, created: true });
      }
      const bare = await post(undefined, new TextEncoder().encode(json));
      assert.equal(bare.status, 200, "no content-type");
      await bare.body?.cancel();
      const form = await post("application/x-www-form-urlencoded", "input=Ada");
      assert.equal(form.status, 400, "a real form body is not JSON");
      assert.match(((await form.json()) as { message: string }).message, /^body: not JSON/);
      for (const contentType of [
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/octet-stream",
      ]) {
        const res = await post(contentType, json);
        assert.equal(res.status, 415, contentType);
        const body = (await res.json()) as {
          code: number;
          message: string;
          details: { fieldViolations: { field: string }[] }[];
        };
        assert.equal(body.code, Code.InvalidArgument);
        assert.match(body.message, /is not supported: send the body as JSON \(application\/json\)/);
        assert.equal(body.details[0]?.fieldViolations[0]?.field, "content-type");
      }
    },
  );

  it("limits concurrent streams per token subject", T, async () => {
    const alice = await sign(keys.keys.EdDSA, { sub: "alice", scope: "runs:read" });
    const bob = await sign(keys.keys.EdDSA, { sub: "bob", scope: "runs:read" });
    const open = async (token: string, runId: string) => {
      const abort = new AbortController();
      const stream = client().watchRun(
        { runId },
        { headers: { authorization: `Bearer ${token}` }, signal: abort.signal },
      );
      const it = stream[Symbol.asyncIterator]();
      const first = await it.next();
      assert.equal(first.done, false);
      return abort;
    };
    const a1 = await open(alice, "a1");
    const a2 = await open(alice, "a2");
    const refused = await rejection(open(alice, "a3"));
    assert.equal(refused.code, Code.ResourceExhausted);
    assert.match(refused.rawMessage, /too many concurrent streams/);
    const b1 = await open(bob, "b1");
    const ended = watchesEnded;
    a1.abort();
    await waitFor("alice's first stream to be released", () => watchesEnded > ended);
    // Refused until the gateway has counted the release too; then it opens.
    const a3 = await waitFor("alice to open a stream again", () => open(alice, "a3"));
    for (const c of [a2, b1, a3]) c.abort();
  });

  it("refuses oversized requests: RESOURCE_EXHAUSTED over gRPC, 413 over REST", T, async () => {
    const admin = await sign(keys.keys.EdDSA, { scope: "admin" });
    const big = "x".repeat(100 * 1024);
    const err = await rejection(
      client().registerWorkflow({ definition: { case: "specJson", value: big } }, bearer(admin)),
    );
    assert.equal(err.code, Code.ResourceExhausted);
    const rest = await fetch(`${url}/v1/workflows`, {
      method: "POST",
      headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
      body: JSON.stringify({ specJson: big }),
    });
    assert.equal(rest.status, 413);
    assert.equal(((await rest.json()) as { code: number }).code, Code.ResourceExhausted);
  });

  it("never writes a token to the logs", T, () => {
    const text = logLines.join("");
    assert.ok(text.includes('"subject":"alice"'), "calls are logged with their subject");
    assert.ok(issued.length > 10);
    for (const token of issued) {
      assert.ok(!text.includes(token), "a token appeared in the logs");
      assert.ok(!text.includes(token.split(".")[2] ?? "-"), "a token signature appeared in the logs");
    }
  });
});
