/**
 * ReplicaService through the gateway (issue #22): GET /v1/replicas (REST, from the proto's
 * google.api.http) lists the scheduler replica and the partitions it owns with their epochs, as
 * the database's tables hold them; the call needs runs:read. `nexusflow cluster` (the CLI's bin,
 * spawned) prints them.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { createTokenVerifier } from "@nexusflow/common";
import type { Scheduler } from "@nexusflow/scheduler";
import { startTestDatabase, startTestScheduler } from "../../scheduler/test/support.js";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";
import { nexusflow } from "./cli-process.js";

const T = { timeout: 60_000 };
type Json = Record<string, unknown>;

describe("GET /v1/replicas through the gateway", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let keys: TestKeys;
  let gateway: Gateway;
  let url: string;
  let sign: (scope: string) => Promise<string>;

  before(async () => {
    keys = await createTestKeys();
    const key = keys.keys.ES256;
    sign = (scope) => keys.sign(key, { sub: "replicas-test", scope });
    const verifier = await createTokenVerifier({
      publicKeyFiles: [key.pemFile],
      issuer: ISSUER,
      audience: AUDIENCE,
    });
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url, { partitions: 8 });
    gateway = createGateway({ schedulerAddress: scheduler.address, port: 0, verifier });
    ({ url } = await gateway.listen());
  });

  after(async () => {
    await gateway?.close();
    await scheduler?.stop();
    await db?.close();
    await keys?.close();
  });

  const get = async (path: string, token: string): Promise<{ status: number; json: Json }> => {
    const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: res.status, json: (await res.json()) as Json };
  };

  it(
    "lists the replica with its partitions and epochs over REST with runs:read, not without",
    T,
    async () => {
      const res = await get("/v1/replicas", await sign("runs:read"));
      assert.equal(res.status, 200, JSON.stringify(res.json));
      assert.equal(res.json["partitionCount"], 8);
      const replicas = res.json["replicas"] as Json[];
      assert.equal(replicas.length, 1);
      assert.equal(replicas[0]?.["replicaId"], scheduler.partitions.replicaId);
      assert.equal(replicas[0]?.["live"], true);
      assert.equal(replicas[0]?.["pid"], process.pid);
      assert.deepEqual(
        (replicas[0]?.["partitions"] as Json[]).map((p) => [p["partition"] ?? 0, p["epoch"]]),
        Array.from({ length: 8 }, (_, i) => [i, "1"]),
      );
      assert.equal(res.json["unowned"], undefined);
      assert.equal(res.json["answeredBy"], scheduler.partitions.replicaId);

      const denied = await get("/v1/replicas", await sign("workflows:read"));
      assert.equal(denied.status, 403);
      assert.equal(denied.json["code"], Code.PermissionDenied);
    },
  );

  it(
    "nexusflow cluster prints the replicas and their partitions, and --output json the response",
    T,
    async () => {
      const env = { NEXUSFLOW_ADDRESS: url, NEXUSFLOW_TOKEN: await sign("runs:read") };
      const table = await nexusflow(["cluster"], env);
      assert.equal(table.code, 0, table.stderr);
      const [summary, head, row, ...more] = table.stdout.trim().split("\n");
      assert.equal(summary, "8 partitions, 1 live replica");
      assert.match(head ?? "", /^REPLICA +ADDRESS +HOST\/PID +STATE +HEARTBEAT +PARTITIONS \(EPOCH\)$/);
      assert.match(
        row ?? "",
        new RegExp(`^${scheduler.partitions.replicaId} +${scheduler.address} +.+ live +.+ 8: 0-7 \\(1\\)$`),
      );
      assert.deepEqual(more, []);
      const json = await nexusflow(["cluster", "-o", "json"], env);
      assert.equal(json.code, 0, json.stderr);
      const parsed = JSON.parse(json.stdout) as { partitionCount: number; replicas: { replicaId: string }[] };
      assert.equal(parsed.partitionCount, 8);
      assert.deepEqual(
        parsed.replicas.map((r) => r.replicaId),
        [scheduler.partitions.replicaId],
      );
    },
  );
});
