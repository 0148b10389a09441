/**
 * The background loops in a cluster (issue #22, cluster/coordinator.ts): the schedules' fire loop
 * runs on the replica holding partition 0 only, so two replicas never fire a schedule twice; a
 * schedule created through another replica's API wakes it at once (NOTIFY); it keeps firing after
 * the coordinator stops, and a stale coordinator (its heartbeats stuck, partition 0 taken from it)
 * cannot commit a plan. The outbox relay publishes on the coordinator only, marks fenced: every
 * row exactly once and in order per run across a clean move, a row committed late (a lower id
 * after a higher one) too, and a stale coordinator's mark is refused.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { EventWaitMatchStatus, OverlapPolicy, RunStatus, TaskStatus } from "@nexusflow/gen";
import pg from "pg";
import { Coordinator } from "../../src/cluster/coordinator.js";
import { PartitionLeases } from "../../src/cluster/partition-leases.js";
import { OutboxStore } from "../../src/events/outbox-store.js";
import { OutboxRelay } from "../../src/events/relay.js";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec } from "../e2e/harness.js";
import { MemoryPublisher, insertEvents } from "../events/support.js";
import {
  eventClient,
  migratedTestDatabase,
  startRunOf,
  scheduleClient,
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

describe("background loops in a cluster", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let sql: pg.Pool;
  const started: Scheduler[] = [];

  before(async () => {
    server = await startTestDatabase();
    sql = new pg.Pool({ connectionString: server.url, max: 4 });
  });
  after(async () => {
    for (const s of started.splice(0)) await s.stop();
    await sql?.end();
    await server?.close();
  });

  const replica = async (): Promise<Scheduler> => {
    const s = await startTestScheduler(server.url, { cluster: true, partitionLeaseMs: 1000 });
    started.push(s);
    return s;
  };
  const holdsZero = (s: Scheduler): boolean => s.partitions.epochOf(0) !== undefined;
  const stopReplica = async (s: Scheduler): Promise<void> => {
    started.splice(started.indexOf(s), 1);
    await s.stop();
  };

  /** The schedule's fires that started runs, and the runs labelled with it. */
  const firesOf = async (id: string) => {
    const { rows } = await sql.query<{ fire_key: string; run_id: string | null; status: string }>(
      `SELECT f.fire_key, f.run_id, f.status FROM schedule_fires f JOIN schedules s ON s.uid = f.schedule_uid
       WHERE s.schedule_id = $1 ORDER BY f.fire_at`,
      [id],
    );
    const runs = await sql.query<{ id: string; fire: string }>(
      `SELECT id, labels->>'schedule-fire' AS fire FROM workflow_runs WHERE labels->>'schedule' = $1`,
      [id],
    );
    return { fires: rows, runs: runs.rows };
  };
  /** One run per fire time, each fire's run the one labelled with its time. */
  const assertOncePerFire = async (id: string): Promise<number> => {
    const { fires, runs } = await firesOf(id);
    const labels = runs.map((r) => r.fire);
    assert.equal(new Set(labels).size, labels.length, `one run per fire time of ${id}`);
    const started = fires.filter((f) => f.status === "STARTED");
    assert.equal(runs.length, started.length, "every run belongs to a started fire");
    const byFire = new Map(runs.map((r) => [r.fire, r.id]));
    for (const f of started) assert.equal(byFire.get(f.fire_key), f.run_id, `fire ${f.fire_key}`);
    return started.length;
  };
  const startedCount = async (id: string): Promise<number> =>
    Number(
      (
        await sql.query<{ n: string }>("SELECT started_count AS n FROM schedules WHERE schedule_id = $1", [
          id,
        ])
      ).rows[0]?.n ?? 0,
    );

  it("fire a schedule once per fire time, created through a replica that is not the coordinator, across a stop and a stale coordinator", async () => {
    const a = await replica();
    const b = await replica();
    await waitFor(
      "an even split",
      () => a.partitions.held().length === 8 && b.partitions.held().length === 8,
    );
    const coordinator = holdsZero(a) ? a : b;
    const other = coordinator === a ? b : a;
    // The coordinator's fire loop has nothing to do: it sleeps its longest (a minute).
    await waitFor("the coordinator's fire loop to sleep", () => coordinator.schedules.passCount > 0);
    assert.throws(() => other.schedules, /not started/, "no fire loop runs on the other replica");

    await registerSpec(workflowClient(other.address), {
      name: "loops-tick",
      version: 1,
      steps: [{ id: "wait", type: "loops.nobody" }],
    });
    const schedules = scheduleClient(other.address);
    const createdAt = Date.now();
    await schedules.createSchedule({
      scheduleId: "every-second",
      spec: {
        cron: "* * * * * *",
        workflowName: "loops-tick",
        input: jsonToValue({}),
        overlapPolicy: OverlapPolicy.ALLOW_ALL,
        maxConcurrentRuns: 1000,
      },
    });
    // Woken through NOTIFY, not after its minute of sleep.
    await waitFor("the first fire", async () => (await startedCount("every-second")) >= 1, 15_000);
    assert.ok(Date.now() - createdAt < 15_000);
    await waitFor("three fires", async () => (await startedCount("every-second")) >= 3);
    await assertOncePerFire("every-second");

    // The coordinator stops cleanly: the other replica takes partition 0 and fires on.
    await stopReplica(coordinator);
    await waitFor("the other replica to be the coordinator", () => holdsZero(other));
    const before = await startedCount("every-second");
    await waitFor(
      "fires on the new coordinator",
      async () => (await startedCount("every-second")) >= before + 3,
    );
    await assertOncePerFire("every-second");

    // A stale coordinator: its heartbeats stuck (its replicas row locked) and partition 0 taken
    // from it through SQL. Its next plan commit is refused by the fence: it stops being the
    // coordinator, and no fire it planned after the takeover lands.
    const third = await replica();
    const blocker = await sql.connect();
    try {
      await blocker.query("BEGIN");
      await blocker.query("SELECT 1 FROM replicas WHERE id = $1 FOR UPDATE", [other.partitions.replicaId]);
      const fakeOwner = randomUUID();
      await sql.query(
        "UPDATE partitions SET owner = $1, epoch = epoch + 1, lease_expires_at = now() + interval '1 hour' WHERE partition = 0",
        [fakeOwner],
      );
      const atTakeover = (await firesOf("every-second")).fires.length;
      await waitFor("the stale coordinator's fire loop to stop", () => other.schedules.state === "STOPPED");
      assert.equal(holdsZero(other), false, "partition 0 is lost once the fence refused the plan");
      assert.equal(
        (await firesOf("every-second")).fires.length,
        atTakeover,
        "no fire planned after the takeover",
      );
      // Nobody else became the coordinator: partition 0 is still the fake owner's. (Not `schedules`:
      // a replica keeps its fire loop object once it was the coordinator, stopped when it no longer is.)
      assert.equal(holdsZero(third), false, "nobody else became the coordinator");
      const { rows: zero } = await sql.query<{ owner: string }>(
        "SELECT owner::text FROM partitions WHERE partition = 0",
      );
      assert.equal(zero[0]?.owner, fakeOwner, "partition 0 still the fake owner's");
    } finally {
      await blocker.query("ROLLBACK");
      blocker.release();
    }
    // Handed back: one of them takes partition 0 and fires on, still once per fire time.
    await sql.query("UPDATE partitions SET owner = NULL, lease_expires_at = now() WHERE partition = 0");
    await waitFor("a coordinator again", () => holdsZero(other) || holdsZero(third));
    const resumed = await startedCount("every-second");
    await waitFor("fires again", async () => (await startedCount("every-second")) >= resumed + 2);
    await schedules.pauseSchedule({ scheduleId: "every-second" }).catch(async () => {
      // `other` may be stopping: pause through the third.
      await scheduleClient(third.address).pauseSchedule({ scheduleId: "every-second" });
    });
    await assertOncePerFire("every-second");
  });
});

