/**
 * The one test suite every {@link EngineStore} passes (test code, imported by the back ends' test
 * files): what is committed is what recovery reads, idempotency keys name their runs, refused data
 * is dropped run by run, and a refused run can be ended.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { type TestContext, it } from "node:test";
import { waitFor } from "@nexusflow/common/testing";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import type { CompiledWorkflow } from "../dag/index.js";
import { lifecycleEvent } from "./outbox.js";
import {
  leasedAttempt,
  newRunState,
  newTaskState,
  type RunState,
  type TaskState,
} from "../model/run-state.js";
import type { CommittedChanges, EngineStore } from "./engine-store.js";

/** A store for one test, the id of a stored workflow definition, and how to clean up. */
export interface EngineStoreFixture {
  readonly store: EngineStore;
  readonly definitionId: number;
  dispose(): Promise<void>;
}

/** Makes a fixture, or undefined when the back end is unavailable and the test was skipped. */
export type EngineStoreFactory = (t: TestContext) => Promise<EngineStoreFixture | undefined>;

const workflow = (name: string): CompiledWorkflow =>
  ({ name, version: 1, timeoutMs: 60_000 }) as unknown as CompiledWorkflow;

/** A run of `definitionId` with steps a (QUEUED) and b (PENDING), marked with its first event. */
function newRun(
  store: EngineStore,
  definitionId: number,
  init: { key?: string; hash?: string; input?: unknown } = {},
) {
  const now = new Date();
  const run = newRunState({
    definitionId,
    workflow: workflow(`contract-${randomUUID()}`),
    input: init.input ?? { n: 1 },
    idempotencyKey: init.key ?? null,
    requestHash: init.hash ?? null,
    labels: { team: "core" },
    now,
  });
  const a = newTaskState(run.id, "a", "STEP", "work", 0, now);
  a.status = "QUEUED";
  a.queuedAt = now;
  const b = newTaskState(run.id, "b", "STEP", "work", 1, now);
  run.tasks.set("a", a);
  run.tasks.set("b", b);
  store.markRun(run);
  store.markTask(a);
  store.markTask(b);
  store.addEvent(lifecycleEvent(run, { case: "runStarted", value: {} }));
  return { run, a, b };
}

/** Leases `task` (attempt n+1) and marks it with its attempt. */
function lease(store: EngineStore, task: TaskState, executorId = "ex-1"): void {
  task.attempt++;
  task.fencingToken++;
  task.status = "LEASED";
  task.executorId = executorId;
  task.current = leasedAttempt(task, executorId, new Date());
  store.markTask(task);
  store.markAttempt(task.current);
}

function fail(store: EngineStore, task: TaskState): void {
  const a = task.current;
  assert.ok(a);
  a.status = "FAILED";
  a.error = { type: "BOOM", message: "boom", retryable: true };
  a.endedAt = new Date();
  store.markAttempt(a);
  task.current = null;
  task.status = "QUEUED";
  store.markTask(task);
}

const active = async (store: EngineStore, run: RunState) => {
  const state = await store.loadActive();
  return {
    run: state.runs.find((r) => r.id === run.id),
    tasks: state.tasks.filter((t) => t.runId === run.id),
  };
};

