/**
 * No message from any client may end the gateway, nor be answered as the server's fault.
 *
 * Property-based (fast-check): a gateway with authentication on, in front of a REAL scheduler and
 * PostgreSQL, in this process, gets (with a valid admin token)
 * - every RPC of the services it exposes (from the descriptors, so a new RPC is fuzzed without
 *   code here) with generated messages over gRPC, gRPC-Web and Connect (JSON and binary): random
 *   values of every field, unset and set oneofs, NaN and ±Infinity, google.protobuf.Value with no
 *   kind and nested deeply, huge strings, NUL characters and lone surrogates, unknown enum numbers,
 *   timestamps out of range, foreign and malformed ids;
 * - raw bodies that are no message at all over Connect and gRPC;
 * - random REST requests under /v1: methods, paths (route templates filled with hostile
 *   segments, unknown paths, bad percent-encoding), query strings, content types, deadlines and
 *   bodies (garbage, truncated, deeply nested or random JSON, huge numbers).
 *
 * Every answer must be a success or a client error: never INTERNAL, UNKNOWN, DATA_LOSS or
 * UNAVAILABLE, never an HTTP 5xx (but 501 for what is not implemented). No uncaught exception or
 * unhandled rejection may happen meanwhile (process listeners), and afterwards the gateway still
 * serves: a legitimate RegisterWorkflow + StartRun + GetRun works over gRPC and REST.
 */
import assert from "node:assert/strict";
import * as http from "node:http";
import * as http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import {
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type DescService,
  ScalarType,
  create,
  getOption,
  hasOption,
  toBinary,
  toJsonString,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import {
  Http2SessionManager,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { createTokenVerifier } from "@nexusflow/common";
import { WorkflowService } from "@nexusflow/gen";
import { http as httpRule } from "@nexusflow/gen/google/api/annotations_pb";
import type { Scheduler } from "@nexusflow/scheduler";
import fc from "fast-check";
import { startTestDatabase, startTestScheduler } from "../../scheduler/test/support.js";
import { PROXIED_SERVICES } from "../src/routes.js";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";

const T = { timeout: 180_000 };
/** Fixed seeds: a failure reproduces; change them to explore further. */
const SEED = 20261205;
const KNOWN = { name: "fuzz-known", version: 1, steps: [{ id: "a", type: "noop" }] };

/** Codes that blame the server: a hostile message must never get one. */
const SERVER_FAULTS = new Set([Code.Internal, Code.Unknown, Code.DataLoss, Code.Unavailable]);

const ALL_METHODS: DescMethod[] = PROXIED_SERVICES.flatMap((s: DescService) => s.methods);

/** Names of things the scheduler has (filled in `before`), mixed into generated strings as foreign ids. */
const known = { runId: "00000000-0000-4000-8000-000000000000", workflow: KNOWN.name };

/** A huge string: an error quoting it is too long for gRPC trailers unless the gateway cuts it (proxy.ts). */
const HUGE = "h".repeat(20_000);

const stringArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.string({ maxLength: 20 }) },
  { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 20 }) },
  { weight: 1, arbitrary: fc.uuid() },
  {
    weight: 2,
    arbitrary: fc.constantFrom("", "\u0000", "a\u0000b", "\ud800", "../..", "%zz", "é".repeat(300)),
  },
  { weight: 2, arbitrary: fc.constant(null).map(() => known.runId) },
  { weight: 2, arbitrary: fc.constant(null).map(() => known.workflow) },
  { weight: 1, arbitrary: fc.constant(HUGE) },
);

function scalarArb(type: ScalarType): fc.Arbitrary<unknown> {
  switch (type) {
    case ScalarType.STRING:
      return stringArb;
    case ScalarType.BYTES:
      return fc.uint8Array({ maxLength: 32 });
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.DOUBLE:
      return fc.oneof(fc.double(), fc.constantFrom(NaN, Infinity, -Infinity, -0, Number.MAX_VALUE));
    case ScalarType.FLOAT:
      return fc.oneof(fc.float(), fc.constantFrom(NaN, Infinity, -Infinity));
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return fc.oneof(
        fc.integer({ min: -5, max: 5 }),
        fc.integer(),
        fc.constantFrom(-2147483648, 2147483647),
      );
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return fc.oneof(fc.nat(10), fc.nat({ max: 4294967295 }));
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
    default:
      return fc.oneof(
        fc.bigInt({ min: -5n, max: 5n }),
        fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
      );
  }
}

