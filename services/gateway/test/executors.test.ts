/**
 * ClusterService through the gateway: GET /v1/executors (REST, from the proto's google.api.http)
 * and ListExecutors over Connect list a real executor's session; the call needs runs:read; a bad
 * field is a 400 naming it. `nexusflow executors` (the CLI's bin, spawned) prints the session.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createTokenVerifier } from "@nexusflow/common";
import type { Executor } from "@nexusflow/executor";
import { ClusterService } from "@nexusflow/gen";
import type { Scheduler } from "@nexusflow/scheduler";
import { startTestDatabase, startTestExecutor, startTestScheduler } from "../../scheduler/test/support.js";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";
import { nexusflow } from "./cli-process.js";

const T = { timeout: 60_000 };
type Json = Record<string, unknown>;

describe("GET /v1/executors through the gateway", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let executor: Executor;
  let keys: TestKeys;
  let gateway: Gateway;
  let url: string;
  let sign: (scope: string) => Promise<string>;

  before(async () => {
    keys = await createTestKeys();
    const key = keys.keys.ES256;
    sign = (scope) => keys.sign(key, { sub: "executors-test", scope });
    const verifier = await createTokenVerifier({
      publicKeyFiles: [key.pemFile],
      issuer: ISSUER,
      audience: AUDIENCE,
    });
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    executor = await startTestExecutor(scheduler, { executorId: "gw-exec" });
    gateway = createGateway({ schedulerAddress: scheduler.address, port: 0, verifier });
    ({ url } = await gateway.listen());
  });

  after(async () => {
    await gateway?.close();
    await executor?.stop("test over");
    await scheduler?.stop();
    await db?.close();
    await keys?.close();
  });

  const get = async (path: string, token: string): Promise<{ status: number; json: Json }> => {
    const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: res.status, json: (await res.json()) as Json };
  };

  it("lists the executor's session over REST and Connect with runs:read", T, async () => {
    const reader = await sign("runs:read");
    const res = await get("/v1/executors?task_type=noop", reader);
    assert.equal(res.status, 200, JSON.stringify(res.json));
    const executors = res.json["executors"] as Json[];
    assert.equal(executors.length, 1);
    assert.equal(executors[0]?.["executorId"], "gw-exec");
    assert.ok((executors[0]?.["taskTypes"] as Json[]).some((t) => t["name"] === "noop"));

    const auth: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${reader}`);
      return next(req);
    };
    const client = createClient(
      ClusterService,
      createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors: [auth] }),
    );
    const page = await client.listExecutors({});
    assert.deepEqual(
      page.executors.map((e) => e.executorId),
      ["gw-exec"],
    );
    assert.ok(page.executors[0]?.attachTime !== undefined);
  });

  it("refuses a token without runs:read, and names a bad field", T, async () => {
    const writer = await sign("workflows:read");
    const denied = await get("/v1/executors", writer);
    assert.equal(denied.status, 403);
    assert.equal(denied.json["code"], Code.PermissionDenied);

    const reader = await sign("runs:read");
    const bad = await get("/v1/executors?page_size=5000", reader);
    assert.equal(bad.status, 400);
    assert.equal(bad.json["code"], Code.InvalidArgument);
    assert.match(bad.json["message"] as string, /^page_size: /);
    const hostile = await get(`/v1/executors?page_token=${"%00".repeat(50)}`, reader);
    assert.equal(hostile.status, 400);
    assert.match(hostile.json["message"] as string, /^page_token: /);

    const client = createClient(ClusterService, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
    await assert.rejects(
      client.listExecutors({}),
      (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated,
    );
  });

  it("nexusflow executors prints the session, and --output json the response", T, async () => {
    const env = { NEXUSFLOW_ADDRESS: url, NEXUSFLOW_TOKEN: await sign("runs:read") };
    const table = await nexusflow(["executors", "--type", "noop"], env);
    assert.equal(table.code, 0, table.stderr);
    const [head, row, ...more] = table.stdout.trim().split("\n");
    assert.match(head ?? "", /^EXECUTOR +SESSION +TYPES \(LEASES HELD\) +IN USE +CREDIT +STATE +ATTACHED$/);
    assert.match(row ?? "", /^gw-exec +[0-9a-f]{8} +.*\bnoop\b.* taking work /);
    assert.deepEqual(more, []);
    const json = await nexusflow(["executors", "-o", "json"], env);
    assert.equal(json.code, 0, json.stderr);
    const parsed = JSON.parse(json.stdout) as { executors: { executorId: string }[] };
    assert.deepEqual(
      parsed.executors.map((e) => e.executorId),
      ["gw-exec"],
    );
    const none = await nexusflow(["executors", "--type", "nobody.here"], env);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout, "no executor is attached for nobody.here\n");
    const bad = await nexusflow(["executors", "--type", "Not A Type"], env);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^nexusflow: executors: INVALID_ARGUMENT: task_type: /);
  });
});
