/**
 * task_held events through the pure core (simulation.ts): one when a task becomes held and one
 * when the gate holding it changes, never one per scheduling pass; the reason is ExplainPending's.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HoldGate, type TaskHeld } from "@nexusflow/gen";
import type { CompiledWorkflow } from "../dag/index.js";
import type { RunState, TaskState } from "../model/run-state.js";
import type { SessionLeases } from "./context.js";
import { explainPending, pendingReason } from "./explain.js";
import { MAX_HOLD_NAME, MAX_HOLD_REASON } from "./hold-events.js";
import { pauseBucket, rateLimitsOf } from "./rate-limits.js";
import { completed, failed } from "./reports.js";
import { admitQueued, advanceAny } from "./runs.js";
import { beginRun, leaseAllAdmitted, Simulation, workflowOf } from "./simulation.js";

const flow = (step: Record<string, unknown>): CompiledWorkflow =>
  workflowOf({ name: "flow", version: 1, steps: [{ id: "a", type: "t", ...step }] });

function succeed(sim: Simulation, session: SessionLeases, task: TaskState): void {
  assert.equal(completed(sim.core, session, sim.key(task), { ok: true }, null, null, sim.at()), null);
  sim.settle((r) => advanceAny(sim.core, r, sim.at().now));
}

/** The task_held events of `task`, in order. */
function helds(sim: Simulation, task: TaskState): TaskHeld[] {
  return sim.events
    .filter((e) => e.case === "taskHeld" && (e.value as TaskHeld).taskRunId === task.id)
    .map((e) => e.value as TaskHeld);
}

const stepOf = (run: RunState): TaskState => run.tasks.get("a") as TaskState;

