/**
 * An Engine on the in-memory stores whose runs follow the partitions it holds (issue #22,
 * engine/partition-load.ts), with an executor session played in process: a partition handed over
 * (rebalancing's beforeRelease) leaves memory with its runs, the completion accepted just before
 * is committed first, the leases of its runs are cancelled on the session and later reports for
 * them are rejected; the other partitions' runs go on; and the partition taken again loads its
 * runs (reading them again while the database fails), which finish without running the step
 * whose success was committed.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { UnavailableError, createLogger } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";
import { startTestTracing, type TestTracing } from "@nexusflow/common/telemetry/testing";
import type { Lease, LeaseKey, SessionResponse } from "@nexusflow/gen";
import { PartitionFencedError, keyPartition, partitionOf } from "../../src/cluster/partitioning.js";
import { Definitions } from "../../src/engine/definitions.js";
import type { SessionHandle } from "../../src/engine/dispatcher.js";
import { Engine, type EngineOptions } from "../../src/engine/engine.js";
import type { HeldPartitions } from "../../src/engine/partition-load.js";
import { TERMINAL_RUN_STATUSES } from "../../src/model/run-state.js";
import { MemoryDefinitionStore } from "../../src/persistence/memory-definition-store.js";
import { MemoryEngineStore } from "../../src/persistence/memory-engine-store.js";

const log = createLogger("partition-release", "warn");

/** Starts a run of the one-step workflow `one` (no key). */
const startOne = (engine: Engine) =>
  engine.startRun({ workflowName: "one", workflowVersion: 0, input: {}, idempotencyKey: "", labels: {} });
const COUNT = 4;

/** A session that keeps the leases and cancels it is sent, and answers pings; the test reports for it. */
class Session implements SessionHandle {
  readonly id = "session-1";
  readonly executorId = "executor-1";
  readonly types = new Set(["work"]);
  credit = 0;
  readonly leases = new Set<string>();
  draining = false;
  lastSeen = performance.now();
  readonly leased: Lease[] = [];
  readonly cancelled: LeaseKey[] = [];
  send(message: SessionResponse): void {
    const m = message.message;
    // A live executor answers each ping: the session is never silent.
    if (m.case === "ping") this.lastSeen = performance.now();
    else if (m.case === "lease") this.leased.push(m.value);
    else if (m.case === "leases") this.leased.push(...m.value.leases);
    else if (m.case === "cancel" && m.value.key !== undefined) this.cancelled.push(m.value.key);
  }
  close(): void {}
}

/** An Engine on the in-memory stores holding the partitions of `held` (partition -> epoch; every one at epoch 1 to begin with). */
function engineHolding(options: Partial<EngineOptions> = {}): {
  store: MemoryEngineStore;
  held: Map<number, number>;
  /** Partitions being handed over (rebalancing). */
  moving: Set<number>;
  /** How many times the engine asked whether a partition is being handed over, by partition. */
  asked: Map<number, number>;
  engine: Engine;
} {
  const store = new MemoryEngineStore();
  const held = new Map<number, number>(Array.from({ length: COUNT }, (_, p) => [p, 1]));
  const moving = new Set<number>();
  const asked = new Map<number, number>();
  const partitions: HeldPartitions = {
    partitionCount: COUNT,
    epochOf: (p) => held.get(p),
    held: () => [...held].map(([partition, epoch]) => ({ partition, epoch })),
    handingOver: (p) => {
      asked.set(p, (asked.get(p) ?? 0) + 1);
      return moving.has(p);
    },
  };
  const engine = new Engine({
    store,
    definitions: new Definitions(new MemoryDefinitionStore(), log),
    log,
    partitions,
    sessionTimeoutMs: 1000,
    heartbeatIntervalMs: 200,
    ...options,
  });
  return { store, held, moving, asked, engine };
}

/**
 * {@link engineHolding} with the one-step workflow `one` registered, started before the suite's
 * tests and stopped after them (call inside a describe).
 */
