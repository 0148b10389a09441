import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ApiError, Code, createLogger } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";
import type { StartRunInput } from "../model/start-run.js";
import type { EventStore, PendingMatch } from "./event-store.js";
import { MatchLoop, MatchStarter, matchIdempotencyKey } from "./match-loop.js";

/** The part of EventStore the starter and the loop use, in memory. */
class MemoryMatches {
  readonly rows: PendingMatch[] = [];
  readonly keys = new Map<string, string>();
  settled: { eventId: string; workflowName: string; runId: string | null; error: string | null }[] = [];

  startingMatches(limit: number): Promise<PendingMatch[]> {
    return Promise.resolve(this.rows.filter((m) => m.status === "STARTING").slice(0, limit));
  }
  runsOfKeys(keys: readonly { workflowName: string; key: string }[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const k of keys) {
      const run = this.keys.get(`${k.workflowName}\u0000${k.key}`);
      if (run !== undefined) out.set(`${k.workflowName}\u0000${k.key}`, run);
    }
    return Promise.resolve(out);
  }
  settle(
    outcomes: readonly {
      eventId: string;
      workflowName: string;
      runId: string | null;
      error: string | null;
    }[],
  ): Promise<void> {
    for (const o of outcomes) {
      const row = this.rows.find(
        (m) => m.eventId === o.eventId && m.workflowName === o.workflowName && m.status === "STARTING",
      );
      if (row === undefined) continue;
      row.status = o.runId === null ? "FAILED" : "STARTED";
      row.runId = o.runId;
      row.error = o.error;
      this.settled.push(o);
    }
    return Promise.resolve();
  }
}

function match(eventId: string, workflowName: string): PendingMatch {
  return {
    eventId,
    workflowName,
    workflowVersion: 1,
    triggerIndex: 0,
    status: "STARTING",
    runId: null,
    error: null,
    key: "orders.created",
    payload: { id: eventId },
  };
}

const log = createLogger("test", "silent");

describe("starting an event's matches", () => {
  it("starts a run per match with the payload as input, finds a run its key names, and records both", async () => {
    const store = new MemoryMatches();
    store.rows.push(match("e1", "a"), match("e1", "b"));
    store.keys.set(`b\u0000${matchIdempotencyKey("e1")}`, "run-b");
    const started: StartRunInput[] = [];
    const starter = new MatchStarter(
      store as unknown as EventStore,
      {
        startRun: (req) => {
          started.push(req);
          return Promise.resolve({ runId: `run-${req.workflowName}`, created: true });
        },
      },
      log,
    );
    await starter.drive(store.rows.slice());
    assert.deepEqual(
      started.map((s) => [s.workflowName, s.workflowVersion, s.input, s.idempotencyKey, s.labels]),
      [["a", 1, { id: "e1" }, "event:e1", { "event-id": "e1", "event-key": "orders.created" }]],
    );
    assert.deepEqual(
      store.rows.map((m) => [m.workflowName, m.status, m.runId]),
      [
        ["a", "STARTED", "run-a"],
        ["b", "STARTED", "run-b"],
      ],
    );
  });

  it("fails a match the engine refuses for good and leaves one it could not start for now", async () => {
    const store = new MemoryMatches();
    store.rows.push(match("e1", "gone"), match("e1", "busy"));
    const starter = new MatchStarter(
      store as unknown as EventStore,
      {
        startRun: (req) =>
          Promise.reject(
            req.workflowName === "gone"
              ? new ApiError(Code.NOT_FOUND, "workflow gone version 1 is not registered")
              : new ApiError(Code.UNAVAILABLE, "the database is unavailable"),
          ),
      },
      log,
    );
    const outcomes = await starter.drive(store.rows.slice());
    assert.deepEqual(
      outcomes.map((o) => ("retry" in o ? o.retry : "started")),
      [false, true],
    );
    assert.deepEqual(
      store.rows.map((m) => [m.workflowName, m.status, m.error]),
      [
        ["gone", "FAILED", "workflow gone version 1 is not registered"],
        ["busy", "STARTING", null],
      ],
    );
  });

  it("the loop starts what a crash left STARTING at once, and what could not start once it can", async () => {
    const store = new MemoryMatches();
    store.rows.push(match("e1", "a"), match("e2", "a"));
    let available = false;
    let calls = 0;
    const starter = new MatchStarter(
      store as unknown as EventStore,
      {
        startRun: (req) => {
          calls++;
          if (!available) return Promise.reject(new ApiError(Code.UNAVAILABLE, "away"));
          return Promise.resolve({ runId: `run-${String((req.input as { id: string }).id)}`, created: true });
        },
      },
      log,
    );
    const loop = new MatchLoop({
      store: store as unknown as EventStore,
      starter,
      log,
      pollMs: 5,
      idleMs: 60_000,
    });
    loop.start();
    try {
      await waitFor("a pass that could not start them", () => calls >= 2);
      assert.ok(store.rows.every((m) => m.status === "STARTING"));
      available = true;
      await waitFor("both started", () => store.rows.every((m) => m.status === "STARTED"));
      assert.deepEqual(
        store.rows.map((m) => m.runId),
        ["run-e1", "run-e2"],
      );
      // Woken (a publish left a match STARTING): started at once although the loop idles for a minute.
      store.rows.push(match("e3", "a"));
      loop.wake();
      await waitFor("the woken pass", () => store.rows[2]?.status === "STARTED");
    } finally {
      await loop.stop();
    }
    assert.equal(loop.state, "STOPPED");
  });
});
