/**
 * Keys that read an offloaded output, across a restart (unread-keys.ts), through the pure core: a
 * task whose key is not known until the output is read back is not leased, nor is one queued
 * after it or one of a key space whose leased task's key is not known; once read, the limit holds
 * in the order the tasks were queued; an output that cannot be read fails the step.
 */
import { attemptPrefix } from "@nexusflow/common/artifacts";
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CompiledWorkflow } from "../dag/index.js";
import type { RunState, TaskState } from "../model/run-state.js";
import type { SessionLeases } from "./context.js";
import { explainPending, pendingReason, type Gate } from "./explain.js";
import { recover } from "./recovery.js";
import { completed, outputResolved, outputUnavailable } from "./reports.js";
import { advanceAny } from "./runs.js";
import { attached } from "./sessions.js";
import { beginRun, leaseAllAdmitted, Simulation, storedState, workflowOf } from "./simulation.js";

/** a's output is offloaded; b's limit reads it. */
const keyed: CompiledWorkflow = workflowOf({
  name: "offloaded-key",
  version: 1,
  steps: [
    { id: "a", type: "t" },
    { id: "b", type: "u", dependsOn: ["a"], concurrency: [{ key: "steps.a.output.c", limit: 1 }] },
  ],
});

const rated: CompiledWorkflow = workflowOf({
  name: "offloaded-rate",
  version: 1,
  steps: [
    { id: "a", type: "t" },
    {
      id: "b",
      type: "u",
      dependsOn: ["a"],
      rateLimits: [{ name: "api", rate: 10, per: "1s", key: "steps.a.output.c" }],
    },
  ],
});

const settle = (sim: Simulation): void => sim.settle((r) => advanceAny(sim.core, r, sim.at().now));
const task = (run: RunState, step: string): TaskState => run.tasks.get(step) as TaskState;

/** Runs of `w` whose step a succeeded with an offloaded output holding `c: "k"` (read at once here). */
function runsWithOutput(sim: Simulation, w: CompiledWorkflow, n: number, s: SessionLeases): RunState[] {
  const runs: RunState[] = [];
  for (let i = 0; i < n; i++) {
    runs.push(beginRun(sim, w, {}));
    sim.clock += 10;
  }
  for (const a of leaseAllAdmitted(sim, s)) {
    // A claim check in the attempt's own folder (reports.ts refuses one elsewhere); the
    // simulation's read gives the ref itself as the output, so it carries the output's `c` too.
    const ref = { key: `${attemptPrefix(a.runId, a.stepId, a.attempt, a.kind)}output.json`, c: "k" };
    assert.equal(completed(sim.core, s, sim.key(a), null, ref, null, sim.at()), null);
    sim.clock += 10;
    settle(sim);
  }
  return runs;
}

/** What storage holds of `sim`'s active runs: no output read back, no key evaluated. */
const stored = (sim: Simulation) => storedState(sim, (r) => (r.workflow === keyed ? 1 : 2));

/** A simulation recovered from `before`'s rows whose offloaded outputs are read only when the test says. */
function restart(before: Simulation): { after: Simulation; reads: TaskState[] } {
  const after = new Simulation();
  const reads: TaskState[] = [];
  after.core.fx.resolveOutput = (t) => reads.push(t);
  const workflows = new Map([
    [1, keyed],
    [2, rated],
  ]);
  recover(after.core, stored(before), workflows, new Map(), after.at());
  return { after, reads };
}

const reading = (run: RunState, step = "b"): readonly string[] =>
  explainPending(run, task(run, step)).flatMap((g: Gate) =>
    g.kind === "dependencies" ? g.readingOutput : [],
  );