function oneStepEngine(options: Partial<EngineOptions> = {}): ReturnType<typeof engineHolding> {
  const holding = engineHolding(options);
  before(async () => {
    await holding.engine.start();
    await holding.engine.definitions.register({
      name: "one",
      version: 1,
      steps: [{ id: "a", type: "work" }],
    });
  });
  after(async () => {
    await holding.engine.stop();
  });
  return holding;
}

/**
 * Holds the store's reads of active runs (its loadActive) until `answer()`: each read is made at
 * once and answered then ("then wait"), or made only then ("wait, then read"). `reads()` counts
 * them; `restore()` puts the store's own back.
 */
function holdReads(
  store: MemoryEngineStore,
  order: "then wait" | "wait, then read",
): { reads: () => number; answer: () => void; restore: () => void } {
  const loadActive = store.loadActive.bind(store);
  let reads = 0;
  let answer = (): void => undefined;
  const answered = new Promise<void>((resolve) => (answer = resolve));
  store.loadActive = async (scope) => {
    reads++;
    if (order === "wait, then read") await answered;
    const rows = await loadActive(scope);
    if (order === "then wait") await answered;
    return rows;
  };
  return {
    reads: () => reads,
    answer: () => answer(),
    restore: () => {
      store.loadActive = loadActive;
    },
  };
}

describe("an Engine's runs follow the partitions it holds", () => {
  const { store, held, engine } = engineHolding();
  const session = new Session();

  before(async () => {
    await engine.start();
    await engine.definitions.register({
      name: "two",
      version: 1,
      steps: [
        { id: "a", type: "work" },
        { id: "b", type: "work", dependsOn: ["a"] },
      ],
    });
    engine.attach(session, []);
    assert.equal(engine.onCredit(session, 1000), null);
  });
  after(async () => {
    await engine.stop();
  });

  /** Started then Completed for the lease: the first rejection, or null. */
  const complete = (lease: Lease) =>
    engine.onStarted(session, lease.key) ??
    engine.onCompleted(session, lease.key, { step: lease.stepId }, null, null);

  it("hands a partition over with its last changes committed, and loads it again", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 24; i++)
      ids.push(
        (
          await engine.startRun({
            workflowName: "two",
            workflowVersion: 0,
            input: {},
            idempotencyKey: "",
            labels: {},
          })
        ).runId,
      );
    await waitFor("every step a leased", () => session.leased.length === ids.length);
    const moved = partitionOf(ids[0] as string, COUNT);
    const movedRuns = ids.filter((id) => partitionOf(id, COUNT) === moved);
    const others = ids.filter((id) => partitionOf(id, COUNT) !== moved);
    assert.ok(movedRuns.length >= 2 && others.length > 0, `${movedRuns.length} runs in partition ${moved}`);
    const leaseOf = (runId: string, stepId: string) =>
      session.leased.filter((l) => l.runId === runId && l.stepId === stepId);

    // A completion accepted, not committed yet, and the partition handed over in the same turn.
    const [first] = leaseOf(movedRuns[0] as string, "a");
    assert.ok(first?.key !== undefined);
    assert.equal(complete(first), null);
    assert.notEqual(store.read().tasks.get(first.key.taskRunId)?.status, "SUCCEEDED");
    await engine.partitions.release([moved]);
    held.delete(moved);
    assert.equal(
      store.read().tasks.get(first.key.taskRunId)?.status,
      "SUCCEEDED",
      "committed before it went",
    );
    assert.ok(movedRuns.every((id) => !engine.isActive(id)));
    assert.ok(others.every((id) => engine.isActive(id)));
    // The leases of its other runs were cancelled on the session, and reports for them are rejected.
    const stillLeased = movedRuns.slice(1).flatMap((id) => leaseOf(id, "a"));
    assert.deepEqual(
      session.cancelled.map((k) => k.taskRunId).sort(),
      stillLeased.map((l) => l.key?.taskRunId).sort(),
    );
    assert.ok(stillLeased.every((l) => !session.leases.has(l.key?.taskRunId ?? "")));
    assert.notEqual(complete(stillLeased[0] as Lease), null);
    const stored = JSON.stringify(
      [...store.read().tasks.values()].filter((t) => movedRuns.includes(t.runId)),
    );

    // The other partitions' runs finish.
    const done = (id: string) => TERMINAL_RUN_STATUSES.has(store.read().runs.get(id)?.status ?? "PENDING");
    const answered = new Set<string>(stillLeased.map((l) => `${l.key?.taskRunId}:${l.key?.fencingToken}`));
    answered.add(`${first.key.taskRunId}:${first.key.fencingToken}`);
    const answerAll = () => {
      for (const lease of session.leased) {
        const key = `${lease.key?.taskRunId}:${lease.key?.fencingToken}`;
        if (answered.has(key)) continue;
        answered.add(key);
        assert.equal(complete(lease), null, `report for ${lease.runId} ${lease.stepId}`);
        assert.equal(engine.onCredit(session, 1), null);
      }
      return false;
    };
    await waitFor("the other partitions' runs to finish", () => answerAll() || others.every(done));
    assert.equal(
      JSON.stringify([...store.read().tasks.values()].filter((t) => movedRuns.includes(t.runId))),
      stored,
      "nothing of the runs handed over was written since",
    );

    // Taken again (at the next epoch) while the database refuses the first two reads: the load is
    // made again until its runs are in memory; they finish, and the committed step a does not run again.
    held.set(moved, 2);
    const loadActive = store.loadActive.bind(store);
    let refused = 0;
    store.loadActive = (scope) => {
      if (refused < 2) {
        refused++;
        return Promise.reject(new Error("connection terminated (the database restarting)"));
      }
      return loadActive(scope);
    };
    try {
      await engine.partitions.load([moved]);
    } finally {
      store.loadActive = loadActive;
    }
    assert.equal(refused, 2);
    assert.ok(movedRuns.every((id) => engine.isActive(id)));
    await waitFor(
      "the runs of the partition taken again to finish",
      () => answerAll() || movedRuns.every(done),
    );
    for (const id of ids) assert.equal(store.read().runs.get(id)?.status, "SUCCEEDED", `run ${id}`);
    assert.equal(leaseOf(movedRuns[0] as string, "a").length, 1, "the committed step a ran once");
    for (const id of movedRuns.slice(1)) assert.equal(leaseOf(id, "a").length, 2, `run ${id}: a again`);
    assert.equal(engine.partitions.stats.revokedLeases, stillLeased.length);
  });
});

