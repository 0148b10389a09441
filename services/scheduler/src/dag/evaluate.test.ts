import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DEFAULT_EXPRESSION_BUDGET, RUN_EVALUATION_BUDGET, RunEvaluationBudget } from "./budget.js";
import { InputTooLargeError, isDagError } from "./errors.js";
import { compensationOrder, evaluateRun, renderCompensationInput, renderElementInput } from "./evaluate.js";
import type { Evaluation } from "./evaluate.js";
import type { CompiledWorkflow, StepState } from "./spec.js";
import { MAX_TASK_INPUT_BYTES } from "./template.js";
import { compileWorkflow } from "./validate.js";

const RUN = { id: "run-1", workflow: "flow", version: 1 };

function compile(steps: unknown[], extra: Record<string, unknown> = {}): CompiledWorkflow {
  const result = compileWorkflow({ name: "flow", version: 1, steps, ...extra });
  if (!result.ok) assert.fail(result.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return result.workflow;
}

/**
 * Drives a run to its end the way the scheduler would: apply every decision, then "execute" ready
 * steps with `execute` (which returns the output, or throws to fail the step), until an outcome.
 */
function simulate(
  wf: CompiledWorkflow,
  input: unknown,
  execute: (stepId: string, input: unknown) => unknown,
): { states: Map<string, StepState>; outcome: NonNullable<Evaluation["outcome"]>; rounds: string[][] } {
  const states = new Map<string, StepState>();
  const rounds: string[][] = [];
  for (let round = 0; round < 100; round++) {
    const evaluation = evaluateRun(wf, input, states, RUN);
    for (const s of evaluation.skip) states.set(s.stepId, { status: "skipped", skipReason: s.reason });
    for (const f of evaluation.fail) states.set(f.stepId, { status: "failed" });
    if (evaluation.outcome !== undefined) return { states, outcome: evaluation.outcome, rounds };
    assert.ok(evaluation.ready.length > 0, "no progress and no outcome");
    rounds.push(evaluation.ready.map((r) => r.stepId));
    for (const { stepId, input: stepInput } of evaluation.ready) {
      try {
        states.set(stepId, { status: "succeeded", input: stepInput, output: execute(stepId, stepInput) });
      } catch {
        states.set(stepId, { status: "failed", input: stepInput });
      }
    }
  }
  assert.fail("run did not finish");
}

function st(entries: Record<string, StepState>): Map<string, StepState> {
  return new Map(Object.entries(entries));
}

describe("evaluateRun: shapes", () => {
  it("runs a chain one step at a time, passing outputs along", () => {
    const wf = compile([
      { id: "a", type: "x", input: { n: "{{ input.n }}" } },
      { id: "b", type: "x", dependsOn: ["a"], input: { n: "{{ steps.a.output.n + 1 }}" } },
      { id: "c", type: "x", dependsOn: ["b"], input: "{{ steps.b.output.n * 10 }}" },
    ]);
    const { rounds, outcome, states } = simulate(wf, { n: 1 }, (_id, input) => input);
    assert.deepEqual(rounds, [["a"], ["b"], ["c"]]);
    assert.equal(states.get("c")?.input, 20);
    assert.deepEqual(outcome, { status: "succeeded", output: { a: { n: 1 }, b: { n: 2 }, c: 20 } });
  });

  it("fans out and joins a diamond", () => {
    const wf = compile([
      { id: "root", type: "x" },
      { id: "left", type: "x", dependsOn: ["root"] },
      { id: "right", type: "x", dependsOn: ["root"] },
      {
        id: "join",
        type: "x",
        dependsOn: ["left", "right"],
        input: ["{{ steps.left.output }}", "{{ steps.right.output }}"],
      },
    ]);
    const { rounds, states } = simulate(wf, {}, (id) => id.toUpperCase());
    assert.deepEqual(rounds, [["root"], ["left", "right"], ["join"]]);
    assert.deepEqual(states.get("join")?.input, ["LEFT", "RIGHT"]);
  });

  it("waits while a dependency is active and reports nothing twice", () => {
    const wf = compile([
      { id: "a", type: "x" },
      { id: "b", type: "x" },
      { id: "c", type: "x", dependsOn: ["a", "b"] },
    ]);
    const e = evaluateRun(wf, {}, st({ a: { status: "succeeded" }, b: { status: "active" } }), RUN);
    assert.deepEqual(e, { ready: [], skip: [], fail: [] });
  });

  it("gives steps without input null and renders run.* values", () => {
    const wf = compile([
      { id: "a", type: "x" },
      { id: "b", type: "x", input: "{{ run.workflow }}@{{ run.version }}/{{ run.id }}" },
    ]);
    assert.deepEqual(evaluateRun(wf, undefined, new Map(), RUN).ready, [
      { stepId: "a", input: null },
      { stepId: "b", input: "flow@1/run-1" },
    ]);
  });
});

describe("evaluateRun: conditions and joins", () => {
  const branches = [
    { id: "check", type: "x" },
    { id: "approve", type: "x", dependsOn: ["check"], when: "steps.check.output.score >= 50" },
    { id: "reject", type: "x", dependsOn: ["check"], when: "steps.check.output.score < 50" },
    { id: "after-approve", type: "x", dependsOn: ["approve"] },
    {
      id: "notify",
      type: "x",
      dependsOn: ["after-approve", "reject"],
      input: {
        approved: "{{ steps.after-approve.output }}",
        rejected: "{{ steps.reject.output }}",
        how: "{{ steps.reject.status }}",
      },
    },
  ];

  it("skips the branch not taken, cascading through it in one call, and runs the join", () => {
    const wf = compile(branches);
    const e = evaluateRun(wf, {}, st({ check: { status: "succeeded", output: { score: 80 } } }), RUN);
    assert.deepEqual(
      e.ready.map((r) => r.stepId),
      ["approve"],
    );
    assert.deepEqual(e.skip, [{ stepId: "reject", reason: "condition" }]);

    const { outcome, states } = simulate(wf, {}, (id) => (id === "check" ? { score: 80 } : `${id}-done`));
    assert.equal(states.get("reject")?.skipReason, "condition");
    assert.deepEqual(states.get("notify")?.input, {
      approved: "after-approve-done",
      rejected: null,
      how: "skipped",
    });
    assert.equal(outcome.status, "succeeded");
  });

  it("skips a join for condition when every dependency was skipped for condition", () => {
    const wf = compile([
      { id: "a", type: "x", when: "input.go" },
      { id: "b", type: "x", when: "input.go" },
      { id: "c", type: "x", dependsOn: ["a", "b"] },
      { id: "d", type: "x", dependsOn: ["c"] },
    ]);
    const e = evaluateRun(wf, { go: false }, new Map(), RUN);
    assert.deepEqual(e.skip, [
      { stepId: "a", reason: "condition" },
      { stepId: "b", reason: "condition" },
      { stepId: "c", reason: "condition" },
      { stepId: "d", reason: "condition" },
    ]);
    assert.deepEqual(e.outcome, { status: "succeeded", output: {} });
  });

  it("evaluates when only once the dependencies are done, and may use exists()", () => {
    const wf = compile([
      { id: "a", type: "x", when: "exists(input.email)" },
      { id: "b", type: "x", dependsOn: ["a"], when: "exists(steps.a.output.id)" },
    ]);
    assert.deepEqual(
      evaluateRun(wf, {}, new Map(), RUN).skip.map((s) => s.reason),
      ["condition", "condition"],
    );
    const e = evaluateRun(wf, { email: "x" }, st({ a: { status: "succeeded", output: {} } }), RUN);
    assert.deepEqual(e.skip, [{ stepId: "b", reason: "condition" }]);
  });

  it("fails a step whose when cannot be evaluated", () => {
    const wf = compile([{ id: "a", type: "x", when: "input.amount > 10" }]);
    const e = evaluateRun(wf, {}, new Map(), RUN);
    assert.equal(e.fail.length, 1);
    assert.equal(e.fail[0]?.error.type, "EXPRESSION_ERROR");
    assert.match(e.fail[0]?.error.message ?? "", /^when: input\.amount does not resolve/);
    assert.deepEqual(e.outcome, { status: "failed", failedSteps: ["a"] });
  });
});

describe("evaluateRun: failures", () => {
  const wf = compile([
    { id: "a", type: "x" },
    { id: "b", type: "x", dependsOn: ["a"] },
    { id: "c", type: "x", dependsOn: ["b"] },
    { id: "d", type: "x", dependsOn: ["c", "side"] },
    { id: "side", type: "x" },
    { id: "side2", type: "x", dependsOn: ["side"] },
  ]);

  it("skips everything downstream of a failure for upstream, at once, even with a dependency still running", () => {
    const e = evaluateRun(wf, {}, st({ a: { status: "failed" }, side: { status: "active" } }), RUN);
    assert.deepEqual(e.skip, [
      { stepId: "b", reason: "upstream" },
      { stepId: "c", reason: "upstream" },
      { stepId: "d", reason: "upstream" },
    ]);
    assert.equal(e.outcome, undefined, "side is still active");
  });

  it("keeps independent branches running and fails the run at the end", () => {
    const { outcome, states } = simulate(wf, {}, (id) => {
      if (id === "b") throw new Error("boom");
      return id;
    });
    assert.equal(states.get("side2")?.status, "succeeded");
    assert.equal(states.get("c")?.skipReason, "upstream");
    assert.deepEqual(outcome, { status: "failed", failedSteps: ["b"] });
  });

  it("treats cancelled steps and skips without a reason as blocking", () => {
    const e = evaluateRun(wf, {}, st({ a: { status: "cancelled" }, side: { status: "skipped" } }), RUN);
    assert.deepEqual(
      e.skip.map((s) => `${s.stepId}:${s.reason}`),
      ["b:upstream", "c:upstream", "d:upstream", "side2:upstream"],
    );
    assert.deepEqual(e.outcome, { status: "failed", failedSteps: ["a"] });
  });

  it("fails a step whose input cannot be rendered, and cascades in the same call", () => {
    const wf2 = compile([
      { id: "a", type: "x" },
      { id: "b", type: "x", dependsOn: ["a"], input: { total: "{{ steps.a.output.total }}" } },
      { id: "c", type: "x", dependsOn: ["b"] },
    ]);
    const e = evaluateRun(wf2, {}, st({ a: { status: "succeeded", output: { sum: 1 } } }), RUN);
    assert.deepEqual(
      e.fail.map((f) => [f.stepId, f.error.type]),
      [["b", "TEMPLATE_ERROR"]],
    );
    assert.match(
      e.fail[0]?.error.message ?? "",
      /^\$\.steps\[1\]\.input\.total: steps\.a\.output\.total does not resolve/,
    );
    assert.deepEqual(e.skip, [{ stepId: "c", reason: "upstream" }]);
    assert.deepEqual(e.outcome, { status: "failed", failedSteps: ["b"] });
  });
});

describe("evaluateRun: output", () => {
  it("renders the output mapping when the run succeeds", () => {
    const wf = compile(
      [
        { id: "a", type: "x" },
        { id: "b", type: "x", dependsOn: ["a"], when: "false" },
      ],
      { output: { id: "{{ steps.a.output.id }}", b: "{{ steps.b.output }}", who: "{{ input.user }}" } },
    );
    const e = evaluateRun(wf, { user: "ada" }, st({ a: { status: "succeeded", output: { id: 7 } } }), RUN);
    assert.deepEqual(e.outcome, { status: "succeeded", output: { id: 7, b: null, who: "ada" } });
  });

  it("fails the run when the output mapping cannot be rendered", () => {
    const wf = compile([{ id: "a", type: "x" }], { output: "{{ steps.a.output.missing }}" });
    const e = evaluateRun(wf, {}, st({ a: { status: "succeeded", output: {} } }), RUN);
    assert.equal(e.outcome?.status, "failed");
    assert.deepEqual(e.outcome?.status === "failed" ? e.outcome.failedSteps : null, []);
    assert.match(
      e.outcome?.status === "failed" ? (e.outcome.error?.message ?? "") : "",
      /^\$\.output: steps\.a\.output\.missing/,
    );
  });

  it("defaults to every succeeded step's output keyed by id, in spec order", () => {
    const wf = compile([
      { id: "z", type: "x", dependsOn: ["a"] },
      { id: "a", type: "x" },
      { id: "skipped", type: "x", when: "false" },
    ]);
    const e = evaluateRun(
      wf,
      {},
      st({ a: { status: "succeeded" }, z: { status: "succeeded", output: [1] } }),
      RUN,
    );
    assert.deepEqual(e.outcome, { status: "succeeded", output: { z: [1], a: null } });
    assert.deepEqual(Object.keys(e.outcome?.status === "succeeded" ? (e.outcome.output as object) : {}), [
      "z",
      "a",
    ]);
  });
});

describe("compensation", () => {
  const wf = compile([
    {
      id: "reserve",
      type: "x",
      compensate: {
        type: "release",
        input: { id: "{{ step.output.reservation }}", qty: "{{ step.input.qty }}" },
      },
    },
    { id: "charge", type: "x", dependsOn: ["reserve"], compensate: { type: "refund" } },
    { id: "email", type: "x", dependsOn: ["charge"] },
    { id: "ship", type: "x", dependsOn: ["email"], compensate: { type: "unship" } },
    {
      id: "points",
      type: "x",
      dependsOn: ["reserve"],
      compensate: { type: "unpoints", input: "{{ steps.reserve.output.reservation }}" },
    },
    { id: "audit", type: "x", compensate: { type: "unaudit" } },
  ]);

  it("orders compensations in reverse dependency order, grouped into parallel waves", () => {
    assert.deepEqual(compensationOrder(wf, ["reserve", "charge", "email", "ship", "points", "audit"]), [
      ["audit", "points", "ship"],
      ["charge"],
      ["reserve"],
    ]);
  });

  it("only compensates succeeded steps with a compensate, waiting through steps without one", () => {
    assert.deepEqual(compensationOrder(wf, ["reserve", "charge", "email"]), [["charge"], ["reserve"]]);
    assert.deepEqual(compensationOrder(wf, ["email", "ship"]), [["ship"]]);
    assert.deepEqual(compensationOrder(wf, []), []);
  });

  it("child workflow steps roll back in order (their child's rollback), unless they abandon their child", () => {
    const saga = compile([
      { id: "reserve", type: "x", compensate: { type: "release" } },
      { id: "pay", dependsOn: ["reserve"], workflow: { name: "charge" } },
      { id: "each", dependsOn: ["pay"], map: { items: "input.xs" }, workflow: { name: "ship" } },
      { id: "note", dependsOn: ["pay"], workflow: { name: "note", onParentCancel: "abandon" } },
    ]);
    assert.deepEqual(compensationOrder(saga, ["reserve", "pay", "each", "note"]), [
      ["each"],
      ["pay"],
      ["reserve"],
    ]);
  });

  it("rejects unknown step ids", () => {
    assert.throws(
      () => compensationOrder(wf, ["nope"]),
      (e: unknown) => isDagError(e, "UNKNOWN_STEP"),
    );
  });

  it("renders compensate.input with the step's own input and output", () => {
    const states = st({
      reserve: { status: "succeeded", input: { qty: 2 }, output: { reservation: "r-1" } },
    });
    assert.deepEqual(renderCompensationInput(wf, "reserve", {}, states, RUN), {
      ok: true,
      input: { id: "r-1", qty: 2 },
    });
    assert.deepEqual(renderCompensationInput(wf, "points", {}, states, RUN), { ok: true, input: "r-1" });
    assert.deepEqual(renderCompensationInput(wf, "charge", {}, states, RUN), { ok: true, input: null });
    const broken = renderCompensationInput(
      wf,
      "reserve",
      {},
      st({ reserve: { status: "succeeded", output: {} } }),
      RUN,
    );
    assert.equal(broken.ok, false);
    assert.throws(
      () => renderCompensationInput(wf, "email", {}, states, RUN),
      (e: unknown) => isDagError(e, "INVALID_ARGUMENT"),
    );
  });
});

describe("evaluateRun: scale", () => {
  it("resolves a 1000-step chain of condition skips in a single call", () => {
    const steps = Array.from({ length: 1000 }, (_, i) => ({
      id: `s${i}`,
      type: "x",
      ...(i === 0 ? { when: "false" } : { dependsOn: [`s${i - 1}`] }),
    }));
    const e = evaluateRun(compile(steps), {}, new Map(), RUN);
    assert.equal(e.skip.length, 1000);
    assert.ok(e.outcome);
  });
});

describe("evaluateRun: one work budget per call", () => {
  const big = Array.from({ length: 1_000_000 }, (_, i) => i);
  const input = { a: big, b: [...big] };

  it("shares one budget among the steps it decides; each later step that needs work fails, named", () => {
    // Each step compares two 1,000,000-element arrays: 1 Mi units of its own 4 Mi budget, ordinary
    // alone; 16 of them fit in the 16 Mi of one call (a budget per step let all 24, or 5,000, run).
    const steps: Record<string, unknown>[] = Array.from({ length: 24 }, (_, i) =>
      i % 2 === 0
        ? { id: `w${i}`, type: "x", when: "input.a == input.b" }
        : { id: `t${i}`, type: "x", input: { same: "{{ input.a == input.b }}" } },
    );
    // Needs no work: decided after the budget is spent, it still starts.
    steps.push({ id: "free", type: "x", when: "input.a != null", input: "{{ input.a[1] }}" });
    const budget = new RunEvaluationBudget();
    const e = evaluateRun(compile(steps), input, new Map(), RUN, undefined, budget);
    assert.equal(budget.limit, RUN_EVALUATION_BUDGET);
    assert.equal(RUN_EVALUATION_BUDGET, 4 * DEFAULT_EXPRESSION_BUDGET);
    assert.deepEqual(
      e.ready.map((r) => r.stepId),
      [...steps.slice(0, 16).map((s) => s["id"]), "free"],
    );
    assert.equal(e.ready[1]?.input && (e.ready[1].input as { same: unknown }).same, true);
    // As when a step's own expression needs too much work: that step fails, the others go on.
    assert.deepEqual(
      e.fail.map((f) => [f.stepId, f.error.type]),
      steps
        .slice(16, 24)
        .map((s) => [s["id"], s["when"] === undefined ? "TEMPLATE_ERROR" : "EXPRESSION_ERROR"]),
    );
    const units =
      "units \\(about one per array element or object key visited, one per 16 characters scanned\\) that one evaluation of a run may use for all the steps it decides";
    for (const f of e.fail) {
      const where = f.stepId.startsWith("w")
        ? "when: "
        : `\\$\\.steps\\[${f.stepId.slice(1)}\\]\\.input\\.same: `;
      assert.match(
        f.error.message,
        new RegExp(
          `^${where}"==" exceeds the work budget of ${RUN_EVALUATION_BUDGET} ${units} \\(it ran out deciding step "${f.stepId}"\\)$`,
        ),
      );
    }
    assert.equal(e.outcome, undefined, "the started steps are running");
    assert.ok(budget.used <= RUN_EVALUATION_BUDGET);
  });

  it("spends it on the output mapping too, which fails the run as it does alone", () => {
    const wf = compile([{ id: "a", type: "x" }], { output: { n: "{{ len(input.s) }}" } });
    const states = st({ a: { status: "succeeded", output: 1 } });
    const s = "x".repeat(1000);
    assert.deepEqual(evaluateRun(wf, { s }, states, RUN).outcome, {
      status: "succeeded",
      output: { n: 1000 },
    });
    const e = evaluateRun(wf, { s }, states, RUN, undefined, new RunEvaluationBudget(10));
    assert.equal(e.outcome?.status, "failed");
    assert.match(
      (e.outcome?.status === "failed" && e.outcome.error?.message) || "",
      /^\$\.output\.n: len\(\) exceeds the work budget of 10 units .* \(it ran out deciding the output mapping\)$/,
    );
  });
});

describe("evaluateRun: inputs larger than a lease carries", () => {
  // About 1 MB of JSON: at least 1,050,014 bytes as protobuf each time it is templated in.
  const rows = Array.from({ length: 50_000 }, (_, i) => `row-${i}`.padEnd(17, "."));

  it("fails the step INPUT_TOO_LARGE while rendering, at the value that takes it past 15 MiB", () => {
    const wide = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`k${i}`, "{{ input }}"]));
    const wf = compile([
      { id: "fan", type: "x", input: wide },
      { id: "one", type: "x", input: { all: "{{ input }}", again: "{{ input }}" } },
      { id: "after", type: "x", dependsOn: ["fan"] },
    ]);
    const budget = new RunEvaluationBudget();
    const e = evaluateRun(wf, { rows }, new Map(), RUN, undefined, budget);
    assert.deepEqual(
      e.fail.map((f) => [f.stepId, f.error.type]),
      [["fan", "INPUT_TOO_LARGE"]],
    );
    assert.equal(
      e.fail[0]?.error.message,
      `step "fan": $.steps[0].input.k14: the rendered input would be larger than the ${MAX_TASK_INPUT_BYTES} bytes as protobuf that a lease carries to an executor (at least 15750337 bytes with this value)`,
    );
    assert.deepEqual(
      e.ready.map((r) => r.stepId),
      ["one"],
    );
    assert.deepEqual(e.skip, [{ stepId: "after", reason: "upstream" }]);
    // The input was measured once for the whole call (its 50,000 rows and its key), not per use
    // (a value within it, such as input.rows, would be measured again, and charged again).
    assert.equal(budget.used, 50_001);
  });

  it("fails a compensation's and a map element's input the same way", () => {
    const wide = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, "{{ step.output }}"]));
    const wf = compile([
      { id: "reserve", type: "x", compensate: { type: "undo", input: wide } },
      {
        id: "each",
        type: "x",
        map: { items: "input.items" },
        input: Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, "{{ item }}"])),
      },
    ]);
    const states = st({ reserve: { status: "succeeded", output: rows } });
    const comp = renderCompensationInput(wf, "reserve", {}, states, RUN);
    assert.equal(comp.ok, false);
    assert.equal(!comp.ok && comp.error.type, "INPUT_TOO_LARGE");
    assert.match(
      !comp.ok ? comp.error.message : "",
      /^step "reserve": \$\.steps\[0\]\.compensate\.input\.k14: /,
    );
    const step = wf.stepsById.get("each");
    assert.ok(step);
    assert.throws(
      () => renderElementInput(wf, step, { items: [rows] }, states, RUN, rows, 0),
      (e: unknown) =>
        e instanceof InputTooLargeError &&
        isDagError(e, "INPUT_TOO_LARGE") &&
        e.at === "$.steps[1].input.k14",
    );
  });
});
