/**
 * Random interleavings of the engine's inputs through the pure core (property-based, fast-check):
 * leases, reports (valid, stale, duplicate, foreign), timers firing, sessions lost and re-attached,
 * cancellations; then executors that behave drain every run. The invariants are the fault suite's
 * (test/faults/invariants.ts): no completion accepted twice, no run lost or stuck, run and task
 * states consistent.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import fc from "fast-check";
import { TERMINAL_RUN_STATUSES, TERMINAL_TASK_STATUSES, type TaskState } from "../model/run-state.js";
import type { SessionLeases } from "./context.js";
import { completed, failed, heartbeat, released, started } from "./reports.js";
import { advance, cancelRun, startRun } from "./runs.js";
import { reclaim, sessionLost } from "./sessions.js";
import { Simulation, workflowOf } from "./simulation.js";

const workflow = workflowOf({
  name: "fuzz",
  version: 1,
  steps: [
    { id: "a", type: "t", compensate: { type: "undo" }, timeouts: { startToClose: "5s" } },
    { id: "b", type: "t", dependsOn: ["a"], retry: { maxAttempts: 3, initialInterval: "1s" } },
    {
      id: "c",
      type: "t",
      dependsOn: ["a"],
      compensate: { type: "undo" },
      timeouts: { scheduleToStart: "20s" },
    },
    { id: "d", type: "t", dependsOn: ["b", "c"] },
  ],
});

type KeyKind = "valid" | "stale" | "foreign";
type Command =
  | { op: "lease"; session: number }
  | {
      op: "report";
      kind: "start" | "heartbeat" | "complete" | "fail" | "release";
      task: number;
      key: KeyKind;
      session: number;
      retryable: boolean;
    }
  | { op: "duplicate" }
  | { op: "time"; ms: number }
  | { op: "lose"; session: number; reclaim: boolean }
  | { op: "cancel"; run: number; compensate: boolean };

const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant("lease" as const), session: fc.nat(1) }) },
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant("report" as const),
      kind: fc.constantFrom(
        "start" as const,
        "heartbeat" as const,
        "complete" as const,
        "fail" as const,
        "release" as const,
      ),
      task: fc.nat(20),
      key: fc.constantFrom("valid" as const, "valid" as const, "stale" as const, "foreign" as const),
      session: fc.nat(1),
      retryable: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("duplicate" as const) }) },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant("time" as const), ms: fc.integer({ min: 0, max: 30_000 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("lose" as const), session: fc.nat(1), reclaim: fc.boolean() }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("cancel" as const), run: fc.nat(1), compensate: fc.boolean() }),
  },
);

function simulate(commands: Command[], jitter: number): void {
  const sim = new Simulation(3000);
  sim.jitter = jitter;
  const runs = [0, 1].map(() =>
    startRun(
      sim.core,
      { definitionId: 1, workflow, input: {}, idempotencyKey: null, requestHash: null, labels: {} },
      sim.at().now,
    ),
  );
  const sessions: SessionLeases[] = [sim.session("s0", "ex0"), sim.session("s1", "ex1")];
  let generation = 0;
  /** Completions accepted, by task run id. */
  const accepted = new Map<string, number>();
  let last: { session: SessionLeases; key: ReturnType<Simulation["key"]> } | undefined;
  const all = (): TaskState[] => [...sim.core.tasks.values()].sort((x, y) => (x.id < y.id ? -1 : 1));
  const settle = (): void => sim.settle((r) => advance(sim.core, r, sim.at().now));
  const complete = (session: SessionLeases, key: ReturnType<Simulation["key"]>): void => {
    if (completed(sim.core, session, key, { ok: true }, null, null, sim.at()) === null) {
      accepted.set(key.taskRunId, (accepted.get(key.taskRunId) ?? 0) + 1);
      last = { session, key };
    }
  };

  for (const c of commands) {
    switch (c.op) {
      case "lease":
        sim.lease(sessions[c.session]!);
        break;
      case "report": {
        const tasks = all();
        const task = tasks[c.task % Math.max(1, tasks.length)];
        if (task === undefined) break;
        const session = sessions[c.key === "foreign" ? 1 - c.session : c.session]!;
        const holder = sessions.find((s) => s.id === task.sessionId) ?? session;
        const key =
          c.key === "stale"
            ? ({
                ...sim.key(task),
                attempt: task.attempt - 1,
                fencingToken: BigInt(task.fencingToken - 1),
              } as never)
            : sim.key(task);
        const by = c.key === "valid" ? holder : session;
        if (c.kind === "start") started(sim.core, by, key, sim.at());
        else if (c.kind === "heartbeat") heartbeat(sim.core, by, key, sim.at());
        else if (c.kind === "complete") complete(by, key);
        else if (c.kind === "fail")
          failed(
            sim.core,
            by,
            key,
            { type: "BOOM", message: "boom", retryable: c.retryable },
            0,
            null,
            sim.at(),
          );
        else released(sim.core, by, key, "", sim.at());
        break;
      }
      case "duplicate":
        if (last !== undefined) complete(last.session, last.key);
        break;
      case "time":
        settle();
        sim.advanceTime(c.ms);
        break;
      case "lose": {
        const old = sessions[c.session]!;
        const held = [...old.leases].map((id) => sim.key(sim.core.tasks.get(id)!));
        sim.sessions.delete(old.id);
        sessionLost(sim.core, old);
        const fresh = sim.session(`s${c.session}-${++generation}`, old.executorId);
        sessions[c.session] = fresh;
        if (c.reclaim) reclaim(sim.core, fresh, held);
        break;
      }
      case "cancel":
        cancelRun(sim.core, runs[c.run]!, "fuzz", c.compensate, sim.at().now);
        break;
    }
    settle();
  }

  // Executors that behave from now on: every run ends.
  for (let round = 0; round < 200 && runs.some((r) => !TERMINAL_RUN_STATUSES.has(r.status)); round++) {
    for (const session of sessions) {
      for (let t = sim.lease(session); t !== undefined; t = sim.lease(session)) complete(session, sim.key(t));
      for (const id of [...session.leases]) {
        const t = sim.core.tasks.get(id);
        if (t !== undefined && t.sessionId === session.id) complete(session, sim.key(t));
      }
    }
    settle();
    sim.advanceTime(30_000);
    settle();
  }

  for (const [taskRunId, n] of accepted) assert.equal(n, 1, `completion of ${taskRunId} accepted ${n} times`);
  for (const run of runs) {
    assert.ok(TERMINAL_RUN_STATUSES.has(run.status), `run ${run.id} stuck in ${run.status}`);
    const events = sim.eventsOf(run.id);
    assert.equal(events.filter((e) => e === "runCompleted").length, 1, "one runCompleted");
    assert.equal(events.at(-1), "runCompleted", "nothing happens to a run after it ended");
    for (const t of [...run.tasks.values(), ...run.compensations.values()]) {
      assert.ok(
        TERMINAL_TASK_STATUSES.has(t.status) || t.status === "PENDING",
        `task ${t.stepId} left ${t.status}`,
      );
      if (t.status === "SUCCEEDED")
        assert.equal(accepted.get(t.id), 1, `succeeded ${t.stepId} without its completion`);
    }
    if (run.status === "SUCCEEDED")
      for (const t of run.tasks.values())
        assert.equal(t.status, "SUCCEEDED", `succeeded run with ${t.stepId} ${t.status}`);
    if (run.status === "COMPENSATED") {
      const succeeded = [...run.tasks.values()].filter(
        (t) => t.status === "SUCCEEDED" && workflow.stepsById.get(t.stepId)?.compensate,
      );
      for (const t of succeeded)
        assert.equal(run.compensations.get(t.stepId)?.status, "SUCCEEDED", `${t.stepId} not compensated`);
    }
    assert.ok(!sim.core.runs.has(run.id), "an ended run leaves memory once committed");
  }
}

void it("random interleavings keep the invariants of the fault suite", () => {
  fc.assert(
    fc.property(
      fc.array(command, { maxLength: 80 }),
      fc.double({ min: 0, max: 0.999999, noNaN: true }),
      (cmds, jitter) => simulate(cmds, jitter),
    ),
    { numRuns: 300 },
  );
});
