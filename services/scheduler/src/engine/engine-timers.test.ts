/** The engine's timers: a wait's timer is cleared when its step ends, and re-set by task. */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import type { Timer } from "../core/index.js";
import { newTaskState } from "../model/run-state.js";
import { EngineTimers } from "./engine-timers.js";

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
});