describe("schedule overlap policies across replicas", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  const started: Scheduler[] = [];

  before(async () => {
    server = await startTestDatabase();
  });
  after(async () => {
    for (const s of started.splice(0)) await s.stop();
    await server?.close();
  });

  it("count and end a schedule's runs held by the replica that is not the coordinator", async () => {
    for (let i = 0; i < 2; i++)
      started.push(await startTestScheduler(server.url, { cluster: true, partitionLeaseMs: 1000 }));
    const [a, b] = started as [Scheduler, Scheduler];
    await waitFor(
      "an even split",
      () => a.partitions.held().length === 8 && b.partitions.held().length === 8,
    );
    const coordinator = a.partitions.epochOf(0) === undefined ? b : a;
    const other = coordinator === a ? b : a;
    const runs = workflowClient(coordinator.address);
    await registerSpec(runs, { name: "loops-hold", version: 1, steps: [{ id: "s", type: "loops.nobody" }] });
    const spec = (overlapPolicy: OverlapPolicy) => ({
      cron: "* * * * * *",
      workflowName: "loops-hold",
      input: jsonToValue({}),
      overlapPolicy,
    });
    const schedules = scheduleClient(coordinator.address);
    const trigger = async (s: Scheduler, scheduleId: string): Promise<string> => {
      const { fire } = await scheduleClient(s.address).triggerSchedule({ scheduleId });
      const runId = fire?.runId ?? "";
      assert.equal(s.engine.isActive(runId), true, `run ${runId} held by the replica that triggered it`);
      return runId;
    };
    const statusOf = async (runId: string): Promise<RunStatus | undefined> =>
      (await runs.getRun({ runId })).run?.status;
    const scheduleOf = async (scheduleId: string) => (await schedules.getSchedule({ scheduleId })).schedule;

    // SKIP: a run active on the other replica (known from its committed row) skips every fire.
    await schedules.createSchedule({ scheduleId: "skip", spec: spec(OverlapPolicy.SKIP), paused: true });
    const skipRun = await trigger(other, "skip");
    await schedules.resumeSchedule({ scheduleId: "skip" });
    await waitFor("two fires skipped", async () => ((await scheduleOf("skip"))?.skippedCount ?? 0n) >= 2n);
    await schedules.pauseSchedule({ scheduleId: "skip" });
    assert.equal((await scheduleOf("skip"))?.startedCount, 1n, "only the triggered run started");
    assert.equal(await statusOf(skipRun), RunStatus.RUNNING, "the run goes on");

    // TERMINATE_OTHER: the next fire ends the runs on both replicas (the other's through its owner).
    await schedules.createSchedule({
      scheduleId: "terminate",
      spec: spec(OverlapPolicy.TERMINATE_OTHER),
      paused: true,
    });
    const ended = [
      await trigger(other, "terminate"),
      await trigger(other, "terminate"),
      await trigger(coordinator, "terminate"),
    ];
    await schedules.resumeSchedule({ scheduleId: "terminate" });
    for (const runId of ended)
      await waitFor(`run ${runId} cancelled`, async () => (await statusOf(runId)) === RunStatus.CANCELLED);
    await waitFor(
      "a scheduled fire's run",
      async () => ((await scheduleOf("terminate"))?.startedCount ?? 0n) >= 4n,
    );
    await schedules.pauseSchedule({ scheduleId: "terminate" });
  });
});