/** A google.protobuf.Value nested `depth` lists deep. */
function deepValue(depth: number): unknown {
  let v: unknown = { kind: { case: "stringValue", value: "bottom" } };
  for (let i = 0; i < depth; i++) v = { kind: { case: "listValue", value: { values: [v] } } };
  return v;
}

/** google.protobuf.Value inits: every kind, no kind, NaN and ±Infinity, nesting. */
const valueArb: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constant({ kind: { case: undefined } }),
    fc.constant({ kind: { case: "nullValue", value: 0 } }),
    scalarArb(ScalarType.DOUBLE).map((value) => ({ kind: { case: "numberValue", value } })),
    stringArb.map((value) => ({ kind: { case: "stringValue", value } })),
    fc.boolean().map((value) => ({ kind: { case: "boolValue", value } })),
    fc
      .dictionary(fc.string({ maxLength: 8 }), tie("value"), { maxKeys: 3 })
      .map((fields) => ({ kind: { case: "structValue", value: { fields } } })),
    fc
      .array(tie("value"), { maxLength: 3 })
      .map((values) => ({ kind: { case: "listValue", value: { values } } })),
    fc.integer({ min: 20, max: 400 }).map(deepValue),
  ),
})).value;

function singularArb(field: DescField, depth: number): fc.Arbitrary<unknown> {
  switch (field.fieldKind) {
    case "scalar":
      return scalarArb(field.scalar);
    case "enum":
      return fc.oneof(
        fc.constantFrom(...field.enum.values.map((v) => v.number)),
        fc.integer({ min: -3, max: 100 }),
      );
    case "message":
      return messageArb(field.message, depth + 1);
    case "list": {
      const element =
        field.listKind === "scalar"
          ? scalarArb(field.scalar)
          : field.listKind === "enum"
            ? fc.oneof(
                fc.constantFrom(...field.enum.values.map((v) => v.number)),
                fc.integer({ min: -3, max: 100 }),
              )
            : messageArb(field.message, depth + 1);
      return fc.array(element, { maxLength: depth > 1 ? 1 : 4 });
    }
    case "map": {
      const value =
        field.mapKind === "scalar"
          ? scalarArb(field.scalar)
          : field.mapKind === "enum"
            ? fc.integer({ min: -3, max: 100 })
            : messageArb(field.message, depth + 1);
      const key = field.mapKey === ScalarType.STRING ? stringArb : scalarArb(field.mapKey).map(String);
      return fc.dictionary(key, value, { maxKeys: depth > 1 ? 1 : 4 });
    }
  }
}

const messageArbs = new Map<string, fc.Arbitrary<Record<string, unknown>>>();

/** Inits of `desc` (for `create`): any subset of fields with any values, oneofs unset or set. */
function messageArb(desc: DescMessage, depth: number): fc.Arbitrary<Record<string, unknown>> {
  switch (desc.typeName) {
    case "google.protobuf.Value":
      return valueArb as fc.Arbitrary<Record<string, unknown>>;
    case "google.protobuf.Timestamp":
    case "google.protobuf.Duration":
      return fc.record({
        seconds: fc.oneof(fc.bigInt({ min: 0n, max: 2_000_000_000n }), scalarArb(ScalarType.INT64)),
        nanos: scalarArb(ScalarType.INT32),
      });
  }
  if (depth > 3) return fc.constant({});
  const key = `${desc.typeName}@${depth}`;
  const cached = messageArbs.get(key);
  if (cached !== undefined) return cached;
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  for (const member of desc.members) {
    if (member.kind === "oneof") {
      parts[member.localName] = fc.oneof(
        fc.constant({ case: undefined }),
        ...member.fields.map((f) => singularArb(f, depth).map((value) => ({ case: f.localName, value }))),
      );
    } else {
      parts[member.localName] = singularArb(member, depth);
    }
  }
  const arb = fc.record(parts, { requiredKeys: [] });
  messageArbs.set(key, arb);
  return arb;
}

/**
 * Checks a property; a failure names the seed, the path and the counterexample, cut short (a
 * generated string may be 300,000 characters long).
 */
