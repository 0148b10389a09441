/**
 * The gateway given the addresses of two scheduler replicas in cluster mode on one database
 * (issue #22): when the replica it calls stops, calls through the gateway go on to the other one
 * without an error.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue } from "@nexusflow/common";
import { RunStatus, WorkflowService } from "@nexusflow/gen";
import type { Scheduler } from "@nexusflow/scheduler";
import {
  registerSpec,
  startTestDatabase,
  startTestScheduler,
  waitFor,
} from "../../scheduler/test/support.js";
import { type Gateway, createGateway } from "../src/server.js";

const T = { timeout: 90_000 };

describe("gateway over two scheduler replicas in cluster mode", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let a: Scheduler;
  let b: Scheduler;
  let gateway: Gateway;
  let sessionManager: Http2SessionManager;
  let client: ReturnType<typeof createClient<typeof WorkflowService>>;
  let aStopped = false;

  before(async () => {
    db = await startTestDatabase();
    a = await startTestScheduler(db.url, { cluster: true, partitionLeaseMs: 1000 });
    b = await startTestScheduler(db.url, { cluster: true, partitionLeaseMs: 1000 });
    await waitFor(
      "the partitions split between the replicas",
      () => a.partitions.held().length > 0 && b.partitions.held().length > 0,
      30_000,
    );
    gateway = createGateway({ schedulerAddress: [a.address, b.address], port: 0 });
    const { url } = await gateway.listen();
    sessionManager = new Http2SessionManager(url);
    client = createClient(WorkflowService, createGrpcTransport({ baseUrl: url, sessionManager }));
  });

  after(async () => {
    sessionManager?.abort();
    await gateway?.close();
    if (!aStopped) await a?.stop();
    await b?.stop();
    await db?.close();
  });

  it("goes on through the other replica when the first one stops", T, async () => {
    await registerSpec(client, {
      name: "failover-queued",
      version: 1,
      steps: [{ id: "step", type: "failover.nobody" }],
    });
    const runIds: string[] = [];
    for (let i = 0; i < 4; i++) {
      const { run } = await client.startRun({ workflowName: "failover-queued", input: jsonToValue({ i }) });
      runIds.push(run?.id ?? "");
    }

    await a.stop();
    aStopped = true;

    // Reads right away: the gateway's calls to a find it gone and go to b.
    assert.equal((await client.getWorkflow({ name: "failover-queued" })).workflow?.name, "failover-queued");
    for (const runId of runIds) {
      const { run } = await client.getRun({ runId });
      assert.equal(run?.id, runId);
      assert.notEqual(run?.status, RunStatus.FAILED);
    }
    const listed = await client.listRuns({ workflowName: "failover-queued", pageSize: 10 });
    assert.deepEqual(listed.runs.map((r) => r.id).sort(), [...runIds].sort());
    // a handed its partitions over as it stopped: b starts runs in any of them.
    await waitFor("b to hold every partition", () => b.partitions.held().length === 16);
    const { run } = await client.startRun({ workflowName: "failover-queued", input: jsonToValue({ i: 9 }) });
    assert.ok(run?.id !== undefined && run.id !== "");
  });
});
