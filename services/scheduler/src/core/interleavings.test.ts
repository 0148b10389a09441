/**
 * Random interleavings of the engine's inputs through the pure core (property-based, fast-check):
 * leases, reports (valid, stale, duplicate, foreign), timers firing, sessions lost and re-attached,
 * cancellations; then executors that behave drain every run. The invariants are the fault suite's
 * (test/faults/invariants.ts): no completion accepted twice, no run lost or stuck, run and task
 * states consistent; and fencing's own: a stale or foreign report is rejected and changes nothing.
 *
 * The property is shown able to fail: with a fixed seed it is run against deliberately broken
 * variants of the rules (mutants: the fencing comparison skipped, the holder session not checked,
 * a decided completion accepted again, a lost session's leases dropped) and must fail for each.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { LeaseKey } from "@nexusflow/gen";
import { TERMINAL_RUN_STATUSES, TERMINAL_TASK_STATUSES, type TaskState } from "../model/run-state.js";
import type { Core, Rejection, SessionLeases } from "./context.js";
import { keyMatches } from "./fencing.js";
import { completed, failed, heartbeat, released, started } from "./reports.js";
import { advance, cancelRun, startRun } from "./runs.js";
import { attached, sessionLost } from "./sessions.js";
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
/**
 * After a session is lost, its executor attaches again listing the leases it holds ("held"), or
 * listing none ("none": they expire at once), or never comes back ("never": a new executor attaches
 * instead, and the leases wait out their grace).
 */
type Reattach = "held" | "none" | "never";
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
  | { op: "lose"; session: number; reattach: Reattach }
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
    arbitrary: fc.record({
      op: fc.constant("lose" as const),
      session: fc.nat(1),
      reattach: fc.constantFrom("held" as const, "none" as const, "never" as const),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("cancel" as const), run: fc.nat(1), compensate: fc.boolean() }),
  },
);

/** The rules an interleaving drives: the core's, or a broken variant of them (MUTANTS). */
interface Rules {
  started: typeof started;
  heartbeat: typeof heartbeat;
  completed: typeof completed;
  failed: typeof failed;
  released: typeof released;
  sessionLost: typeof sessionLost;
  attached: typeof attached;
}

const RULES: Rules = { started, heartbeat, completed, failed, released, sessionLost, attached };