describe("a load of a partition taken whose commit fails after its runs are in memory", () => {
  const { store, held, engine } = oneStepEngine();

  it("is made again without telling the writer that the runs it recovered are not stored", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push((await startOne(engine)).runId);
    const moved = partitionOf(ids[0] as string, COUNT);
    const movedRuns = ids.filter((id) => partitionOf(id, COUNT) === moved);
    held.delete(moved);
    engine.partitions.unload([moved], "taken by another replica");
    assert.ok(movedRuns.every((id) => !engine.isActive(id)));

    // Taken again: the first try recovers the runs, then its commit fails (the database
    // restarting); the second reads them again and finds them in memory.
    held.set(moved, 2);
    const loadActive = store.loadActive.bind(store);
    const flush = store.flush.bind(store);
    let reads = 0;
    const forgotten: string[] = [];
    store.loadActive = (scope) => {
      reads++;
      return loadActive(scope);
    };
    store.flush = () => (reads < 2 ? Promise.reject(new Error("connection terminated")) : flush());
    // EngineStore.released (the database store's: the writer forgets the ids it was told were stored).
    const told = store as MemoryEngineStore & { released?: (ids: Iterable<string>) => void };
    told.released = (released) => void forgotten.push(...released);
    try {
      await engine.partitions.load([moved]);
    } finally {
      store.loadActive = loadActive;
      store.flush = flush;
      delete told.released;
    }
    assert.equal(reads, 2);
    assert.ok(movedRuns.every((id) => engine.isActive(id)));
    assert.deepEqual(
      forgotten.filter((id) => movedRuns.includes(id)),
      [],
      "the runs in memory are still taken for stored",
    );
  });
});