async function assertProperty<T>(property: fc.IAsyncProperty<T>, params: fc.Parameters<T>): Promise<void> {
  const out = await fc.check(property, params);
  if (!out.failed) return;
  const example = fc.stringify(out.counterexample);
  const cause = out.errorInstance instanceof Error ? out.errorInstance.message : String(out.errorInstance);
  assert.fail(
    `${cause.slice(0, 2000)}\n(seed ${out.seed}, path "${out.counterexamplePath ?? ""}") counterexample: ` +
      `${example.length > 3000 ? `${example.slice(0, 3000)}... (${example.length} characters)` : example}`,
  );
}

/** The code and message of a ConnectError, or a rethrow of anything else. */
function outcomeOf(e: unknown): { code: Code; message: string } {
  if (e instanceof ConnectError) return { code: e.code, message: e.rawMessage.slice(0, 500) };
  throw e;
}

type Protocol = "grpc" | "grpc-web" | "connect-json" | "connect-binary";

/** The REST paths of every annotated RPC, from the descriptors: `[method, path template]`. */
function restTemplates(): [string, string][] {
  const out: [string, string][] = [];
  for (const method of ALL_METHODS) {
    if (!hasOption(method, httpRule)) continue;
    const rule = getOption(method, httpRule);
    for (const r of [rule, ...rule.additionalBindings]) {
      const p = r.pattern;
      if (p.case === "custom") out.push([p.value.kind.toUpperCase(), p.value.path]);
      else if (p.case !== undefined) out.push([p.case.toUpperCase(), p.value]);
    }
  }
  return out;
}