/** Registers the contract suite for one back end. */
export function engineStoreContract(makeStore: EngineStoreFactory): void {
  const storeTest = (title: string, body: (f: EngineStoreFixture) => Promise<void>): void => {
    void it(title, { timeout: 30_000 }, async (t) => {
      const fixture = await makeStore(t);
      if (fixture === undefined) return;
      try {
        await body(fixture);
      } finally {
        await fixture.dispose();
      }
    });
  };

  storeTest("what is committed is what recovery reads", async ({ store, definitionId }) => {
    const { run } = newRun(store, definitionId);
    await store.flush();
    const found = await active(store, run);
    assert.ok(found.run);
    assert.equal(found.run.definitionId, definitionId);
    assert.equal(found.run.workflowName, run.workflow.name);
    assert.equal(found.run.status, "RUNNING");
    assert.deepEqual(found.run.input, { n: 1 });
    assert.deepEqual(found.run.labels, { team: "core" });
    assert.equal(found.run.deadline?.getTime(), run.deadline?.getTime());
    assert.equal(found.run.lastEventSeq, 1);
    assert.deepEqual(
      found.tasks.map((t) => [t.stepId, t.status, t.position, t.attempt, t.current]),
      [
        ["a", "QUEUED", 0, 0, null],
        ["b", "PENDING", 1, 0, null],
      ],
    );
  });

  storeTest(
    "a run's signals and a WAITING step's time are what recovery reads, first write or update",
    async ({ store, definitionId }) => {
      const { run, a } = newRun(store, definitionId);
      run.signals.push({ name: "early", key: "k1", payload: { n: 1 }, at: 1_000, stepId: null });
      await store.flush();
      assert.deepEqual((await active(store, run)).run?.signals, run.signals, "first write");
      const due = new Date(Date.now() + 3_600_000);
      a.status = "WAITING";
      a.nextAttemptAt = due;
      run.signals.push({ name: "approval", key: null, payload: null, at: 2_000, stepId: "a" });
      store.markTask(a);
      store.markRun(run);
      await store.flush();
      const found = await active(store, run);
      assert.deepEqual(found.run?.signals, run.signals, "update");
      assert.deepEqual(
        found.tasks.filter((t) => t.stepId === "a").map((t) => [t.status, t.nextAttemptAt?.getTime()]),
        [["WAITING", due.getTime()]],
      );
    },
  );

  storeTest("an ended run is not active", async ({ store, definitionId }) => {
    const { run } = newRun(store, definitionId);
    run.status = "SUCCEEDED";
    run.endedAt = new Date();
    store.markRun(run);
    await store.flush();
    assert.equal((await active(store, run)).run, undefined);
  });

  storeTest(
    "an ended run is read back whole, and its rows written again as stored ones (a child rolled back)",
    async ({ store, definitionId }) => {
      assert.equal(await store.loadRun(randomUUID()), undefined);
      const { run, a, b } = newRun(store, definitionId);
      const parent = { runId: randomUUID(), stepId: "pay", depth: 1 };
      const rerun = { of: randomUUID(), fromStep: "b", reused: { a: randomUUID() } };
      const child = newRunState({ ...run, id: run.id, parent, now: run.createdAt });
      child.rerun = rerun;
      child.eventSeq = run.eventSeq;
      child.tasks.set("a", a).set("b", b);
      for (const t of [a, b]) {
        t.status = "SUCCEEDED";
        t.output = { step: t.stepId };
        t.endedAt = new Date();
      }
      child.status = "SUCCEEDED";
      child.endedAt = new Date();
      // The first write of the run (with its parent and rerun link) is the child's.
      store.markRun(child);
      store.markTask(a);
      store.markTask(b);
      await store.flush();
      const rows = await store.loadRun(run.id);
      assert.ok(rows);
      assert.equal(rows.run.status, "SUCCEEDED");
      assert.deepEqual(rows.run.parent, parent);
      assert.deepEqual(rows.run.rerun, rerun);
      assert.equal(rows.run.lastEventSeq, 1);
      assert.deepEqual(
        rows.tasks.map((t) => [t.stepId, t.status, t.output]),
        [
          ["a", "SUCCEEDED", { step: "a" }],
          ["b", "SUCCEEDED", { step: "b" }],
        ],
      );
      // Back in memory as new objects: SUCCEEDED -> COMPENSATING, with a new compensation task.
      const revived = newRunState({ ...child, id: run.id, now: run.createdAt });
      revived.status = "COMPENSATING";
      revived.eventSeq = rows.run.lastEventSeq;
      const again = { ...rows.tasks[0], sessionId: null, lastHeartbeat: 0 } as TaskState;
      again.output = { step: "a", again: true };
      const undo = newTaskState(run.id, "a", "COMPENSATION", "undo", 0, new Date());
      store.markRun(revived);
      store.markTask(again);
      store.markTask(undo);
      store.addEvent(lifecycleEvent(revived, { case: "runCompensating", value: { stepIds: ["a"] } }));
      await store.flush();
      const found = await active(store, run);
      assert.equal(found.run?.status, "COMPENSATING");
      assert.equal(found.run?.lastEventSeq, 2);
      assert.deepEqual(
        found.tasks
          .map((t) => [t.stepId, t.kind, t.status, t.output])
          .sort((x, y) => `${String(x[0])}${String(x[1])}`.localeCompare(`${String(y[0])}${String(y[1])}`)),
        [
          ["a", "COMPENSATION", "PENDING", null],
          ["a", "STEP", "SUCCEEDED", { step: "a", again: true }],
          ["b", "STEP", "SUCCEEDED", { step: "b" }],
        ],
      );
    },
  );

  storeTest(
    "failed attempts are counted, the current attempt of a held lease is read",
    async ({ store, definitionId }) => {
      const { run, a, b } = newRun(store, definitionId);
      lease(store, a);
      fail(store, a);
      lease(store, a, "ex-2");
      lease(store, b);
      fail(store, b);
      await store.flush();
      const found = await active(store, run);
      const [ta, tb] = found.tasks;
      assert.equal(ta?.failures, 1);
      assert.equal(ta?.status, "LEASED");
      assert.equal(ta?.current?.number, 2);
      assert.equal(ta?.current?.fencingToken, 2);
      assert.equal(ta?.current?.executorId, "ex-2");
      assert.equal(tb?.failures, 1);
      assert.equal(tb?.current, null, "no current attempt without a held lease");
    },
  );

  storeTest(
    "the last event sequence is the higher of the run row's and its events'",
    async ({ store, definitionId }) => {
      const { run } = newRun(store, definitionId);
      await store.flush();
      // Events without a change of the run row: the row's event_seq stays behind.
      store.addEvent(lifecycleEvent(run, { case: "runCancelRequested", value: { reason: "x" } }));
      store.addEvent(lifecycleEvent(run, { case: "runCancelRequested", value: { reason: "y" } }));
      await store.flush();
      assert.equal((await active(store, run)).run?.lastEventSeq, 3);
    },
  );

  storeTest(
    "commits are reported with their runs and events; rows are stored once committed",
    async ({ store, definitionId }) => {
      const seen: CommittedChanges[] = [];
      store.listen({ committed: (c) => seen.push(c), refused: () => undefined });
      const { run, a } = newRun(store, definitionId);
      assert.equal(store.isStored(run), false);
      await store.flush();
      assert.equal(store.isStored(run), true);
      assert.equal(store.isStored(a), true);
      assert.ok(seen.some((c) => c.runIds.has(run.id) && c.events === 1));
    },
  );

  storeTest("flushSoon commits without a flush", async ({ store, definitionId }) => {
    const { run } = newRun(store, definitionId);
    store.flushSoon(5);
    await waitFor("the delayed commit", () => store.isStored(run) || undefined);
  });

  storeTest(
    "an idempotency key names its run until a newer run takes it",
    async ({ store, definitionId }) => {
      const first = newRun(store, definitionId, { key: "k", hash: "h1" }).run;
      await store.flush();
      const name = first.workflow.name;
      const found = await store.lookupKey(name, "k", new Date(0));
      assert.equal(found?.runId, first.id);
      assert.equal(found?.requestHash, "h1");
      assert.equal(await store.lookupKey(name, "k", new Date(Date.now() + 60_000)), undefined, "expired");
      assert.equal(await store.lookupKey(name, "other", new Date(0)), undefined);
      const keys = await store.keysOfRuns([{ id: first.id, workflowName: name, key: "k" }]);
      assert.equal(keys.get(first.id)?.requestHash, "h1");
      // A newer run with the key (started after it expired) takes it over.
      const now = new Date(Date.now() + 1000);
      const second = newRunState({
        definitionId,
        workflow: first.workflow,
        input: null,
        idempotencyKey: "k",
        requestHash: "h2",
        labels: {},
        now,
      });
      store.markRun(second);
      await store.flush();
      assert.equal((await store.lookupKey(name, "k", new Date(0)))?.runId, second.id);
      const again = await store.keysOfRuns([{ id: first.id, workflowName: name, key: "k" }]);
      assert.equal(again.has(first.id), false, "the key no longer names the older run");
    },
  );

  storeTest(
    "data the database refuses drops that run only, and is reported",
    async ({ store, definitionId }) => {
      const refused: string[] = [];
      store.listen({ committed: () => undefined, refused: (runId) => refused.push(runId) });
      const good = newRun(store, definitionId).run;
      const bad = newRun(store, definitionId, { input: { text: "nul\u0000byte" } }).run;
      await store.flush();
      assert.deepEqual(refused, [bad.id]);
      assert.ok((await active(store, good)).run);
      assert.equal((await active(store, bad)).run, undefined);
      assert.equal(store.isStored(bad), false);
    },
  );

  storeTest("a refused run is ended once, with its tasks", async ({ store, definitionId }) => {
    const error = { type: TaskErrorType.STORAGE_REFUSED, message: "refused", retryable: false };
    assert.equal(await store.failRefusedRun(randomUUID(), error), "not-stored");
    const { run, a } = newRun(store, definitionId);
    lease(store, a);
    await store.flush();
    assert.equal(await store.failRefusedRun(run.id, error), "failed");
    assert.equal((await active(store, run)).run, undefined);
    assert.equal(await store.failRefusedRun(run.id, error), "already-ended");
  });

  storeTest("a closed store refuses new work", async ({ store, definitionId }) => {
    const { run } = newRun(store, definitionId);
    await store.close();
    assert.equal(store.isStored(run), true, "what was pending is committed on close");
    await assert.rejects(store.flush());
  });
}