describe("a load of a partition taken that keeps failing, or that is being handed over", () => {
  const { store, held, moving, asked, engine } = oneStepEngine();
  const ids: string[] = [];
  const runsOf = (p: number) => ids.filter((id) => partitionOf(id, COUNT) === p);
  /** Partitions with runs, each once. */
  const withRuns = () => [...new Set(ids.map((id) => partitionOf(id, COUNT)))];
  /** Makes `p` lost, then taken again at `epoch`: its runs are out of memory until it is loaded. */
  const lostAndTaken = (p: number, epoch: number) => {
    held.delete(p);
    engine.partitions.unload([p], "taken by another replica");
    held.set(p, epoch);
    assert.ok(runsOf(p).every((id) => !engine.isActive(id)));
  };
  /** Reads of the store's active runs, and the partitions being handed over at each. */
  const reads: number[][] = [];
  before(async () => {
    for (let i = 0; i < 32; i++) ids.push((await startOne(engine)).runId);
    assert.ok(withRuns().length >= 3, "runs in three partitions at least");
    const loadActive = store.loadActive.bind(store);
    store.loadActive = (scope) => {
      reads.push([...moving]);
      return loadActive(scope);
    };
  });

  // A hang here is the bug: a timeout makes it a failure.
  it("holds up neither a hand-over of another partition nor its own", { timeout: 60_000 }, async () => {
    const [stuck, other] = withRuns() as [number, number];
    lostAndTaken(stuck, 2);
    // Every read of its runs fails (a row this version cannot read, say).
    const loadActive = store.loadActive.bind(store);
    let failed = 0;
    store.loadActive = () => {
      failed++;
      return Promise.reject(new Error("cannot read a row"));
    };
    let loadEnded = false;
    const loading = engine.partitions.load([stuck]).finally(() => (loadEnded = true));
    try {
      await waitFor("the load to have failed twice", () => failed >= 2);
      // Held, not loaded: what is asked of its runs meanwhile goes to their committed rows (the
      // schedules' fire loop), not to an empty memory that would take them for ended.
      for (const id of runsOf(stuck))
        assert.deepEqual([engine.partitions.owns(id), engine.partitions.loaded(id)], [true, false]);
      // Another partition is handed over meanwhile: its runs leave memory, the hand-over ends.
      moving.add(other);
      await engine.partitions.release([other]);
      held.delete(other);
      moving.delete(other);
      assert.ok(
        runsOf(other).every((id) => !engine.isActive(id)),
        "the other partition's runs left",
      );
      assert.equal(loadEnded, false, "the failing load goes on");
      // Its own partition is handed over too: the hand-over ends, and so does the load.
      moving.add(stuck);
      await engine.partitions.release([stuck]);
      held.delete(stuck);
      moving.delete(stuck);
      await loading;
    } finally {
      store.loadActive = loadActive;
    }
  });

  it("waits for a hand-over of its partition: loads it if still held after it, not if handed over", async () => {
    const [, , kept, ...rest] = withRuns() as [number, number, number, ...number[]];
    // Lost and taken back while it was being handed over: the hand-over leaves it held.
    lostAndTaken(kept, 2);
    moving.add(kept);
    const before = asked.get(kept) ?? 0;
    reads.length = 0;
    const loading = engine.partitions.load([kept]);
    await waitFor(
      "the load to have looked at it twice while it is handed over",
      () => (asked.get(kept) ?? 0) >= before + 2,
    );
    assert.deepEqual(reads, [], "its runs are not read while they leave");
    moving.delete(kept);
    await loading;
    assert.ok(
      runsOf(kept).every((id) => engine.isActive(id)),
      "its runs are back once it stays",
    );
    assert.deepEqual(reads, [[]]);

    // Handed over for good: the load ends without reading.
    const gone = rest[0] ?? kept;
    lostAndTaken(gone, 3);
    moving.add(gone);
    reads.length = 0;
    const ending = engine.partitions.load([gone]);
    const seen = asked.get(gone) ?? 0;
    await waitFor(
      "the load to have looked at it while it is handed over",
      () => (asked.get(gone) ?? 0) > seen,
    );
    held.delete(gone);
    moving.delete(gone);
    await ending;
    assert.deepEqual(reads, []);
    assert.ok(runsOf(gone).every((id) => !engine.isActive(id)));
  });
});