void describe("keys reading an offloaded output, across a restart (core)", () => {
  it("concurrency: nobody is leased until the keys are known, then one at a time in queue order", () => {
    const before = new Simulation();
    const s = before.session("s");
    const [r1, r2, r3] = runsWithOutput(before, keyed, 3, s) as [RunState, RunState, RunState];
    // r1's b holds key "k"; r2's and r3's wait in its queue.
    assert.deepEqual(
      leaseAllAdmitted(before, s).map((t) => t.runId),
      [r1.id],
    );
    const { after, reads } = restart(before);
    const run = (r: RunState): RunState => after.core.runs.get(r.id) as RunState;
    const readOf = (r: RunState): TaskState => {
      const t = reads.find((x) => x.runId === r.id);
      assert.ok(t, `a read of run ${r.id}`);
      return t;
    };
    const s2 = after.session("s2", "s");
    // No key is known: neither queued b is leased, and ExplainPending says what they wait for.
    assert.deepEqual(leaseAllAdmitted(after, s2), []);
    assert.equal(task(run(r2), "b").status, "QUEUED");
    assert.deepEqual(reading(run(r2)), ["a"]);
    assert.match(
      pendingReason(explainPending(run(r2), task(run(r2), "b"))),
      /reading the offloaded output of a/,
    );
    // r3's key is known first: still not leased, since r1 (leased) and r2 (queued before it) are not.
    outputResolved(after.core, readOf(r3), { c: "k" }, after.at().now);
    assert.deepEqual(leaseAllAdmitted(after, s2), []);
    assert.deepEqual(reading(run(r3)), ["a"], "r3 waits for the others' reads");
    outputResolved(after.core, readOf(r2), { c: "k" }, after.at().now);
    assert.deepEqual(leaseAllAdmitted(after, s2), []);
    // r1's key is known: it holds "k"; r2 then r3 wait in its queue, in the order they were queued.
    outputResolved(after.core, readOf(r1), { c: "k" }, after.at().now);
    assert.deepEqual(leaseAllAdmitted(after, s2), []);
    const keyGate = (r: RunState): Extract<Gate, { kind: "concurrency-key" }> | undefined =>
      explainPending(r, task(r, "b")).find(
        (g): g is Extract<Gate, { kind: "concurrency-key" }> => g.kind === "concurrency-key",
      );
    assert.deepEqual([keyGate(run(r2))?.position, keyGate(run(r3))?.position], [1, 2]);
    assert.deepEqual(
      keyGate(run(r2))?.holders.map((h) => h.runId),
      [r1.id],
    );
    assert.deepEqual(reading(run(r2)), []);
    // r1's lease is reclaimed and completes: r2 goes, then r3.
    const old = task(run(r1), "b");
    assert.deepEqual(attached(after.core, s2, [after.key(old)], after.at()).revoked, []);
    assert.equal(completed(after.core, s2, after.key(old), { ok: true }, null, null, after.at()), null);
    settle(after);
    const next = leaseAllAdmitted(after, s2);
    assert.deepEqual(
      next.map((t) => t.runId),
      [r2.id],
    );
    assert.equal(
      completed(after.core, s2, after.key(next[0] as TaskState), {}, null, null, after.at()),
      null,
    );
    settle(after);
    assert.deepEqual(
      leaseAllAdmitted(after, s2).map((t) => t.runId),
      [r3.id],
    );
  });

  it("a leased task whose lease ends before its key is known keeps nobody waiting", () => {
    const before = new Simulation();
    const s = before.session("s");
    const [r1, r2] = runsWithOutput(before, keyed, 2, s) as [RunState, RunState];
    assert.deepEqual(
      leaseAllAdmitted(before, s).map((t) => t.runId),
      [r1.id],
    );
    const { after, reads } = restart(before);
    const run = (r: RunState): RunState => after.core.runs.get(r.id) as RunState;
    const s2 = after.session("s2", "s");
    // r2's key is known, r1's (leased) is not: r2 waits for it.
    const a2 = reads.find((t) => t.runId === r2.id) as TaskState;
    outputResolved(after.core, a2, { c: "k" }, after.at().now);
    assert.deepEqual(leaseAllAdmitted(after, s2), []);
    // r1's b completes before its key is read: r2's is leased.
    const old = task(run(r1), "b");
    attached(after.core, s2, [after.key(old)], after.at());
    assert.equal(completed(after.core, s2, after.key(old), {}, null, null, after.at()), null);
    settle(after);
    assert.deepEqual(
      leaseAllAdmitted(after, s2).map((t) => t.runId),
      [r2.id],
    );
  });

  it("an output that cannot be read fails its step, and the key that reads it fails the queued task", () => {
    const before = new Simulation();
    const s = before.session("s");
    const [r1] = runsWithOutput(before, keyed, 1, s) as [RunState];
    const { after, reads } = restart(before);
    const run = after.core.runs.get(r1.id) as RunState;
    outputUnavailable(after.core, reads[0] as TaskState, "gone", after.at().now);
    settle(after);
    assert.equal(task(run, "a").error?.type, "OUTPUT_UNAVAILABLE");
    assert.equal(task(run, "b").status, "FAILED");
    assert.equal(task(run, "b").error?.type, "CONCURRENCY_KEY_ERROR");
    assert.match(task(run, "b").error?.message ?? "", /step "a" has no output \(it is failed\)/);
    assert.equal(run.status, "FAILED");
  });

  it("rate limits: a key reading an output not read back waits for it rather than failing the step", () => {
    const before = new Simulation();
    const s = before.session("s");
    const [r1] = runsWithOutput(before, rated, 1, s) as [RunState];
    const { after, reads } = restart(before);
    const run = after.core.runs.get(r1.id) as RunState;
    const s2 = after.session("s2", "s");
    assert.deepEqual(leaseAllAdmitted(after, s2), []);
    assert.equal(task(run, "b").status, "QUEUED");
    assert.deepEqual(reading(run), ["a"]);
    outputResolved(after.core, reads[0] as TaskState, { c: "k" }, after.at().now);
    const leased = leaseAllAdmitted(after, s2);
    assert.deepEqual(
      leased.map((t) => t.runId),
      [r1.id],
    );
    assert.equal(leased[0]?.rate?.[0]?.bucket.key, "k");
  });
});
