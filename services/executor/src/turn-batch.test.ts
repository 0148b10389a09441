import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import type { TaskAttempt } from "./task-attempt.js";
import { TurnBatch } from "./turn-batch.js";

/** Stand-ins: the batch only carries attempts through. */
const attempt = (id: string): TaskAttempt => ({ id }) as TaskAttempt;

describe("TurnBatch", () => {
  it("sends what one turn collected once, at its end", async () => {
    const flushed: [string[], number][] = [];
    const batch = new TurnBatch((started, freed) => flushed.push([started.map((a) => a.id), freed]));
    batch.started(attempt("a"));
    batch.slotFreed();
    batch.started(attempt("b"));
    batch.slotFreed();
    assert.deepEqual(flushed, [], "nothing before the end of the turn");
    await nextTurn();
    assert.deepEqual(flushed, [[["a", "b"], 2]]);

    batch.slotFreed();
    await nextTurn();
    assert.deepEqual(flushed[1], [[], 1], "the next turn starts afresh");
  });

  it("forgets the slots freed before a new session granted every free slot", async () => {
    const flushed: [string[], number][] = [];
    const batch = new TurnBatch((started, freed) => flushed.push([started.map((a) => a.id), freed]));
    batch.slotFreed();
    batch.started(attempt("a"));
    batch.forgetFreedSlots();
    await nextTurn();
    assert.deepEqual(flushed, [[["a"], 0]]);
  });
});