describe("a second load of a partition already loaded at the epoch it is held at", () => {
  const { store, engine } = oneStepEngine();
  const session = new Session();

  it("reads nothing: a run that finished during its read does not come back stale and run again", async () => {
    engine.attach(session, []);
    assert.equal(engine.onCredit(session, 10), null);
    const { runId } = await startOne(engine);
    await waitFor("its step leased", () => session.leased.some((l) => l.runId === runId));
    const lease = session.leased.find((l) => l.runId === runId) as Lease & { key: LeaseKey };
    const partition = partitionOf(runId, COUNT);
    // The read of a second load of its partition (a load retried after another one already loaded
    // it at this epoch) takes the run's rows now, RUNNING, and answers after it has finished.
    const reads = holdReads(store, "then wait");
    try {
      const loading = engine.partitions.load([partition]);
      assert.equal(engine.onStarted(session, lease.key), null);
      assert.equal(engine.onCompleted(session, lease.key, { ok: true }, null, null), null);
      await waitFor(
        "the run committed SUCCEEDED",
        () => store.read().runs.get(runId)?.status === "SUCCEEDED",
      );
      await waitFor("the run out of memory", () => !engine.isActive(runId));
      reads.answer();
      await loading;
    } finally {
      reads.restore();
    }
    assert.equal(reads.reads(), 0, "nothing read: the partition was loaded at this epoch");
    assert.equal(engine.isActive(runId), false, "the finished run stays finished");
    assert.equal(session.leased.filter((l) => l.runId === runId).length, 1, "its step leased once");
  });
});

describe("a StartRun whose run's partition moves while its start is committed", () => {
  const { store, held, engine } = oneStepEngine();

  it("is answered UNAVAILABLE, not as started (its changes may have been dropped)", async () => {
    // Every partition is lost and taken again (a new epoch) while the commit is made.
    const flush = store.flush.bind(store);
    store.flush = () =>
      flush().then(() => {
        for (const [p, epoch] of held) held.set(p, epoch + 1);
      });
    try {
      await assert.rejects(
        startOne(engine),
        (e: unknown) => e instanceof PartitionFencedError && e.partitions.length === 1,
      );
    } finally {
      store.flush = flush;
    }
    // Held steadily, a start is answered once committed.
    const { created } = await startOne(engine);
    assert.equal(created, true);
  });
});