function simulate(commands: Command[], jitter: number, rules: Rules = RULES): void {
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
  const complete = (session: SessionLeases, key: ReturnType<Simulation["key"]>): Rejection | null => {
    const r = rules.completed(sim.core, session, key, { ok: true }, null, null, sim.at());
    if (r === null) {
      accepted.set(key.taskRunId, (accepted.get(key.taskRunId) ?? 0) + 1);
      last = { session, key };
    }
    return r;
  };
  /** What a rejected report must leave as it was. */
  const stateOf = (task: TaskState) => ({
    status: task.status,
    attempt: task.attempt,
    fencingToken: task.fencingToken,
    sessionId: task.sessionId,
    events: sim.events.length,
  });

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
        // Fencing: a report with an older lease's key, or from a session that does not hold the
        // lease, is rejected and changes nothing.
        const mustReject = c.key === "stale" || task.sessionId !== by.id;
        const before = stateOf(task);
        let r: Rejection | null;
        if (c.kind === "start") r = rules.started(sim.core, by, key, sim.at());
        else if (c.kind === "heartbeat") r = rules.heartbeat(sim.core, by, key, sim.at());
        else if (c.kind === "complete") r = complete(by, key);
        else if (c.kind === "fail")
          r = rules.failed(
            sim.core,
            by,
            key,
            { type: "BOOM", message: "boom", retryable: c.retryable },
            0,
            null,
            sim.at(),
          );
        else r = rules.released(sim.core, by, key, "", sim.at());
        if (mustReject) {
          assert.notEqual(r, null, `a ${c.key} ${c.kind} report of ${task.stepId} was accepted`);
          assert.deepEqual(stateOf(task), before, `a rejected ${c.kind} report of ${task.stepId} changed it`);
        }
        break;
      }
      case "duplicate":
        if (last !== undefined)
          assert.notEqual(complete(last.session, last.key), null, "a duplicate completion was accepted");
        break;
      case "time":
        settle();
        sim.advanceTime(c.ms);
        break;
      case "lose": {
        const old = sessions[c.session]!;
        const held = [...old.leases].map((id) => sim.key(sim.core.tasks.get(id)!));
        sim.sessions.delete(old.id);
        rules.sessionLost(sim.core, old);
        generation++;
        if (c.reattach === "never") {
          sessions[c.session] = sim.session(`s${c.session}-${generation}`, `ex${c.session}-${generation}`);
          break;
        }
        const fresh = sim.session(`s${c.session}-${generation}`, old.executorId);
        sessions[c.session] = fresh;
        rules.attached(sim.core, fresh, c.reattach === "held" ? held : [], sim.at());
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

/** The property over the given rules. */
const property = (rules: Rules) =>
  fc.property(
    fc.array(command, { maxLength: 80 }),
    fc.double({ min: 0, max: 0.999999, noNaN: true }),
    (cmds, jitter) => simulate(cmds, jitter, rules),
  );

void it("random interleavings keep the invariants of the fault suite", () => {
  fc.assert(property(RULES), { numRuns: 300 });
});

/** The current lease's key of the task a key names, if it is active: as if keys were not compared. */
const currentKey = (core: Core, key: LeaseKey | undefined): LeaseKey | undefined => {
  const task = key === undefined ? undefined : core.tasks.get(key.taskRunId);
  if (key === undefined || task === undefined) return key;
  return { ...key, attempt: task.attempt, fencingToken: BigInt(task.fencingToken) };
};

/** The session holding the task a key names, reporting instead: as if the holder were not checked. */
const holderOf = <S extends { id: string; executorId: string }>(
  core: Core,
  session: S,
  key?: LeaseKey,
): S => {
  const task = key === undefined ? undefined : core.tasks.get(key.taskRunId);
  return task?.sessionId == null ? session : { ...session, id: task.sessionId };
};

/** Broken variants of the rules, each missing one safeguard; the property must fail for each. */
const MUTANTS: Record<string, { rules: Rules; caught: RegExp }> = {
  "the fencing token and attempt are not compared": {
    rules: {
      ...RULES,
      started: (core, s, key, at) => started(core, s, currentKey(core, key), at),
      heartbeat: (core, s, key, at) => heartbeat(core, s, currentKey(core, key), at),
      completed: (core, s, key, ...rest) => completed(core, s, currentKey(core, key), ...rest),
      failed: (core, s, key, ...rest) => failed(core, s, currentKey(core, key), ...rest),
      released: (core, s, key, ...rest) => released(core, s, currentKey(core, key), ...rest),
    },
    caught: /a stale \w+ report of \w+ was accepted/,
  },
  "the session holding the lease is not checked": {
    rules: {
      ...RULES,
      started: (core, s, key, at) => started(core, holderOf(core, s, key), key, at),
      heartbeat: (core, s, key, at) => heartbeat(core, holderOf(core, s, key), key, at),
      completed: (core, s, key, ...rest) => completed(core, holderOf(core, s, key), key, ...rest),
      failed: (core, s, key, ...rest) => failed(core, holderOf(core, s, key), key, ...rest),
      released: (core, s, key, ...rest) => released(core, holderOf(core, s, key), key, ...rest),
    },
    caught: /a (valid|foreign) \w+ report of \w+ was accepted/,
  },
  "a completion of a decided task is accepted again": {
    rules: {
      ...RULES,
      completed: (core, s, key, ...rest) => {
        const task = key === undefined ? undefined : core.tasks.get(key.taskRunId);
        if (task !== undefined && key !== undefined && task.status === "SUCCEEDED" && keyMatches(task, key)) {
          task.status = "RUNNING";
          task.sessionId = s.id;
        }
        return completed(core, s, key, ...rest);
      },
    },
    caught: /duplicate completion was accepted|accepted 2 times|report of \w+ was accepted/,
  },
  "a lost session's leases are dropped instead of waiting for their executor": {
    rules: { ...RULES, sessionLost: (_core, session) => session.leases.clear() },
    caught: /stuck in|left (LEASED|RUNNING)/,
  },
};

void describe("the interleavings property fails for broken rules (fixed seed)", () => {
  const options = { seed: 2025, numRuns: 300, endOnFailure: true };

  void it("the rules as they are pass with that seed", () => {
    fc.assert(property(RULES), options);
  });

  for (const [name, { rules, caught }] of Object.entries(MUTANTS)) {
    void it(`fails when ${name}`, () => {
      const result = fc.check(property(rules), options);
      assert.equal(result.failed, true, `the property held although ${name}`);
      const message = result.errorInstance instanceof Error ? result.errorInstance.message : "";
      assert.match(message, caught);
    });
  }
});