void describe("task_held events (core)", () => {
  it("200 runs behind one key of limit 1: one event per held task, however many passes, none for the first", () => {
    const sim = new Simulation();
    const w = flow({ concurrency: [{ key: "input.c", limit: 1 }] });
    const s = sim.session("s");
    const runs = Array.from({ length: 200 }, () => beginRun(sim, w, { c: "c1" }));
    const [first, second] = runs as [RunState, RunState];
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [first.id],
    );
    // Every other task was held once, by the key, with ExplainPending's words at that moment.
    const e = helds(sim, stepOf(second));
    assert.equal(e.length, 1);
    assert.deepEqual(
      { gate: e[0]?.gate, limit: e[0]?.limit, key: e[0]?.key, stepId: e[0]?.stepId, attempt: e[0]?.attempt },
      { gate: HoldGate.CONCURRENCY_KEY, limit: "input.c", key: "c1", stepId: "a", attempt: 1 },
    );
    assert.equal(
      e[0]?.reason,
      `concurrency key "c1" (input.c, limit 1): held by a of run ${first.id}; 1 of 1 in its queue`,
    );
    const last = stepOf(runs[199] as RunState);
    assert.match(helds(sim, last)[0]?.reason ?? "", /; 199 of 199 in its queue$/);
    // Passes that refuse a held task again (the key still full) add nothing.
    for (let pass = 0; pass < 50; pass++)
      for (const r of runs.slice(1)) assert.equal(admitQueued(sim.core, stepOf(r), sim.at().now), false);
    // Each finishes in turn, the next taking the slot: still one event per task.
    for (let i = 0; i < 200; i++) {
      const t = stepOf(runs[i] as RunState);
      if (t.status === "QUEUED") {
        const leased = leaseAllAdmitted(sim, s);
        assert.deepEqual(
          leased.map((x) => x.id),
          [t.id],
        );
      }
      sim.clock += 5;
      succeed(sim, s, t);
    }
    assert.ok(runs.every((r) => r.status === "SUCCEEDED"));
    assert.equal(helds(sim, stepOf(first)).length, 0);
    for (const r of runs.slice(1)) {
      assert.equal(helds(sim, stepOf(r)).length, 1);
      // Held, then leased: task_held comes before the task's task_leased.
      const cases = sim.eventsOf(r.id);
      assert.ok(cases.indexOf("taskHeld") < cases.indexOf("taskLeased"));
      assert.equal(stepOf(r).heldBy, undefined);
    }
    assert.equal(sim.events.filter((x) => x.case === "taskHeld").length, 199);
  });

  it("a change of gate is reported: tokens, then a key; a pause and its end once each", () => {
    const sim = new Simulation();
    const w = flow({
      concurrency: [{ key: "input.c", limit: 1 }],
      rateLimits: [{ name: "partner", key: "input.c", rate: 1, per: "1s" }],
    });
    const s = sim.session("s");
    const [r1, r2, r3] = [
      beginRun(sim, w, { c: "k" }),
      beginRun(sim, w, { c: "k" }),
      beginRun(sim, w, { c: "k" }),
    ];
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [r1.id],
    );
    // The bucket's one token went to r1: r2 and r3 wait for tokens.
    for (const r of [r2, r3]) {
      const e = helds(sim, stepOf(r));
      assert.deepEqual(
        e.map((x) => [x.gate, x.limit, x.key]),
        [[HoldGate.RATE_LIMIT, "partner", "k"]],
      );
      assert.match(
        e[0]?.reason ?? "",
        /^concurrency key "k" .*; rate limit "partner" key "k": next token at /,
      );
      // ExplainPending's line at that moment, word for word.
      assert.equal(e[0]?.reason, pendingReason(explainPending(r, stepOf(r), () => 0, sim.at().now)));
    }
    // The key is paused: the waiters are held by the pause now, one event each; pausing it for
    // longer is no new gate.
    const bucket = rateLimitsOf(sim.core).buckets.get("partner\u0000k");
    assert.ok(bucket);
    const until = sim.clock + 60_000;
    pauseBucket(sim.core, bucket, until, "operator", "maintenance", sim.at().now);
    pauseBucket(sim.core, bucket, until + 1000, "operator", "maintenance", sim.at().now);
    for (const r of [r2, r3]) {
      const e = helds(sim, stepOf(r));
      assert.deepEqual(
        e.map((x) => x.gate),
        [HoldGate.RATE_LIMIT, HoldGate.RATE_LIMIT_PAUSED],
      );
      assert.match(
        e[1]?.reason ?? "",
        /rate limit "partner" key "k" is paused until .* by operator \(maintenance\)$/,
      );
    }
    // The pause ends: one token is there, r2 gets it and is held by the key r1 holds; r3 waits
    // for tokens again (a change from the pause, so one more event).
    sim.advanceTime(61_000);
    assert.deepEqual(leaseAllAdmitted(sim, s), []);
    assert.deepEqual(
      helds(sim, stepOf(r2)).map((x) => [x.gate, x.limit]),
      [
        [HoldGate.RATE_LIMIT, "partner"],
        [HoldGate.RATE_LIMIT_PAUSED, "partner"],
        [HoldGate.CONCURRENCY_KEY, "input.c"],
      ],
    );
    assert.deepEqual(
      helds(sim, stepOf(r3)).map((x) => x.gate),
      [HoldGate.RATE_LIMIT, HoldGate.RATE_LIMIT_PAUSED, HoldGate.RATE_LIMIT],
    );
    // r3 waits its turn (the token is r2's, offered first): ExplainPending says when it is offered
    // again, and the event says the same.
    const turn = explainPending(r3, stepOf(r3), () => 0, sim.at().now).find((g) => g.kind === "rate-limit");
    assert.ok(turn?.kind === "rate-limit" && turn.pausedUntil === null);
    assert.ok(turn.nextTokenAt.getTime() > sim.clock);
    assert.equal(
      helds(sim, stepOf(r3))[2]?.reason,
      pendingReason(explainPending(r3, stepOf(r3), () => 0, sim.at().now)),
    );
    // r1 ends: r2 takes the key and is leased, no more events for it.
    succeed(sim, s, stepOf(r1));
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.runId),
      [r2.id],
    );
    assert.equal(helds(sim, stepOf(r2)).length, 3);
    // r3's next wake-up finds a token: it is refused by the key r2 holds now (a new gate); the
    // refusals of the wake-ups after that add nothing.
    for (let i = 0; i < 30; i++) {
      sim.advanceTime(100);
      assert.deepEqual(leaseAllAdmitted(sim, s), []);
    }
    assert.deepEqual(
      helds(sim, stepOf(r3)).map((x) => x.gate),
      [HoldGate.RATE_LIMIT, HoldGate.RATE_LIMIT_PAUSED, HoldGate.RATE_LIMIT, HoldGate.CONCURRENCY_KEY],
    );
    assert.match(helds(sim, stepOf(r3))[2]?.reason ?? "", /rate limit "partner" key "k": next token at \S+$/);
  });

  it("a task queued again is held anew; names and reasons are cut to their bounds", () => {
    const sim = new Simulation();
    const w = flow({ concurrency: [{ key: "input.c", limit: 1 }], retry: { maxAttempts: 2 } });
    const s = sim.session("s");
    const long = "x".repeat(5000);
    const [r1, r2] = [beginRun(sim, w, { c: long }), beginRun(sim, w, { c: long })];
    leaseAllAdmitted(sim, s);
    const [e] = helds(sim, stepOf(r2));
    assert.equal(e?.key.length, MAX_HOLD_NAME);
    assert.ok(e?.key.endsWith("..."));
    assert.ok((e?.reason.length ?? 0) <= MAX_HOLD_REASON);
    assert.ok(e?.reason.startsWith(pendingReason(explainPending(r2, stepOf(r2))).slice(0, 100)));
    // r1 ends, r2 is leased and fails: while it waits for its retry, r3 takes the key; r2's
    // retry, queued again, is held anew by the same key (its second event).
    const t2 = stepOf(r2);
    succeed(sim, s, stepOf(r1));
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.id),
      [t2.id],
    );
    const r3 = beginRun(sim, w, { c: long });
    assert.deepEqual(leaseAllAdmitted(sim, s), []);
    assert.equal(helds(sim, stepOf(r3)).length, 1);
    const error = { type: "BOOM", message: "boom", retryable: true };
    assert.equal(failed(sim.core, s, sim.key(t2), error, 0, null, sim.at()), null);
    assert.deepEqual(
      leaseAllAdmitted(sim, s).map((t) => t.id),
      [stepOf(r3).id],
    );
    assert.equal(t2.status, "RETRY_WAIT");
    sim.advanceTime(60_000);
    assert.equal(t2.status, "QUEUED");
    assert.deepEqual(leaseAllAdmitted(sim, s), []);
    assert.deepEqual(
      helds(sim, t2).map((x) => [x.gate, x.attempt]),
      [
        [HoldGate.CONCURRENCY_KEY, 1],
        [HoldGate.CONCURRENCY_KEY, 2],
      ],
    );
  });
});