describe("a lease granted in a commit the fence refused", () => {
  const { store, moving, engine } = oneStepEngine();
  const session = new Session();

  before(() => {
    engine.attach(session, []);
  });

  /** Makes the next commit end as one the fence refused for `lost` (after committing, as the writer's next try does). */
  const fenceNext = (lost: () => number): { readonly met: number; restore(): void } => {
    const flush = store.flush.bind(store);
    const state = {
      met: 0,
      restore: () => {
        store.flush = flush;
      },
    };
    store.flush = () => {
      if (state.met > 0) return flush();
      state.met++;
      return flush().then(() => {
        throw new PartitionFencedError([lost()], "partition lost");
      });
    };
    return state;
  };

  it("answers a StartRun whose commit the fence refused for another partition once it is committed", async () => {
    const before = new Set(store.read().runs.keys());
    // The partition after the new run's (committed by then) is the one lost.
    const fence = fenceNext(() => {
      const created = [...store.read().runs.keys()].find((id) => !before.has(id));
      return created === undefined ? 0 : (partitionOf(created, COUNT) + 1) % COUNT;
    });
    try {
      const { runId } = await startOne(engine);
      assert.equal(fence.met, 1, "its commit met the fence");
      assert.ok(store.read().runs.has(runId));
    } finally {
      fence.restore();
    }
  });

  it("is sent once committed when its run's partition is still held, its slot not lost", async () => {
    const { runId } = await startOne(engine);
    // The next commit is refused for another replica's partition, as the writer does: the changes
    // of the partitions still held commit on its next try, yet every waiter of the refused one is
    // rejected (the lease pump's among them).
    const fence = fenceNext(() => (partitionOf(runId, COUNT) + 1) % COUNT);
    try {
      assert.equal(engine.onCredit(session, 2), null);
      await waitFor("the lease of a sent", () => session.leased.some((l) => l.runId === runId));
    } finally {
      fence.restore();
    }
    assert.equal(fence.met, 1, "the lease's grant met the fence");
    // Two slots given: the runs' leases (this one's, the StartRun's above) took them, none was lost.
    await waitFor("both runs leased", () => session.leased.length === 2);
    assert.equal(session.credit, 0, "a slot per lease sent");
    const lease = session.leased.find((l) => l.runId === runId);
    assert.ok(lease?.key !== undefined);
    assert.equal(
      engine.onStarted(session, lease.key) ??
        engine.onCompleted(session, lease.key, { ok: true }, null, null),
      null,
    );
    await waitFor("the run to succeed", () => store.read().runs.get(runId)?.status === "SUCCEEDED");
  });

  it("refuses a keyed start while its key's partition is handed over from here (UNAVAILABLE), not an unkeyed one", async () => {
    const key = "order-1";
    moving.add(keyPartition("one", key, COUNT));
    try {
      await assert.rejects(
        engine.startRun({
          workflowName: "one",
          workflowVersion: 0,
          input: {},
          idempotencyKey: key,
          labels: {},
        }),
        (e: unknown) => e instanceof UnavailableError && /idempotency key is moving/.test(e.message),
      );
      assert.equal(
        [...store.read().runs.values()].some((r) => r.idempotencyKey === key),
        false,
        "no run for the key",
      );
      await startOne(engine);
    } finally {
      moving.clear();
    }
    // Once it stayed (the hand-over gave up) or came back: started as usual, once.
    const first = await engine.startRun({
      workflowName: "one",
      workflowVersion: 0,
      input: {},
      idempotencyKey: key,
      labels: {},
    });
    const again = await engine.startRun({
      workflowName: "one",
      workflowVersion: 0,
      input: {},
      idempotencyKey: key,
      labels: {},
    });
    assert.deepEqual([first.created, again.created, again.runId], [true, false, first.runId]);
  });
});

describe("a run whose partition is lost while its attempt is leased, tracing on", () => {
  let tracing: TestTracing;
  let holding: ReturnType<typeof engineHolding>;
  const session = new Session();

  before(async () => {
    // Before the engine is made: it keeps attempt spans only when tracing is on then.
    tracing = await startTestTracing();
    holding = engineHolding();
    await holding.engine.start();
    await holding.engine.definitions.register({
      name: "one",
      version: 1,
      steps: [{ id: "a", type: "work" }],
    });
    holding.engine.attach(session, []);
    assert.equal(holding.engine.onCredit(session, 10), null);
  });
  after(async () => {
    await holding.engine.stop();
    await tracing.stop();
  });

  it("ends the attempt's span here, saying the run left (the new owner opens its own)", async () => {
    const { runId } = await startOne(holding.engine);
    await waitFor("its step leased", () => session.leased.some((l) => l.runId === runId));
    const partition = partitionOf(runId, COUNT);
    holding.held.delete(partition);
    holding.engine.partitions.unload([partition], "taken by another replica");
    assert.equal(holding.engine.isActive(runId), false);
    const attempts = tracing
      .spans()
      .filter((s) => s.attributes["nexusflow.run_id"] === runId && s.name === "attempt a");
    assert.deepEqual(
      attempts.map((s) => s.attributes["nexusflow.attempt_status"]),
      ["LEFT"],
    );
  });
});

