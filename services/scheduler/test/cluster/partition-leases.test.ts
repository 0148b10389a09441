/**
 * Partition leases and the fence of group commits (issue #22, docs/replicas.md) on a real
 * PostgreSQL: replicas split the partitions, take over from one that stops or stops renewing
 * (raising the epoch), and a replica that lost its partitions cannot commit a change to their runs:
 * the statement that carries the change refuses it itself.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import pg from "pg";
import { ConfigError, loadSchedulerConfig } from "@nexusflow/common/config";
import {
  LIVENESS_LOCK_CLASS,
  PartitionCountMismatchError,
  PartitionLeases,
} from "../../src/cluster/partition-leases.js";
import {
  PartitionCountError,
  PartitionFencedError,
  isPartitionFencedError,
  partitionOf,
  type WriteFence,
} from "../../src/cluster/partitioning.js";
import type { CompiledWorkflow } from "../../src/dag/index.js";
import { newRunState, newTaskState, type ErrorInfo, type RunState } from "../../src/model/run-state.js";
import { BatchWriter } from "../../src/persistence/batch-writer.js";
import { openDatabase, type Database } from "../../src/persistence/database.js";
import { lifecycleEvent } from "../../src/persistence/outbox.js";
import { PostgresParkedRuns } from "../../src/persistence/parked-runs.js";
import { failRefusedRun } from "../../src/persistence/refused-run.js";
import { startTestDatabase, testLogger, waitFor } from "../support.js";

describe("partition leases (PostgreSQL)", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let db: Database;
  let definitionId: number;
  const started: PartitionLeases[] = [];

  before(async () => {
    server = await startTestDatabase();
    db = await openDatabase({ url: server.url, log: testLogger("db") });
    const { rows } = await db.pool.query<{ id: number }>(
      `INSERT INTO workflow_definitions (name, version, spec, content_hash) VALUES ('fenced', 1, '{}', 'h') RETURNING id`,
    );
    definitionId = Number(rows[0]?.id);
  });
  beforeEach(async () => {
    await db.pool.query("TRUNCATE partitions, replicas");
  });
  afterEach(async () => {
    for (const leases of started.splice(0)) await leases.stop();
  });
  after(async () => {
    await db?.close();
    await server?.close();
  });

  const replica = async (
    options: Partial<ConstructorParameters<typeof PartitionLeases>[0]> = {},
  ): Promise<PartitionLeases> => {
    const leases = new PartitionLeases({ url: server.url, log: testLogger("leases"), ...options });
    started.push(leases);
    await leases.start();
    return leases;
  };

  /**
   * A `beforeRelease` that waits until `unblock` is called; `handingOver` resolves once a
   * hand-over has begun (it was called).
   */
  const stuckHandOver = () => {
    let entered!: () => void;
    const handingOver = new Promise<void>((resolve) => (entered = resolve));
    let unblock!: () => void;
    const blocked = new Promise<void>((resolve) => (unblock = resolve));
    const beforeRelease = async (): Promise<void> => {
      entered();
      await blocked;
    };
    return { handingOver, beforeRelease, unblock };
  };

  const rows2 = async () =>
    (
      await db.pool.query<{ partition: number; owner: string | null; epoch: number; live: boolean }>(
        "SELECT partition, owner, epoch, lease_expires_at > now() AS live FROM partitions ORDER BY partition",
      )
    ).rows;

  const rows = async () =>
    (
      await db.pool.query<{ partition: number; owner: string | null; epoch: number }>(
        "SELECT partition, owner, epoch FROM partitions ORDER BY partition",
      )
    ).rows;

  it("splits the partitions between two replicas, and one takes all at once when the other stops", async () => {
    const a = await replica({ leaseMs: 2000, renewIntervalMs: 25, stablePeriodMs: 100 });
    assert.equal(a.partitionCount, 16);
    assert.deepEqual(
      a.held().map((x) => [x.partition, x.epoch]),
      Array.from({ length: 16 }, (_, p) => [p, 1]),
    );
    const b = await replica({ leaseMs: 2000, renewIntervalMs: 25, stablePeriodMs: 100 });
    // A sees two live replicas, waits for the stable period, hands over its excess; B takes it.
    await waitFor("an even split", () => a.held().length === 8 && b.held().length === 8);
    const split = await rows();
    assert.deepEqual(
      split.map((r) => r.owner),
      [...Array<string>(8).fill(a.replicaId), ...Array<string>(8).fill(b.replicaId)],
    );
    // Moved partitions changed owner once: epoch 2; the others kept epoch 1.
    assert.deepEqual(
      split.map((r) => r.epoch),
      [...Array<number>(8).fill(1), ...Array<number>(8).fill(2)],
    );
    // No flapping: more heartbeats of both move nothing.
    for (let i = 0; i < 5; i++) {
      await a.renew();
      await b.renew();
    }
    assert.deepEqual(await rows(), split);

    // A clean stop hands over at once: B's partitions are free when its stop returns (or A's own
    // heartbeat, every 25 ms, took them already); one heartbeat of A takes them, epoch + 1.
    await b.stop();
    const handed = await rows();
    assert.deepEqual(
      handed.slice(8).map((r) => (r.owner === a.replicaId ? null : r.owner)),
      Array<null>(8).fill(null),
      `B's partitions free or A's after B stopped: ${JSON.stringify(handed.slice(8))}`,
    );
    const replicas = await db.pool.query("SELECT id FROM replicas");
    assert.deepEqual(
      replicas.rows.map((r: { id: string }) => r.id),
      [a.replicaId],
    );
    await a.renew();
    assert.equal(a.held().length, 16);
    assert.deepEqual(
      (await rows()).map((r) => [r.owner, r.epoch]),
      [
        ...Array.from({ length: 8 }, () => [a.replicaId, 1]),
        ...Array.from({ length: 8 }, () => [a.replicaId, 3]),
      ],
    );
  });

  it("sole takes every partition at start only: later it takes those nobody holds, and says so", async () => {
    // A crashed predecessor's leases, unexpired: taken at start all the same.
    await db.pool.query("INSERT INTO partitions (partition) SELECT generate_series(0, 15)");
    await db.pool.query("UPDATE partitions SET owner = $1, lease_expires_at = now() + interval '1 hour'", [
      randomUUID(),
    ]);
    const taken: number[][] = [];
    const lost: number[][] = [];
    const sole = await replica({
      sole: true,
      renewIntervalMs: 60_000,
      onTaken: (p) => taken.push([...p]),
      onLost: (p) => lost.push([...p]),
    });
    assert.equal(sole.held().length, 16);
    assert.deepEqual(taken, [], "what start takes is held when it resolves, not told");
    // Another owner takes partition 3 (epoch + 1): lost at the next heartbeat, and not taken back.
    await db.pool.query(
      "UPDATE partitions SET owner = $1, epoch = epoch + 1, lease_expires_at = now() + interval '1 hour' WHERE partition = 3",
      [randomUUID()],
    );
    await sole.renew();
    await sole.renew();
    assert.deepEqual(lost, [[3]]);
    assert.equal(sole.epochOf(3), undefined);
    assert.equal(sole.held().length, 15);
    // Handed back: the next heartbeat takes it at the next epoch and tells.
    await db.pool.query("UPDATE partitions SET owner = NULL, lease_expires_at = now() WHERE partition = 3");
    await sole.renew();
    assert.deepEqual(taken, [[3]]);
    assert.equal(sole.epochOf(3), 3);
  });

  it("is told it lost a partition another held in between before it takes it back at a new epoch", async () => {
    const told: string[] = [];
    const sole = await replica({
      sole: true,
      renewIntervalMs: 60_000,
      onTaken: (p) => told.push(`taken ${p.join(",")}`),
      onLost: (p) => told.push(`lost ${p.join(",")}`),
    });
    const before = sole.epochOf(3) ?? -1;
    // While this replica could not renew, another took partition 3 and its lease ran out in turn:
    // the heartbeat that finds it gone does not take it back (its runs in memory are stale and
    // must be unloaded first); the next one does, at a new epoch, and its runs are read again.
    await db.pool.query(
      "UPDATE partitions SET owner = $1, epoch = epoch + 1, lease_expires_at = now() - interval '1 second' WHERE partition = 3",
      [randomUUID()],
    );
    await sole.renew();
    assert.deepEqual(told, ["lost 3"]);
    await sole.renew();
    assert.deepEqual(told, ["lost 3", "taken 3"], "its runs are unloaded, then read again");
    assert.equal(sole.epochOf(3), before + 2);
  });

  /** A new run with one queued task and its runStarted event, marked on `writer`. */
  const markRun = (writer: BatchWriter): RunState => {
    const now = new Date();
    const run = newRunState({
      id: randomUUID(),
      definitionId,
      workflow: { name: "fenced", version: 1, timeoutMs: null } as CompiledWorkflow,
      input: { n: 1 },
      idempotencyKey: null,
      labels: {},
      now,
    });
    const task = newTaskState(run.id, "only", "STEP", "noop", 0, now);
    task.status = "QUEUED";
    task.queuedAt = now;
    run.tasks.set(task.stepId, task);
    writer.markRun(run);
    writer.markTask(task);
    writer.addEvent(lifecycleEvent(run, { case: "runStarted", value: {} }));
    return run;
  };

  it("refuses, in the same statement, the late write of a replica whose partitions were taken over", async () => {
    // A renews only when told (a paused replica); its leases expire 300 ms after its last renewal.
    const a = await replica({ leaseMs: 300, renewIntervalMs: 1e9 });
    const fencedRuns: string[] = [];
    const writer = new BatchWriter({
      pool: db.writerPool,
      log: testLogger("writer"),
      fence: a,
      onFenced: (runIds) => fencedRuns.push(...runIds),
    });
    try {
      const run = markRun(writer);
      await writer.flush();
      const before = await db.pool.query<{ status: string }>(
        "SELECT status FROM workflow_runs WHERE id = $1",
        [run.id],
      );
      const stored = before.rows[0]?.status;
      assert.equal(stored, run.status);

      // B takes every partition once A's leases expired (in database time), each at epoch 2.
      const b = await replica({ leaseMs: 300, renewIntervalMs: 20 });
      await waitFor("B to take over", () => b.held().length === 16);
      assert.ok(b.held().every((x) => x.epoch === 2));
      // A still believes it holds its partitions at epoch 1, and writes: the run changes and a new run.
      assert.equal(a.epochOf(partitionOf(run.id, 16)), 1);
      run.status = "SUCCEEDED";
      writer.markRun(run);
      const late = markRun(writer);
      await assert.rejects(writer.flush(), (e: unknown) => {
        assert.ok(isPartitionFencedError(e), String(e));
        assert.ok(e.partitions.includes(partitionOf(run.id, 16)));
        // Refused by the statement itself (nexusflow_fence), not by A, which still believed.
        assert.equal((e.cause as { code?: string } | undefined)?.code, "NF001");
        return true;
      });
      const after = await db.pool.query<{ id: string; status: string }>(
        "SELECT id, status FROM workflow_runs WHERE id = ANY($1::uuid[])",
        [[run.id, late.id]],
      );
      assert.deepEqual(after.rows, [{ id: run.id, status: stored }]);
      const tasks = await db.pool.query("SELECT 1 FROM task_runs WHERE run_id = $1", [late.id]);
      assert.equal(tasks.rowCount, 0);
      assert.equal(writer.stats.fencedCommits, 1);
      assert.deepEqual(new Set(fencedRuns), new Set([run.id, late.id]));
      // The refusal told A: it no longer holds those partitions, and refuses their runs itself.
      assert.equal(a.epochOf(partitionOf(run.id, 16)), undefined);
      run.status = "FAILED";
      writer.markRun(run);
      await assert.rejects(writer.flush(), (e: unknown) => e instanceof PartitionFencedError);
      assert.equal(writer.stats.fencedCommits, 2);
      // Ending a refused run outside the writer is fenced the same way, in its transaction.
      const believing: WriteFence = {
        replicaId: a.replicaId,
        partitionCount: 16,
        epochOf: () => 1,
        fenced: () => {},
      };
      const problem = { type: "STORAGE_REFUSED", message: "x", details: null };
      await assert.rejects(
        failRefusedRun(db.pool, run.id, problem as unknown as ErrorInfo, believing),
        (e: unknown) =>
          isPartitionFencedError(e) && (e.cause as { code?: string } | undefined)?.code === "NF001",
      );
      await assert.rejects(
        failRefusedRun(db.pool, run.id, problem as unknown as ErrorInfo, a),
        isPartitionFencedError,
      );
      const still = await db.pool.query("SELECT status FROM workflow_runs WHERE id = $1", [run.id]);
      assert.deepEqual(still.rows, [{ status: stored }]);
      // Parking and unparking a run are fenced the same way, in the statement that writes.
      const told: PartitionFencedError[] = [];
      const stale = new PostgresParkedRuns(db.pool, {
        ...believing,
        fenced: (e) => told.push(e),
        held: () => Array.from({ length: 16 }, (_, partition) => ({ partition, epoch: 1 })),
      });
      const byDatabase = (e: unknown) =>
        isPartitionFencedError(e) && (e.cause as { code?: string } | undefined)?.code === "NF001";
      await assert.rejects(stale.park([{ runId: run.id, wakeAt: null, eventWaits: [] }]), byDatabase);
      const parkedRow = () => db.pool.query("SELECT 1 FROM parked_runs WHERE run_id = $1", [run.id]);
      assert.equal((await parkedRow()).rowCount, 0);
      await db.pool.query("INSERT INTO parked_runs (run_id, wake_at) VALUES ($1, NULL)", [run.id]);
      await assert.rejects(stale.unpark(run.id), byDatabase);
      assert.equal((await parkedRow()).rowCount, 1);
      assert.equal(told.length, 2);
      // Its owner unparks it.
      assert.equal(await new PostgresParkedRuns(db.pool, b).unpark(run.id), true);
      assert.equal((await parkedRow()).rowCount, 0);
    } finally {
      await writer.close();
    }
  });

  it("takes no partition while a commit of its previous owner holds it, and takes it once that commit ended", async () => {
    const a = await replica({ leaseMs: 200, renewIntervalMs: 1e9 });
    const held = a.held();
    // A commit of A in flight: inside its transaction, past the fence (which holds shared locks).
    const client = new pg.Client({ connectionString: server.url });
    await client.connect();
    try {
      await client.query("BEGIN");
      await client.query("SELECT nexusflow_fence($1, $2::int[], $3::bigint[])", [
        a.replicaId,
        [3],
        [held[3]?.epoch],
      ]);
      // A stopped renewing long ago: its leases and its heartbeat are older than a lease.
      await db.pool.query("UPDATE partitions SET lease_expires_at = now() - interval '1 second'");
      await db.pool.query("UPDATE replicas SET heartbeat_at = now() - interval '1 second'");
      const b = await replica({ leaseMs: 200, renewIntervalMs: 1e9 });
      assert.deepEqual(
        b.held().map((x) => x.partition),
        Array.from({ length: 16 }, (_, p) => p).filter((p) => p !== 3),
      );
      await client.query("COMMIT");
      await b.renew();
      assert.equal(b.held().length, 16);
      // A commit that starts after the takeover waits for none and is refused.
      await assert.rejects(
        client.query("SELECT nexusflow_fence($1, $2::int[], $3::bigint[])", [
          a.replicaId,
          [3],
          [held[3]?.epoch],
        ]),
        (e: unknown) => (e as { code?: string }).code === "NF001",
      );
    } finally {
      await client.end();
    }
  });

  it("takes the partitions of a replica whose process is gone at once (its liveness lock is free), not of one only paused", async () => {
    // A renews only at start (a paused process), with leases that outlive the test.
    const a = await replica({ leaseMs: 60_000, renewIntervalMs: 1e9 });
    const b = await replica({ leaseMs: 60_000, renewIntervalMs: 20 });
    const beats = async (): Promise<number> =>
      (
        await db.pool.query<{ at: Date }>("SELECT heartbeat_at AS at FROM replicas WHERE id = $1", [
          b.replicaId,
        ])
      ).rows[0]?.at.getTime() ?? 0;
    // Paused but alive (its liveness connection open): B takes nothing over many heartbeats.
    const first = await beats();
    await waitFor("B's heartbeats for a while", async () => (await beats()) > first + 500);
    assert.equal(b.held().length, 0);
    assert.equal(a.held().length, 16);
    // A's process "dies": PostgreSQL closes its liveness session, as it does for a killed process.
    const { rows } = await db.pool.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE application_name = 'nexusflow-liveness'",
    );
    assert.equal(rows.length, 2, "one liveness connection per replica");
    const aPid = (
      await db.pool.query<{ pid: number }>(
        `SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = $1::bigint::oid
           AND l.objid = (hashtext($2)::bigint & 4294967295)::oid AND l.granted`,
        [LIVENESS_LOCK_CLASS, a.replicaId],
      )
    ).rows[0]?.pid;
    assert.ok(aPid !== undefined, "A holds its liveness lock");
    await db.pool.query("SELECT pg_terminate_backend($1)", [aPid]);
    await waitFor("B to take every partition long before A's leases expire", () => b.held().length === 16);
    assert.ok(b.held().every((x) => x.epoch === 2));
    const { rows: after } = await db.pool.query<{ live: boolean }>(
      "SELECT bool_and(lease_expires_at > now() + interval '30 seconds') AS live FROM partitions",
    );
    assert.equal(after[0]?.live, true, "taken at B's heartbeat, A's leases were far from expiry");
  });

  it("keeps renewing the partitions it keeps while a hand-over waits on its runs (beforeRelease)", async () => {
    const { handingOver, beforeRelease, unblock } = stuckHandOver();
    const a = await replica({
      leaseMs: 500,
      renewIntervalMs: 25,
      stablePeriodMs: 100,
      beforeRelease,
    });
    const b = await replica({ leaseMs: 500, renewIntervalMs: 25, stablePeriodMs: 100 });
    try {
      // B joined, the cluster was stable: A hands 8 over and waits for their runs (the engine
      // commits and unloads them there, which can wait on the database for long).
      await handingOver;
      const { rows } = await db.pool.query<{ at: Date }>("SELECT now() AS at");
      const began = rows[0]?.at;
      await waitFor("A's heartbeats two leases after the hand-over began", async () => {
        const { rows: beat } = await db.pool.query<{ ok: boolean }>(
          "SELECT heartbeat_at > $2::timestamptz + interval '1 second' AS ok FROM replicas WHERE id = $1",
          [a.replicaId, began],
        );
        return beat[0]?.ok === true;
      });
      // Every partition still A's, renewed all along: none expired for B to take.
      assert.deepEqual(
        (await rows2()).map((r) => [r.owner, r.epoch, r.live]),
        Array.from({ length: 16 }, () => [a.replicaId, 1, true]),
      );
      assert.equal(b.held().length, 0);
      assert.ok(a.sure(0) && a.sure(15), "A is sure of its partitions");
    } finally {
      unblock();
    }
    await waitFor(
      "an even split once the hand-over ends",
      () => a.held().length === 8 && b.held().length === 8,
    );
  });

  it("keeps a partition it lost and took back at a new epoch while handing it over", async () => {
    const { handingOver, beforeRelease, unblock } = stuckHandOver();
    const a = await replica({
      leaseMs: 2000,
      renewIntervalMs: 25,
      stablePeriodMs: 100,
      beforeRelease,
    });
    // B heartbeats once, at start: live for A's count, so A hands its upper half over.
    const b = await replica({ leaseMs: 2000, renewIntervalMs: 1e9 });
    try {
      await handingOver;
      assert.ok(a.handingOver(15));
      // Meanwhile partition 15 is taken from A (B's, expired at once), and B goes silent: A's
      // heartbeats lose 15, then, alone, take it back at a new epoch.
      await db.pool.query(
        "UPDATE partitions SET owner = $1, epoch = epoch + 1, lease_expires_at = now() - interval '1 second' WHERE partition = 15",
        [b.replicaId],
      );
      await db.pool.query("UPDATE replicas SET heartbeat_at = now() - interval '1 minute' WHERE id = $1", [
        b.replicaId,
      ]);
      await waitFor("A holding 15 again at epoch 3", () => a.epochOf(15) === 3);
    } finally {
      unblock();
    }
    await waitFor("the hand-over over", () => !a.handingOver(8));
    // 8-14 went (epoch 1, as chosen); 15, held anew, stayed, and A's heartbeats renew it.
    assert.equal(a.epochOf(15), 3);
    await a.renew();
    const stored = await rows2();
    assert.deepEqual(stored[15], { partition: 15, owner: a.replicaId, epoch: 3, live: true });
    assert.ok(stored.slice(8, 15).every((r) => r.owner !== a.replicaId || r.epoch > 1));
  });

  // Leases and statement timeouts of a minute, the test's timeout half that: a heartbeat that
  // waited for the lock would hang until the statement timeout and fail the test.
  it(
    "heartbeats while its liveness lock is being taken again (another session still holds its key)",
    { timeout: 30_000 },
    async () => {
      const a = await replica({ leaseMs: 60_000, renewIntervalMs: 1e9 });
      const holder = new pg.Client({ connectionString: server.url });
      await holder.connect();
      try {
        // A's liveness session ends (a network blip); another session takes its key first.
        await db.pool.query(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nexusflow-liveness'",
        );
        await waitFor("the key taken by another session", async () => {
          const { rows } = await holder.query<{ ok: boolean }>(
            "SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok",
            [LIVENESS_LOCK_CLASS, a.replicaId],
          );
          return rows[0]?.ok === true;
        });
        const heartbeat = async (): Promise<number> =>
          (
            await db.pool.query<{ at: Date }>("SELECT heartbeat_at AS at FROM replicas WHERE id = $1", [
              a.replicaId,
            ])
          ).rows[0]?.at.getTime() ?? 0;
        // Heartbeats go on (each returns) while A's new liveness session waits for the key.
        await waitFor("A's new liveness session waiting for its key", async () => {
          await a.renew();
          const { rows } = await db.pool.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'nexusflow-liveness' AND wait_event_type = 'Lock'",
          );
          return rows[0]?.n === 1;
        });
        const before = await heartbeat();
        await a.renew();
        assert.ok((await heartbeat()) > before, "a heartbeat while the lock is awaited");
        assert.equal(a.held().length, 16);
        assert.ok(a.sure(0));
      } finally {
        await holder.end();
      }
    },
  );

  it("survives its connection being ended under a heartbeat, and heartbeats again on a new one", async () => {
    const a = await replica({ leaseMs: 5000, renewIntervalMs: 25 });
    const heartbeat = async () =>
      (
        await db.pool.query<{ at: Date }>("SELECT heartbeat_at AS at FROM replicas WHERE id = $1", [
          a.replicaId,
        ])
      ).rows[0]?.at.getTime();
    // Hold the replica's row: its next heartbeat waits on the lock, in flight, when its session ends.
    const holder = await db.pool.connect();
    try {
      await holder.query("BEGIN");
      await holder.query("SELECT 1 FROM replicas WHERE id = $1 FOR UPDATE", [a.replicaId]);
      let pid: number | undefined;
      await waitFor("a heartbeat waiting on the lock", async () => {
        const { rows } = await db.pool.query<{ pid: number }>(
          "SELECT pid FROM pg_stat_activity WHERE application_name = 'nexusflow-partitions' AND wait_event_type = 'Lock'",
        );
        pid = rows[0]?.pid;
        return pid !== undefined;
      });
      await db.pool.query("SELECT pg_terminate_backend($1)", [pid]);
    } finally {
      await holder.query("ROLLBACK");
      holder.release();
    }
    const before = await heartbeat();
    await waitFor("a heartbeat on a new connection", async () => ((await heartbeat()) ?? 0) > (before ?? 0));
    assert.equal(a.held().length, 16);
  });

  it("computes a run's partition the same in TypeScript and in SQL", async () => {
    const ids = Array.from({ length: 200 }, () => randomUUID());
    for (const count of [1, 7, 16, 4096]) {
      const { rows: sql } = await db.pool.query<{ p: number }>(
        "SELECT nexusflow_partition_of(id, $2) AS p FROM unnest($1::uuid[]) WITH ORDINALITY AS x(id, n) ORDER BY n",
        [ids, count],
      );
      assert.deepEqual(
        sql.map((r) => r.p),
        ids.map((id) => partitionOf(id, count)),
      );
    }
  });

  it("refuses a partition count of 0, NaN or another than the installation's, saying which", async () => {
    for (const bad of [0, -1, Number.NaN, 1.5, 5000])
      assert.throws(
        () => new PartitionLeases({ url: server.url, log: testLogger(), partitions: bad }),
        (e: unknown) => e instanceof PartitionCountError && /PARTITIONS/.test(e.message),
      );
    for (const bad of ["0", "NaN", "-3", "4097", "16x"])
      assert.throws(
        () => loadSchedulerConfig({ AUTH_DISABLED: "true", PARTITIONS: bad }),
        (e: unknown) => e instanceof ConfigError && /PARTITIONS/.test(e.message),
      );
    assert.equal(loadSchedulerConfig({ AUTH_DISABLED: "true" }).partitions, undefined);
    assert.equal(loadSchedulerConfig({ AUTH_DISABLED: "true", PARTITIONS: "64" }).partitions, 64);
    // The installation has 16 (the first test's replicas set it up).
    const other = new PartitionLeases({ url: server.url, log: testLogger(), partitions: 32 });
    await assert.rejects(other.start(), (e: unknown) => {
      assert.ok(e instanceof PartitionCountMismatchError);
      assert.match(e.message, /PARTITIONS is 32 but this installation was set up with 16 partitions/);
      return true;
    });
    assert.equal(other.state.kind, "STOPPED");
  });
});
