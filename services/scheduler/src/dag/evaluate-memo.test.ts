/**
 * evaluateRun with a memo (the prefix of settled steps kept between calls) decides exactly what it
 * decides without one: random DAGs (conditions, templates that fail, every way a step ends), driven
 * the way the engine drives a run, one step ending at a time in random order, compared after every
 * change.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { seededRandom } from "@nexusflow/common/testing";
import { evaluateRun, newEvaluationMemo } from "./evaluate.js";
import type { CompiledWorkflow, StepState } from "./spec.js";
import { compileWorkflow } from "./validate.js";

const RUN = { id: "run-1", workflow: "flow", version: 1 };

function randomWorkflow(next: () => number): CompiledWorkflow {
  const n = 1 + Math.floor(next() * 25);
  const steps: Record<string, unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const deps = new Set<string>();
    const want = i === 0 ? 0 : Math.floor(next() * 4);
    for (let k = 0; k < want; k++) deps.add(`s${Math.floor(next() * i)}`);
    const step: Record<string, unknown> = { id: `s${i}`, type: "x" };
    if (deps.size > 0) step.dependsOn = [...deps];
    const first = [...deps][0];
    const roll = next();
    // A condition on an upstream output (true or false by the output), a template that fails when
    // the output lacks a field, or plain.
    if (first !== undefined && roll < 0.2) step.when = `steps.${first}.output.go`;
    else if (first !== undefined && roll < 0.3)
      step.input = { v: `{{ steps.${first}.output.missing.deeper }}` };
    else if (roll < 0.4) step.input = { v: "{{ input.n }}" };
    steps.push(step);
  }
  const result = compileWorkflow({ name: "flow", version: 1, steps });
  if (!result.ok) assert.fail(result.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return result.workflow;
}

/** How an active step ends. */
function ending(next: () => number, input: unknown): StepState {
  const r = next();
  if (r < 0.55) return { status: "succeeded", input, output: { go: next() < 0.6 } };
  if (r < 0.75) return { status: "succeeded", input, output: null };
  if (r < 0.9) return { status: "failed", input };
  return { status: "cancelled" };
}

describe("evaluateRun with a memo", () => {
  it("decides what it decides without one, after every change of 500 random runs", () => {
    for (let seed = 1; seed <= 500; seed++) {
      const next = seededRandom(seed);
      const wf = randomWorkflow(next);
      const states = new Map<string, StepState>();
      const memo = newEvaluationMemo();
      const active: string[] = [];
      for (let change = 0; change < 200; change++) {
        const plain = evaluateRun(wf, { n: 1 }, states, RUN);
        const memoized = evaluateRun(wf, { n: 1 }, states, RUN, memo);
        assert.deepEqual(memoized, plain, `seed ${seed}, change ${change}`);
        assert.ok(memo.settled <= wf.steps.length);
        // Apply the decisions as the engine does, then end one active step.
        for (const s of plain.skip) states.set(s.stepId, { status: "skipped", skipReason: s.reason });
        for (const f of plain.fail) states.set(f.stepId, { status: "failed" });
        for (const r of plain.ready) {
          states.set(r.stepId, { status: "active", input: r.input });
          active.push(r.stepId);
        }
        if (plain.outcome !== undefined) break;
        if (active.length === 0) {
          // Decisions only (skips, failures): evaluate again.
          assert.ok(plain.skip.length + plain.fail.length > 0, `seed ${seed}: no progress`);
          continue;
        }
        const [id] = active.splice(Math.floor(next() * active.length), 1) as [string];
        states.set(id, ending(next, states.get(id)?.input));
      }
      // Every run ends (its outcome decided) within its steps' changes.
      assert.ok(
        evaluateRun(wf, { n: 1 }, states, RUN, memo).outcome !== undefined,
        `seed ${seed}: no outcome`,
      );
    }
  });

  it("starts over for another workflow, and keeps only settled states read from the run", () => {
    const chain = (n: number) =>
      compileWorkflow({
        name: "c",
        version: 1,
        steps: Array.from({ length: n }, (_, i) => ({
          id: `s${i}`,
          type: "x",
          ...(i === 0 ? {} : { dependsOn: [`s${i - 1}`] }),
        })),
      });
    const a = chain(5);
    const b = chain(3);
    assert.ok(a.ok && b.ok);
    const memo = newEvaluationMemo();
    const states = new Map<string, StepState>([
      ["s0", { status: "succeeded", output: 1 }],
      ["s1", { status: "active" }],
      ["s2", { status: "succeeded", output: 2 }],
    ]);
    evaluateRun(a.workflow, null, states, RUN, memo);
    // s0 settled; s1 active stops the prefix (s2 after it is not in it).
    assert.equal(memo.settled, 1);
    // A skip decided by a call is not in the prefix until read back as a state.
    const skipping = new Map<string, StepState>([["s0", { status: "failed" }]]);
    const fresh = newEvaluationMemo();
    const ev = evaluateRun(a.workflow, null, skipping, RUN, fresh);
    assert.deepEqual(
      ev.skip.map((s) => s.stepId),
      ["s1", "s2", "s3", "s4"],
    );
    assert.equal(fresh.settled, 1);
    // Another workflow: the memo starts over.
    evaluateRun(b.workflow, null, new Map(), RUN, memo);
    assert.equal(memo.workflow, b.workflow);
    assert.equal(memo.settled, 0);
  });
});
