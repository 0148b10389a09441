/**
 * Schedulers in cluster mode (SCHEDULER_CLUSTER, issue #22): several live replicas share one
 * database without the one-per-database lock; they split the partitions, each starts runs in its
 * own partitions only, and a replica that stops hands its partitions to the others at once.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jsonToValue } from "@nexusflow/common";
import { ConfigError, loadSchedulerConfig } from "@nexusflow/common/config";
import pg from "pg";
import { partitionOf } from "../../src/cluster/partitioning.js";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec } from "../e2e/harness.js";
import { startTestDatabase, startTestScheduler, waitFor, workflowClient } from "../support.js";

describe("schedulers in cluster mode", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let sql: pg.Pool;
  const started: Scheduler[] = [];

  before(async () => {
    server = await startTestDatabase();
    sql = new pg.Pool({ connectionString: server.url, max: 2 });
  });
  after(async () => {
    for (const s of started.splice(0)) await s.stop();
    await sql?.end();
    await server?.close();
  });

  const replica = async (): Promise<Scheduler> => {
    const s = await startTestScheduler(server.url, {
      cluster: true,
      partitionLeaseMs: 1000,
      advertiseAddress: `replica-${started.length}.example:50051`,
    });
    started.push(s);
    return s;
  };

  it("split the partitions, start runs in their own, and take over those of a replica that stops", async () => {
    const a = await replica();
    assert.equal(a.partitions.held().length, 16, "alone, a replica holds every partition");
    const b = await replica();
    await waitFor(
      "an even split",
      () => a.partitions.held().length === 8 && b.partitions.held().length === 8,
    );
    const { rows } = await sql.query<{ id: string; address: string }>(
      "SELECT id, address FROM replicas ORDER BY address",
    );
    assert.deepEqual(
      rows.map((r) => [r.id, r.address]),
      [
        [a.partitions.replicaId, "replica-0.example:50051"],
        [b.partitions.replicaId, "replica-1.example:50051"],
      ],
    );

    // No executor attaches: the runs stay in flight, held by the replica that started them.
    await registerSpec(workflowClient(a.address), {
      name: "cluster-queued",
      version: 1,
      steps: [{ id: "step", type: "cluster.nobody" }],
    });
    const startedBy = new Map<Scheduler, string[]>();
    for (const s of [a, b]) {
      startedBy.set(s, []);
      const held = new Set(s.partitions.held().map((h) => h.partition));
      for (let i = 0; i < 10; i++) {
        const { run } = await workflowClient(s.address).startRun({
          workflowName: "cluster-queued",
          input: jsonToValue({ i }),
        });
        const runId = run?.id ?? "";
        startedBy.get(s)?.push(runId);
        assert.ok(held.has(partitionOf(runId, 16)), `run ${runId} is in a partition ${s.address} holds`);
      }
    }

    await b.stop();
    started.splice(started.indexOf(b), 1);
    await waitFor("A takes every partition back", () => a.partitions.held().length === 16);
    // ...and loads B's runs into memory.
    await waitFor("B's runs active on A", () =>
      (startedBy.get(b) ?? []).every((id) => a.engine.isActive(id)),
    );
  });

  it("read SCHEDULER_CLUSTER, SCHEDULER_ADVERTISE_ADDRESS and PARTITION_LEASE, refusing a malformed address", () => {
    const base = { AUTH_DISABLED: "true" };
    assert.equal(loadSchedulerConfig(base).cluster, false);
    assert.equal(loadSchedulerConfig(base).advertiseAddress, undefined);
    assert.equal(loadSchedulerConfig({ ...base, SCHEDULER_CLUSTER: "true" }).cluster, true);
    assert.equal(
      loadSchedulerConfig({ ...base, SCHEDULER_ADVERTISE_ADDRESS: "10.0.0.7:50051" }).advertiseAddress,
      "10.0.0.7:50051",
    );
    for (const bad of ["10.0.0.7", "http://x:1", "x y:1", ":50051"])
      assert.throws(
        () => loadSchedulerConfig({ ...base, SCHEDULER_ADVERTISE_ADDRESS: bad }),
        (e: unknown) => e instanceof ConfigError && /SCHEDULER_ADVERTISE_ADDRESS/.test(e.message),
        bad,
      );
    assert.equal(loadSchedulerConfig(base).partitionLeaseMs, 5000);
    assert.equal(loadSchedulerConfig({ ...base, PARTITION_LEASE: "1500ms" }).partitionLeaseMs, 1500);
    for (const bad of ["100ms", "1h", "soon"])
      assert.throws(
        () => loadSchedulerConfig({ ...base, PARTITION_LEASE: bad }),
        (e: unknown) => e instanceof ConfigError && /PARTITION_LEASE/.test(e.message),
        bad,
      );
    assert.throws(
      () => loadSchedulerConfig({ ...base, SCHEDULER_CLUSTER: "maybe" }),
      (e: unknown) => e instanceof ConfigError && /SCHEDULER_CLUSTER/.test(e.message),
    );
  });
});