describe("the gateway survives hostile messages (property-based)", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let keys: TestKeys;
  let gateway: Gateway;
  let url: string;
  let admin: string;
  let sessions: Http2SessionManager;
  let agent: http.Agent;
  let transports: Record<Protocol, Transport>;
  const crashes: unknown[] = [];
  const onCrash = (e: unknown): void => {
    crashes.push(e);
  };

  before(async () => {
    process.on("uncaughtException", onCrash);
    process.on("unhandledRejection", onCrash);
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    keys = await createTestKeys();
    gateway = createGateway({
      schedulerAddress: scheduler.address,
      port: 0,
      verifier: await createTokenVerifier({
        publicKeyFiles: [keys.keys.EdDSA.jwkFile],
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
    });
    ({ url } = await gateway.listen());
    admin = await keys.sign(keys.keys.EdDSA, { scope: "admin" });
    sessions = new Http2SessionManager(url);
    agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    transports = {
      grpc: createGrpcTransport({ baseUrl: url, sessionManager: sessions }),
      "grpc-web": createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1", nodeOptions: { agent } }),
      "connect-json": createConnectTransport({ baseUrl: url, httpVersion: "1.1", nodeOptions: { agent } }),
      "connect-binary": createConnectTransport({
        baseUrl: url,
        httpVersion: "2",
        useBinaryFormat: true,
        sessionManager: sessions,
      }),
    };
    // Something to find: a workflow and a run whose ids the generators mix in.
    const header = new Headers({ authorization: `Bearer ${admin}` });
    const methods = WorkflowService.method;
    await transports.grpc.unary(methods.registerWorkflow, undefined, 10_000, header, {
      definition: { case: "specJson", value: JSON.stringify(KNOWN) },
    });
    const started = await transports.grpc.unary(methods.startRun, undefined, 10_000, header, {
      workflowName: KNOWN.name,
    });
    known.runId = started.message.run?.id ?? known.runId;
  });

  after(async () => {
    sessions?.abort();
    agent?.destroy();
    await gateway?.close();
    await scheduler?.stop();
    await db?.close();
    await keys?.close();
    process.off("uncaughtException", onCrash);
    process.off("unhandledRejection", onCrash);
  });

  /** Calls `method` with `init` over `protocol`; resolves with the code it ended with (OK included). */
  async function callRpc(
    method: DescMethod,
    init: Record<string, unknown>,
    protocol: Protocol,
  ): Promise<{ code: Code | "ok" | "skipped"; message?: string }> {
    // The client must be able to send the message at all (a Value with NaN has no JSON form, a
    // very deep one may not encode): what cannot leave the client is not the gateway's concern.
    let message;
    try {
      message = create(method.input, init);
      if (protocol === "connect-json") toJsonString(method.input, message);
      else toBinary(method.input, message);
    } catch {
      return { code: "skipped" };
    }
    const header = new Headers({ authorization: `Bearer ${admin}` });
    const transport = transports[protocol];
    try {
      if (method.methodKind === "unary") {
        await transport.unary(method as DescMethodUnary, undefined, 5000, header, message);
      } else {
        // Streams (WatchRun of a live run, logs with follow) may last: the first message will do.
        const abort = new AbortController();
        const res = await transport.stream(
          method as DescMethodServerStreaming,
          abort.signal,
          1500,
          header,
          createAsyncIterable([message]),
        );
        for await (const _ of res.message) break;
        abort.abort();
      }
      return { code: "ok" };
    } catch (e) {
      return outcomeOf(e);
    }
  }

  it(
    "answers generated messages for every RPC over gRPC, gRPC-Web and Connect with client errors only",
    T,
    async () => {
      const protocols: Protocol[] = ["grpc", "grpc-web", "connect-json", "connect-binary"];
      const arb = fc
        .constantFrom(...ALL_METHODS)
        .chain((method) =>
          fc.tuple(fc.constant(method), messageArb(method.input, 0), fc.constantFrom(...protocols)),
        );
      const seen = new Map<string, number>();
      await assertProperty(
        fc.asyncProperty(arb, async ([method, init, protocol]) => {
          const { code, message } = await callRpc(method, init, protocol);
          if (code === "skipped") return;
          const name = `${method.parent.name}.${method.name} ${code === "ok" ? "OK" : Code[code]}`;
          seen.set(name, (seen.get(name) ?? 0) + 1);
          if (code !== "ok")
            assert.ok(
              !SERVER_FAULTS.has(code),
              `${method.name} over ${protocol}: ${Code[code]} ${message ?? ""}`,
            );
          assert.deepEqual(crashes, []);
        }),
        { seed: SEED, numRuns: 300, endOnFailure: true },
      );
      // Every RPC was called, and some calls got through to a real answer.
      for (const method of ALL_METHODS)
        assert.ok(
          [...seen.keys()].some((k) => k.startsWith(`${method.parent.name}.${method.name} `)),
          method.name,
        );
    },
  );

  /** A raw gRPC call over h2c: the grpc-status it ended with. */
  function rawGrpc(path: string, contentType: string, body: Uint8Array): Promise<string | undefined> {
    return new Promise((resolve, reject) => {
      const session = http2.connect(url);
      session.on("error", reject);
      const stream = session.request({
        ":method": "POST",
        ":path": path,
        "content-type": contentType,
        te: "trailers",
        authorization: `Bearer ${admin}`,
      });
      let status: string | undefined;
      stream.on("response", (h) => (status ??= h["grpc-status"] as string | undefined));
      stream.on(
        "trailers",
        (t: http2.IncomingHttpHeaders) => (status = t["grpc-status"] as string | undefined),
      );
      stream.on("data", () => undefined);
      stream.on("close", () => {
        session.close();
        resolve(status);
      });
      stream.on("error", reject);
      stream.end(body);
    });
  }

  it("answers raw bodies that are no message over Connect and gRPC with client errors only", T, async () => {
    const bodyArb = fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      fc.string().map((s) => new TextEncoder().encode(s)),
      fc.json().map((j) => new TextEncoder().encode(j.slice(0, Math.max(0, j.length - 1)))),
      fc.constantFrom(
        new TextEncoder().encode("[".repeat(50_000)),
        new TextEncoder().encode('{"input": 1e999999}'),
        new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
      ),
    );
    const arb = fc.record({
      method: fc.constantFrom(...ALL_METHODS),
      body: bodyArb,
      protocol: fc.constantFrom("connect-json", "connect-proto", "grpc", "grpc-envelope", "grpc-compressed"),
    });
    await assertProperty(
      fc.asyncProperty(arb, async ({ method, body, protocol }) => {
        const path = `/${method.parent.typeName}/${method.name}`;
        const unary = method.methodKind === "unary";
        if (protocol.startsWith("connect") && unary) {
          const res = await fetch(`${url}${path}`, {
            method: "POST",
            headers: {
              authorization: `Bearer ${admin}`,
              "content-type": protocol === "connect-json" ? "application/json" : "application/proto",
            },
            body,
          });
          const text = await res.text();
          assert.ok(res.status < 500 || res.status === 501, `${path} (${protocol}): ${res.status} ${text}`);
          return;
        }
        // gRPC: the body as it is (no valid envelope), in an envelope, or flagged compressed.
        let data = body;
        if (protocol !== "grpc") {
          const head = new Uint8Array(5);
          head[0] = protocol === "grpc-compressed" ? 1 : 0;
          new DataView(head.buffer).setUint32(1, body.length);
          data = Buffer.concat([head, body]);
        }
        const status = await rawGrpc(path, "application/grpc+proto", data);
        assert.ok(status !== undefined, `${path}: no grpc-status`);
        assert.ok(!SERVER_FAULTS.has(Number(status)), `${path} (${protocol}): grpc-status ${status}`);
        assert.deepEqual(crashes, []);
      }),
      { seed: SEED, numRuns: 120, endOnFailure: true },
    );
  });

  /** One raw REST request: status, content type and body text (streams are cut after their head). */
  function rawRest(
    method: string,
    path: string,
    headers: Record<string, string>,
    body: Uint8Array | undefined,
  ): Promise<{ status: number; contentType: string; text: string }> {
    return new Promise((resolve, reject) => {
      const { hostname, port } = new URL(url);
      const req = http.request({
        host: hostname,
        port,
        method,
        path,
        agent,
        headers: { authorization: `Bearer ${admin}`, ...headers },
      });
      req.setTimeout(15_000, () => req.destroy(new Error(`no answer in 15 s: ${method} ${path}`)));
      req.on("error", reject);
      req.on("response", (res) => {
        const contentType = res.headers["content-type"] ?? "";
        const status = res.statusCode ?? 0;
        if (contentType.includes("ndjson")) {
          res.destroy();
          resolve({ status, contentType, text: "" });
          return;
        }
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => resolve({ status, contentType, text }));
        res.on("error", reject);
      });
      req.end(body);
    });
  }

  it("answers random REST requests under /v1 with client errors only", T, async () => {
    const templates = restTemplates();
    const segmentArb = fc.oneof(
      fc.constant(null).map(() => known.runId),
      fc.constant(null).map(() => known.workflow),
      fc.uuid(),
      fc.string({ maxLength: 12 }).map(encodeURIComponent),
      fc
        .string({ unit: "binary", maxLength: 12 })
        .map((s) => encodeURIComponent(s.replace(/[\ud800-\udfff]/g, ""))),
      fc.constantFrom(
        "%zz",
        "%",
        "%00",
        "..",
        ".",
        "",
        "a:b",
        "x%2Fy",
        "a".repeat(5000),
        "-1",
        "99999999999",
      ),
    );
    const anyMethod = fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS");
    // Mostly a route's own method and path with hostile segments; sometimes another method, a path
    // that is no route, or a malformed one.
    const targetArb: fc.Arbitrary<{ method: string; path: string }> = fc.oneof(
      {
        weight: 6,
        arbitrary: fc
          .tuple(
            fc.constantFrom(...templates),
            fc.array(segmentArb, { minLength: 4, maxLength: 4 }),
            fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: anyMethod }),
          )
          .map(([[routeMethod, template], segs, other]) => {
            let i = 0;
            const path = template.replace(/\{[^}]*\}/g, () => segs[i++ % segs.length] ?? "");
            return { method: other ?? routeMethod, path };
          }),
      },
      {
        weight: 1,
        arbitrary: fc
          .tuple(anyMethod, fc.array(segmentArb, { maxLength: 5 }))
          .map(([method, segs]) => ({ method, path: `/v1/${segs.join("/")}` })),
      },
      {
        weight: 1,
        arbitrary: fc
          .tuple(
            anyMethod,
            fc.constantFrom(
              "//[",
              "/v1",
              "/v1/",
              "/v1//runs",
              "/v1/runs/x:cancel:cancel",
              "/v1/runs/x:",
              "/v1/artifacts/../../../etc/passwd",
              "/v1/runs?",
              "/v1/runs/%E0%A4%A",
            ),
          )
          .map(([method, path]) => ({ method, path })),
      },
    );
    const queryArb = fc
      .array(
        fc.tuple(
          fc.oneof(
            fc.constantFrom(
              "page_size",
              "pageSize",
              "statuses",
              "labels[env]",
              "labels",
              "created_after",
              "createdBefore",
              "workflow_name",
              "follow",
              "attempt",
              "presign",
              "version",
              "latest_only",
              "a.b",
              "[",
              "spec.name",
              "run_id",
            ),
            fc.string({ maxLength: 6 }),
          ),
          fc.oneof(
            fc.string({ maxLength: 10 }),
            fc.constantFrom(
              "RUNNING",
              "DONE",
              "1e999",
              "-1",
              "99999999999999999999",
              "2025-13-45T99:00:00Z",
              "true",
              "NaN",
            ),
          ),
        ),
        { maxLength: 3 },
      )
      .map((pairs) => (pairs.length === 0 ? "" : `?${new URLSearchParams(pairs).toString()}`));
    const jsonBody = (text: string): Uint8Array => new TextEncoder().encode(text);
    const bodyArb = fc.oneof(
      fc.constant(undefined),
      fc.uint8Array({ maxLength: 64 }),
      fc.json({ depthSize: "medium" }).map(jsonBody),
      fc.json().map((j) => jsonBody(j.slice(0, Math.floor(j.length / 2)))),
      fc
        .integer({ min: 50, max: 100_000 })
        .map((n) => jsonBody(`{"input": ${"[".repeat(n)}${"]".repeat(n)}}`)),
      fc.integer({ min: 50, max: 20_000 }).map((n) => jsonBody(`${'{"a":'.repeat(n)}1${"}".repeat(n)}`)),
      fc
        .constantFrom(
          '{"workflowVersion": 1e999}',
          '{"workflow_version": 99999999999999999999}',
          '{"input": 1e999}',
          '{"input": {"n": -1e400}}',
          '{"labels": {"": ""}}',
          '{"view": "RUN_VIEW_NOPE"}',
          '{"view": 99}',
          '{"spec": {"steps": [{"id": null}]}}',
          '{"specJson": "{"}',
          '{"spec": {}, "specJson": "{}"}',
          '{"reason": "\\u0000"}',
          '{"input": "\\ud800"}',
          `{"idempotencyKey": "${"k".repeat(100_000)}"}`,
          "null",
          '"text"',
          "123",
        )
        .map(jsonBody),
      fc
        .dictionary(
          fc.constantFrom(
            "input",
            "labels",
            "workflowVersion",
            "view",
            "reason",
            "compensate",
            "spec",
            "specJson",
            "idempotencyKey",
            "runId",
          ),
          fc.jsonValue({ maxDepth: 3 }),
          { maxKeys: 4 },
        )
        .map((o) => jsonBody(JSON.stringify(o))),
    );
    const arb = fc.record({
      target: targetArb,
      query: queryArb,
      body: bodyArb,
      contentType: fc.option(
        fc.constantFrom(
          "application/json",
          "application/x-www-form-urlencoded",
          "text/plain",
          "multipart/form-data; boundary=x",
          "application/json; charset=latin1",
          "application/xml",
          "application/problem+json",
        ),
      ),
      timeout: fc.option(fc.constantFrom("", "abc", "0", "1", "-5", "99999999999", "2147483648", "3000")),
    });
    const statuses = new Map<number, number>();
    await assertProperty(
      fc.asyncProperty(arb, async ({ target: { method, path }, query, body, contentType, timeout }) => {
        const headers: Record<string, string> = { "connect-timeout-ms": timeout ?? "3000" };
        if (contentType !== null) headers["content-type"] = contentType;
        // Framed by its length whatever the method (Node sends a GET's body unframed otherwise).
        const sendBody = method === "HEAD" ? undefined : body;
        if (sendBody !== undefined) headers["content-length"] = String(sendBody.length);
        const res = await rawRest(method, `${path}${query}`, headers, sendBody);
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const what = `${method} ${path}${query} (${contentType ?? "no type"}): ${res.status} ${res.text.slice(0, 300)}`;
        // A deadline of 0 or 1 ms may expire before the answer: 504 is then the right answer.
        const expired = res.status === 504 && (timeout === "0" || timeout === "1");
        assert.ok(res.status < 500 || res.status === 501 || expired, what);
        if (res.status >= 400 && method !== "HEAD") {
          const status = JSON.parse(res.text) as { code?: unknown; message?: unknown };
          assert.equal(typeof status.code, "number", what);
          assert.equal(typeof status.message, "string", what);
        }
        assert.deepEqual(crashes, []);
      }),
      { seed: SEED, numRuns: 250, endOnFailure: true },
    );
    assert.ok((statuses.get(200) ?? 0) > 0, `some requests succeed: ${JSON.stringify([...statuses])}`);
  });

  // What the properties found, kept as examples (each failed before its fix).
  it("found: a request target `new URL` cannot parse is a 404, not the end of the process", T, async () => {
    const res = await rawRest("GET", "//[", {}, undefined);
    assert.equal(res.status, 404, res.text);
    assert.deepEqual(crashes, []);
  });

  it("found: undecodable protobuf is INVALID_ARGUMENT, not INTERNAL, on every protocol", T, async () => {
    // A google.protobuf.Value nested beyond protobuf's decoding depth: the client encodes it, the
    // gateway cannot decode it.
    const deep = create(WorkflowService.method.startRun.input, {
      workflowName: KNOWN.name,
      input: deepValue(120) as never,
    });
    for (const protocol of ["grpc", "grpc-web", "connect-binary"] as const) {
      const err = await transports[protocol]
        .unary(
          WorkflowService.method.startRun,
          undefined,
          5000,
          new Headers({ authorization: `Bearer ${admin}` }),
          deep,
        )
        .then(
          () => assert.fail("a message nested too deep was accepted"),
          (e: unknown) => ConnectError.from(e),
        );
      assert.equal(err.code, Code.InvalidArgument, `${protocol}: ${err.rawMessage}`);
      assert.match(err.rawMessage, /the request could not be decoded: .*maximum recursion depth/, protocol);
    }
  });

  it("found: a ListRuns time outside the Timestamp range is INVALID_ARGUMENT naming it", T, async () => {
    const err = await transports.grpc
      .unary(
        WorkflowService.method.listRuns,
        undefined,
        5000,
        new Headers({ authorization: `Bearer ${admin}` }),
        {
          createdAfter: { seconds: 2n ** 62n },
        },
      )
      .then(
        () => assert.fail("a time in the year 146 billion was accepted"),
        (e: unknown) => ConnectError.from(e),
      );
    assert.equal(err.code, Code.InvalidArgument, err.rawMessage);
    assert.match(err.rawMessage, /^created_after: /);
  });

  it("found: a deadline longer than Node's timers can wait is refused, not expired at once", T, async () => {
    const rest = await rawRest(
      "GET",
      `/v1/runs/${known.runId}`,
      { "connect-timeout-ms": "2147483648" },
      undefined,
    );
    assert.equal(rest.status, 400, rest.text);
    assert.match(rest.text, /connect-timeout-ms: at most 2147483647/);
    const connect = await fetch(`${url}/nexusflow.v1.WorkflowService/GetRun`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${admin}`,
        "content-type": "application/json",
        "connect-timeout-ms": "2147483648",
      },
      body: JSON.stringify({ runId: known.runId }),
    });
    assert.equal(connect.status, 400);
    assert.equal(((await connect.json()) as { code: string }).code, "invalid_argument");
    const fine = await rawRest(
      "GET",
      `/v1/runs/${known.runId}`,
      { "connect-timeout-ms": "2147483647" },
      undefined,
    );
    assert.equal(fine.status, 200, fine.text);
  });

  it(
    "still serves: RegisterWorkflow, StartRun and GetRun over gRPC and REST, and no crash happened",
    T,
    async () => {
      assert.equal(gateway.state, "listening");
      const header = new Headers({ authorization: `Bearer ${admin}` });
      const methods = WorkflowService.method;
      const spec = { name: "fuzz-after", version: 1, steps: [{ id: "a", type: "noop" }] };
      const registered = await transports.grpc.unary(methods.registerWorkflow, undefined, 10_000, header, {
        definition: { case: "specJson", value: JSON.stringify(spec) },
      });
      assert.equal(registered.message.workflow?.name, "fuzz-after");
      const started = await transports.grpc.unary(methods.startRun, undefined, 10_000, header, {
        workflowName: "fuzz-after",
        idempotencyKey: "after-fuzz",
      });
      const runId = started.message.run?.id ?? "";
      const got = await transports["connect-json"].unary(methods.getRun, undefined, 10_000, header, {
        runId,
      });
      assert.equal(got.message.run?.id, runId);
      const rest = await rawRest("GET", `/v1/runs/${runId}`, {}, undefined);
      assert.equal(rest.status, 200, rest.text);
      assert.equal((JSON.parse(rest.text) as { run: { id: string } }).run.id, runId);
      const health = await rawRest("GET", "/healthz", {}, undefined);
      assert.equal(health.status, 200);
      assert.deepEqual(crashes, []);
    },
  );
});
