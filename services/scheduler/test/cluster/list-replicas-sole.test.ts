/**
 * ListReplicasResponse.sole: true from a scheduler without cluster mode (the installation's only
 * one, so executors skip their periodic refresh), false from a replica of a cluster.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ReplicaService } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import { startTestDatabase, startTestScheduler } from "../support.js";

describe("ListReplicas tells whether the scheduler is the only one", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  const started: Scheduler[] = [];

  before(async () => {
    server = await startTestDatabase();
  });
  after(async () => {
    for (const s of started.splice(0)) await s.stop();
    await server?.close();
  });

  const ask = (s: Scheduler) =>
    createClient(ReplicaService, createGrpcTransport({ baseUrl: `http://${s.address}` })).listReplicas({});

  it("answers sole from a scheduler without cluster mode, not from a cluster replica", async () => {
    const sole = await startTestScheduler(server.url);
    started.push(sole);
    const alone = await ask(sole);
    assert.equal(alone.sole, true);
    assert.equal(alone.answeredBy, sole.partitions.replicaId);
    await sole.stop();
    started.length = 0;

    const replica = await startTestScheduler(server.url, { cluster: true, partitionLeaseMs: 1000 });
    started.push(replica);
    const clustered = await ask(replica);
    assert.equal(clustered.sole, false);
    assert.equal(clustered.answeredBy, replica.partitions.replicaId);
  });
});