describe("event waits in a cluster", () => {
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

  const replica = async (parkAfterMs: number): Promise<Scheduler> => {
    const s = await startTestScheduler(server.url, {
      cluster: true,
      partitionLeaseMs: 1000,
      parking: { parkAfterMs },
    });
    started.push(s);
    return s;
  };

  /** Every run SUCCEEDED with `eventId` as its wait's output, each wait's match SATISFIED once. */
  const endedBy = async (s: Scheduler, runIds: readonly string[], eventId: string): Promise<void> => {
    for (const runId of runIds) {
      const run = await waitForRun(workflowClient(s.address), runId);
      assert.equal(run.status, RunStatus.SUCCEEDED, runId);
      const output = valueToJson(run.tasks.find((t) => t.stepId === "w")?.output) as { eventId: string };
      assert.equal(output.eventId, eventId);
    }
    const { rows } = await sql.query<{ run_id: string; status: string }>(
      "SELECT run_id, status FROM event_wait_matches WHERE event_id = $1 ORDER BY run_id",
      [eventId],
    );
    assert.deepEqual(
      rows.map((r) => [r.run_id, r.status]),
      [...runIds].sort().map((id) => [id, "SATISFIED"]),
    );
  };

  it("end the waits of runs on every replica, in memory or parked, once, with an event published on one", async () => {
    // A and B keep their waiting runs in memory; C parks them after 200 ms.
    const a = await replica(3_600_000);
    const b = await replica(3_600_000);
    await waitFor(
      "A and B split",
      () => a.partitions.held().length === 8 && b.partitions.held().length === 8,
    );
    await registerSpec(workflowClient(a.address), {
      name: "cross-wait",
      version: 1,
      steps: [{ id: "w", wait: { event: "orders.paid", filter: "event.payload.ok == true" } }],
    });
    const waiting = async (s: Scheduler, n: number, workflow = "cross-wait"): Promise<string[]> => {
      const ids: string[] = [];
      for (let i = 0; i < n; i++) ids.push(await startRunOf(workflowClient(s.address), workflow, {}));
      for (const id of ids)
        await waitFor(`run ${id} waiting`, async () => {
          const { run } = await workflowClient(s.address).getRun({ runId: id });
          return run?.tasks.find((t) => t.stepId === "w")?.status === TaskStatus.WAITING ? true : undefined;
        });
      return ids;
    };
    const onA = await waiting(a, 2);
    const onB = await waiting(b, 3);
    for (const id of onB) assert.ok(b.engine.isActive(id) && !a.engine.isActive(id), `${id} held by B`);

    // An event the filter refuses ends nothing, on either replica.
    const refused = await eventClient(a.address).publishEvent({
      key: "orders.paid",
      payload: jsonToValue({ ok: false, round: 1 }),
    });
    const { event } = await eventClient(a.address).publishEvent({
      key: "orders.paid",
      payload: jsonToValue({ ok: true, round: 1 }),
    });
    assert.ok(event !== undefined && refused.event !== undefined);
    assert.deepEqual(
      event.waits.map((w) => w.runId).sort(),
      [...onA].sort(),
      "the publisher matches its own runs",
    );
    assert.ok(event.waits.every((w) => w.status !== EventWaitMatchStatus.UNSPECIFIED));
    await endedBy(a, [...onA, ...onB], event.eventId);
    const { rows } = await sql.query("SELECT 1 FROM event_wait_matches WHERE event_id = $1", [
      refused.event.eventId,
    ]);
    assert.equal(rows.length, 0, "the refused event matched nothing");

    // A third replica that parks its waiting runs: an event published on A loads them back on C.
    const c = await replica(200);
    await waitFor(
      "C holds partitions, nobody more than its share",
      () => {
        const held = [a, b, c].map((s) => s.partitions.held().length);
        return held.every((n) => n > 0 && n <= 6) && held.reduce((x, y) => x + y, 0) === 16;
      },
      30_000,
    );
    // Waits for round 2 only: C's scan, when it takes partitions, reads the last 10 s of events
    // again (triggers/wait-scan.ts rewindMs), and may give round 1's event to a wait that began
    // just after it (documented in docs/replicas.md); on a loaded machine it did.
    await registerSpec(workflowClient(a.address), {
      name: "cross-wait-2",
      version: 1,
      steps: [{ id: "w", wait: { event: "orders.paid", filter: "event.payload.round == 2" } }],
    });
    const onC = await waiting(c, 3, "cross-wait-2");
    await waitFor("C's runs parked", async () => {
      const parked = await sql.query<{ run_id: string }>(
        "SELECT run_id FROM parked_runs WHERE run_id = ANY($1::uuid[])",
        [onC],
      );
      return parked.rows.length === onC.length;
    });
    const second = await eventClient(a.address).publishEvent({
      key: "orders.paid",
      payload: jsonToValue({ ok: true, round: 2 }),
    });
    assert.ok(second.event !== undefined);
    await endedBy(c, onC, second.event.eventId);
  });
});