describe("a call for a run of a partition just taken whose runs are still being read", () => {
  // Long enough for the first test's load to end within it on a busy machine.
  const { store, held, engine } = oneStepEngine({ partitionLoadWaitMs: 60_000 });
  before(async () => {
    await engine.definitions.register({
      name: "gated",
      version: 1,
      steps: [{ id: "gate", wait: { signal: "go" } }],
    });
  });

  // Answered before the load, a cancel found no run in memory and did nothing (the run went on,
  // RUNNING), and a signal was refused "not on this scheduler; retry" by the run's own owner.
  it("waits for the load, then cancels or signals the run", async () => {
    const start = (workflowName: string) =>
      engine.startRun({ workflowName, workflowVersion: 0, input: {}, idempotencyKey: "", labels: {} });
    // A run of each kind in one partition.
    const first = (await start("one")).runId;
    const partition = partitionOf(first, COUNT);
    let gated = "";
    while (gated === "") {
      const { runId } = await start("gated");
      if (partitionOf(runId, COUNT) === partition) gated = runId;
    }
    // Lost, then taken again: its read is held until the test lets it answer.
    held.delete(partition);
    engine.partitions.unload([partition], "taken by another replica");
    held.set(partition, 2);
    assert.equal(engine.isActive(first), false);
    const reads = holdReads(store, "wait, then read");
    let loading: Promise<void> | undefined;
    try {
      loading = engine.partitions.load([partition]);
      await waitFor("the partition's read to have begun", () => reads.reads() === 1);
      let cancelDone = false;
      const cancelling = engine.cancelRun(first, "by the test").then(() => (cancelDone = true));
      const signalling = engine.waits.signal(gated, { name: "go", key: null, payload: null });
      // Neither is answered while the partition's runs are not in memory.
      await new Promise<void>((resolve) => setImmediate(resolve));
      assert.equal(cancelDone, false, "the cancel waits for the load");
      reads.answer();
      await loading;
      await cancelling;
      const outcome = await signalling;
      assert.equal(outcome?.stepId, "gate");
      assert.equal(outcome.duplicate, false);
    } finally {
      reads.answer();
      await loading;
      reads.restore();
    }
    await waitFor("both runs ended", () =>
      [first, gated].every((id) => TERMINAL_RUN_STATUSES.has(store.read().runs.get(id)?.status ?? "PENDING")),
    );
    assert.equal(store.read().runs.get(first)?.status, "CANCELLED");
    assert.equal(store.read().runs.get(gated)?.status, "SUCCEEDED");
  });
});

describe("a call for a run of a partition whose load outlasts the wait", () => {
  const { store, held, engine } = oneStepEngine({ partitionLoadWaitMs: 50 });

  it("answers UNAVAILABLE (a cancel never says it cancelled nothing), and goes through once loaded", async () => {
    const { runId } = await startOne(engine);
    const partition = partitionOf(runId, COUNT);
    held.delete(partition);
    engine.partitions.unload([partition], "taken by another replica");
    held.set(partition, 2);
    const reads = holdReads(store, "wait, then read");
    let loading: Promise<void> | undefined;
    try {
      loading = engine.partitions.load([partition]);
      await waitFor("the partition's read to have begun", () => reads.reads() === 1);
      await assert.rejects(engine.cancelRun(runId, "by the test"), (e: unknown) => {
        assert.ok(e instanceof UnavailableError, String(e));
        assert.match(e.message, /still being loaded; retry/);
        return true;
      });
      await assert.rejects(
        engine.waits.signal(runId, { name: "go", key: null, payload: null }),
        UnavailableError,
      );
      assert.notEqual(store.read().runs.get(runId)?.status, "CANCELLED");
      reads.answer();
      await loading;
    } finally {
      reads.answer();
      await loading;
      reads.restore();
    }
    await engine.cancelRun(runId, "by the test");
    await waitFor("the run cancelled", () => store.read().runs.get(runId)?.status === "CANCELLED");
  });
});
