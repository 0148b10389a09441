/** The engine's timers: a wait's timer is cleared when its step ends, and re-set by task. */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import type { Timer } from "../core/index.js";
import type { CompiledWorkflow } from "../dag/index.js";
import { newRunState, newTaskState } from "../model/run-state.js";
import { EngineTimers, MAX_TIMEOUT_MS } from "./engine-timers.js";

describe("engine timers", () => {
  beforeEach(() => mock.timers.enable({ apis: ["setTimeout"] }));
  afterEach(() => mock.timers.reset());

  const setup = () => {
    const fired: Timer[] = [];
    const timers = new EngineTimers({
      live: () => true,
      fired: (t) => {
        fired.push(t);
        return false;
      },
      leaseExpired: () => undefined,
    });
    return { fired, timers };
  };

  it("a wait's timer fires at its time unless its step ended first", () => {
    const { fired, timers } = setup();
    const answered = newTaskState("run", "a", "STEP", "", 0, new Date(0), "t-answered");
    const unanswered = newTaskState("run", "b", "STEP", "", 1, new Date(0), "t-unanswered");
    timers.set({ kind: "durable", task: answered }, 2 * 86_400_000);
    timers.set({ kind: "durable", task: unanswered }, 2 * 86_400_000);
    timers.leaseEnded(answered);
    mock.timers.tick(2 * 86_400_000 - 1);
    assert.equal(fired.length, 0);
    mock.timers.tick(1);
    assert.deepEqual(
      fired.map((t) => (t.kind === "durable" ? t.task.id : t.kind)),
      ["t-unanswered"],
    );
  });

  it("a task's start-to-close timer goes when its attempt ends, not when its lease moves", () => {
    const { fired, timers } = setup();
    const task = newTaskState("run", "a", "STEP", "", 0, new Date(0), "t");
    task.fencingToken = 1;
    task.leaseExpiresAt = new Date(3_600_000);
    timers.set({ kind: "start-to-close", task, token: 1 }, 3_600_000);
    // Adopted by another session (core/fencing.ts adopt): the lease keeps its deadline.
    timers.leaseEnded(task);
    mock.timers.tick(3_600_000);
    assert.deepEqual(
      fired.map((t) => t.kind),
      ["start-to-close"],
    );
    // The next attempt's; it ends (detach clears the deadline first): nothing is left to fire.
    task.fencingToken = 2;
    timers.set({ kind: "start-to-close", task, token: 2 }, 3_600_000);
    task.leaseExpiresAt = null;
    timers.leaseEnded(task);
    mock.timers.tick(3_600_000);
    assert.equal(fired.length, 1);
  });

  it("a task's schedule-to-start timer goes once it is leased; its retry goes when its run leaves", () => {
    const { fired, timers } = setup();
    const task = newTaskState("run", "a", "STEP", "", 0, new Date(0), "t");
    const run = newRunState({
      id: "run",
      definitionId: 1,
      workflow: { name: "w", version: 1, timeoutMs: null } as unknown as CompiledWorkflow,
      input: null,
      idempotencyKey: null,
      labels: {},
      now: new Date(0),
    });
    run.tasks.set(task.stepId, task);
    timers.set({ kind: "schedule-to-start", task, attempt: 0, limitMs: 60_000 }, 60_000);
    timers.leaseEnded(task);
    timers.set({ kind: "retry", task }, 60_000);
    // A retry set again replaces the first.
    timers.set({ kind: "retry", task }, 120_000);
    timers.runLeft(run);
    mock.timers.tick(120_000);
    assert.deepEqual(fired, []);
  });

  it("setting a task's wait timer again replaces it", () => {
    const { fired, timers } = setup();
    const task = newTaskState("run", "a", "STEP", "", 0, new Date(0), "t");
    timers.set({ kind: "durable", task }, 1000);
    timers.set({ kind: "durable", task }, 5000);
    mock.timers.tick(4999);
    assert.equal(fired.length, 0);
    mock.timers.tick(1);
    assert.equal(fired.length, 1);
    timers.clear();
  });

  it("fires a timer due beyond setTimeout's 24.8 days at its time, not at once, and clears it meanwhile", () => {
    const { fired, timers } = setup();
    const DAYS_30 = 30 * 86_400_000;
    const task = newTaskState("run", "a", "STEP", "", 0, new Date(0), "t");
    task.fencingToken = 1;
    timers.set({ kind: "start-to-close", task, token: 1 }, DAYS_30);
    timers.set({ kind: "retry", task }, DAYS_30);
    const cleared = newTaskState("run", "b", "STEP", "", 1, new Date(0), "t-cleared");
    cleared.leaseExpiresAt = null;
    timers.set({ kind: "start-to-close", task: cleared, token: 0 }, DAYS_30);
    const bucket = { kind: "rate-limit" } as unknown as Timer;
    timers.set(bucket, DAYS_30);
    mock.timers.tick(MAX_TIMEOUT_MS);
    assert.equal(fired.length, 0);
    // Cleared between its steps: it does not fire.
    timers.leaseEnded(cleared);
    mock.timers.tick(DAYS_30 - MAX_TIMEOUT_MS - 1);
    assert.equal(fired.length, 0);
    mock.timers.tick(1);
    assert.deepEqual(fired.map((t) => t.kind).sort(), ["rate-limit", "retry", "start-to-close"]);
    timers.clear();
  });
});

describe("engine timers on Node's own clock", () => {
  it("does not fire a 30-day timer at once (Node fires a setTimeout beyond 2^31 - 1 ms after 1 ms)", async () => {
    const fired: string[] = [];
    const timers = new EngineTimers({
      live: () => true,
      fired: (t) => {
        fired.push(t.kind);
        return false;
      },
      leaseExpired: () => undefined,
    });
    const task = newTaskState("run", "a", "STEP", "", 0, new Date(0), "t");
    const DAYS_30 = 30 * 86_400_000;
    timers.set({ kind: "retry", task }, DAYS_30);
    timers.set({ kind: "run-deadline", run: { id: "run" } } as unknown as Timer, DAYS_30);
    timers.after(DAYS_30, () => fired.push("after"));
    // Timers fire in the order they are due: one due in 1 ms fires before one set after it due in 5.
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.deepEqual(fired, []);
    timers.clear();
  });
});