describe("the outbox relay in a cluster", () => {
  const test = migratedTestDatabase();

  /** A replica's leases, coordinator and coordinated relay publishing to its own publisher. */
  const relayReplica = async () => {
    const log = testLogger("relay-replica");
    const leases = new PartitionLeases({ url: test.url, log, leaseMs: 1000 });
    const publisher = new MemoryPublisher();
    // eslint-disable-next-line prefer-const
    let coordinator: Coordinator;
    const relay = new OutboxRelay({
      pool: test.db.pool,
      publisher,
      log,
      coordinated: true,
      refused: (e) => coordinator.refused(e),
      batchSize: 7,
      pollIntervalMs: 20,
      retryInitialMs: 10,
      retryMaxMs: 50,
    });
    coordinator = new Coordinator({
      leases,
      log,
      roles: [
        {
          name: "outbox relay",
          start: (fence) => {
            if (fence !== undefined) relay.lead(fence);
            return { stop: () => relay.resign() };
          },
        },
      ],
    });
    await leases.start();
    relay.start();
    coordinator.start();
    return {
      leases,
      publisher,
      relay,
      coordinator,
      async stop() {
        await coordinator.stop();
        await relay.stop();
        await leases.stop();
      },
    };
  };

  it("publishes every row once, in order per run, while two writers commit and the coordinator moves", async () => {
    const a = await relayReplica();
    const b = await relayReplica();
    await waitFor("A the coordinator", () => a.coordinator.leading);
    assert.equal(b.coordinator.leading, false);

    // A row whose id is lower than rows committed after it: its transaction commits last.
    const late = await test.db.pool.connect();
    const lateRun = randomUUID();
    await late.query("BEGIN");
    const runs = Array.from({ length: 12 }, () => randomUUID());
    const expected = new Map<string, string[]>();
    // Two writers, as two replicas commit their own runs' events, row by row per run.
    const writer = async (mine: string[]): Promise<void> => {
      for (let seq = 1; seq <= 30; seq += 3)
        for (const run of mine) {
          const ids = await insertEvents(test.db.pool, run, 3, seq, { perRow: 3 });
          expected.set(run, [...(expected.get(run) ?? []), ...ids]);
        }
    };
    // The late row takes its id now (lower than every writer's), and commits after them.
    const lateIds = await insertEventsOn(late, lateRun);
    const writing = Promise.all([writer(runs.slice(0, 6)), writer(runs.slice(6))]);
    await waitFor("A publishing", () => a.publisher.published.length > 40);
    // A clean move: A stops (its batch in progress marked first), B takes partition 0 and goes on.
    await a.stop();
    await waitFor("B the coordinator", () => b.coordinator.leading);
    await writing;
    await late.query("COMMIT");
    late.release();
    expected.set(lateRun, lateIds);

    const total = [...expected.values()].reduce((n, ids) => n + ids.length, 0);
    await waitFor("every event published", async () => {
      const { rows } = await test.db.pool.query<{ n: string }>(
        "SELECT count(*) AS n FROM outbox_events WHERE published_at IS NULL",
      );
      return (
        Number(rows[0]?.n) === 0 && a.publisher.published.length + b.publisher.published.length === total
      );
    });
    assert.ok(b.publisher.published.length > 0, "B published after the move");
    const all = [...a.publisher.published, ...b.publisher.published];
    assert.equal(new Set(all.map((r) => r.eventId)).size, all.length, "no event published twice");
    for (const [run, ids] of expected)
      assert.deepEqual(
        all.filter((r) => r.runId === run).map((r) => r.eventId),
        ids,
        `run ${run}: every event, in order`,
      );

    // A stale coordinator's mark (A's last epoch) is refused by the database, nothing marked.
    const staleRun = randomUUID();
    await insertEvents(test.db.pool, staleRun, 2);
    const store = new OutboxStore(test.db.pool, 0n, true);
    assert.equal(await store.tryLock(), true);
    const { rows } = await test.db.pool.query<{ id: string }>(
      "SELECT id FROM outbox_events WHERE run_id = $1",
      [staleRun],
    );
    const epoch = Number(
      (await test.db.pool.query<{ epoch: string }>("SELECT epoch FROM partitions WHERE partition = 0"))
        .rows[0]?.epoch,
    );
    await assert.rejects(
      store.markPublished(
        rows.map((r) => Number(r.id)),
        { owner: a.leases.replicaId, epoch: epoch - 1 },
      ),
      (e: unknown) => (e as { cause?: { code?: string } }).cause?.code === "NF001",
    );
    await store.close();
    await waitFor("B publishes them", () => b.publisher.published.some((r) => r.runId === staleRun));
    await b.stop();
  });

  it("a resign while a turn connects (or prunes) waits for it, and the turn fetches nothing", async () => {
    const run = randomUUID();
    await insertEvents(test.db.pool, run, 2);
    /** A publisher whose connect waits for the test: a broker slow to answer. */
    class SlowConnect extends MemoryPublisher {
      connects = 0;
      open: () => void = () => undefined;
      readonly opened = new Promise<void>((resolve) => (this.open = resolve));
      override async connect(): Promise<void> {
        this.connects++;
        await this.opened;
      }
    }
    const publisher = new SlowConnect();
    const relay = new OutboxRelay({
      pool: test.db.pool,
      publisher,
      log: testLogger("relay"),
      coordinated: true,
      batchSize: 7,
      pollIntervalMs: 20,
      retryInitialMs: 10,
      retryMaxMs: 50,
    });
    relay.start();
    relay.lead({ owner: randomUUID(), epoch: 1 });
    try {
      await waitFor("a turn connecting", () => publisher.connects === 1);
      let resigned = false;
      const resigning = relay.resign().then(() => (resigned = true));
      // Not before the turn ends: the next coordinator would publish what this one still may.
      await new Promise<void>((resolve) => setImmediate(resolve));
      assert.equal(resigned, false);
      publisher.open();
      await resigning;
      assert.deepEqual(publisher.attempts, [], "nothing published after the resign");
    } finally {
      await relay.stop();
    }
    await test.db.pool.query("UPDATE outbox_events SET published_at = now() WHERE run_id = $1", [run]);
  });
});

/** Inserts one row of 2 events of `runId` in the transaction of `client`; their event ids. */
async function insertEventsOn(client: pg.PoolClient, runId: string): Promise<string[]> {
  // insertEvents takes a pool-like: the client answers query() alike.
  return insertEvents(client as unknown as pg.Pool, runId, 2, 1, { perRow: 2 });
}
