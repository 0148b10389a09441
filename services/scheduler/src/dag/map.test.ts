import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { evaluateRun, renderElementInput } from "./evaluate.js";
import type { StepState } from "./spec.js";
import { compileWorkflow } from "./validate.js";

const RUN = { id: "r", workflow: "fan", version: 1 };

function compile(steps: unknown[]) {
  const r = compileWorkflow({ name: "fan", version: 1, steps });
  assert.ok(r.ok, JSON.stringify(!r.ok && r.errors));
  return r.workflow;
}

function errorsOf(steps: unknown[]): { path: string; message: string }[] {
  const r = compileWorkflow({ name: "fan", version: 1, steps });
  assert.equal(r.ok, false, "refused");
  return r.ok ? [] : r.errors;
}

describe("map steps in the definition language", () => {
  it("compiles a map step with its defaults, and item/index in its input", () => {
    const wf = compile([
      { id: "list", type: "work" },
      {
        id: "each",
        type: "work",
        dependsOn: ["list"],
        map: { items: "steps.list.output.files" },
        input: { file: "{{ item.name }}", at: "{{ index }}", from: "{{ input.dir }}" },
      },
      { id: "fast", type: "work", map: { items: "input.xs", parallelism: 7, failure: "collect" } },
    ]);
    const each = wf.stepsById.get("each");
    assert.equal(each?.map?.parallelism, 100);
    assert.equal(each?.map?.failure, "fail-fast");
    assert.equal(each?.map?.expression, "steps.list.output.files");
    assert.deepEqual(
      { p: wf.stepsById.get("fast")?.map?.parallelism, f: wf.stepsById.get("fast")?.map?.failure },
      { p: 7, f: "collect" },
    );
    assert.equal(wf.stepsById.get("list")?.map, null);
  });

  it("names the field at fault", () => {
    const cases: [unknown, string, RegExp][] = [
      [{ id: "m", type: "w", map: [] }, "$.steps[0].map", /must be an object/],
      [{ id: "m", type: "w", map: {} }, "$.steps[0].map.items", /required/],
      [{ id: "m", type: "w", map: { items: 3 } }, "$.steps[0].map.items", /expression/],
      [{ id: "m", type: "w", map: { items: "input.(" } }, "$.steps[0].map.items", /invalid expression/],
      [
        { id: "m", type: "w", map: { items: "input.x", parallelism: 0 } },
        "$.steps[0].map.parallelism",
        /1 to 10000/,
      ],
      [
        { id: "m", type: "w", map: { items: "input.x", parallelism: 10001 } },
        "$.steps[0].map.parallelism",
        /1 to 10000/,
      ],
      [
        { id: "m", type: "w", map: { items: "input.x", parallelism: 1.5 } },
        "$.steps[0].map.parallelism",
        /integer/,
      ],
      [
        { id: "m", type: "w", map: { items: "input.x", failure: "ignore" } },
        "$.steps[0].map.failure",
        /fail-fast/,
      ],
      [{ id: "m", type: "w", map: { items: "input.x", extra: 1 } }, "$.steps[0].map.extra", /unknown field/],
      [
        { id: "m", type: "w", map: { items: "input.x" }, compensate: { type: "undo" } },
        "$.steps[0].compensate",
        /not supported/,
      ],
      [
        { id: "m", type: "w", map: { items: "input.x" }, workflow: { name: "child" } },
        "$.steps[0].type",
        /a child workflow step has no type/,
      ],
      [
        { id: "m", map: { items: "input.x" }, workflow: { name: "child" }, input: "{{ item }}" },
        "$.steps[0].input",
        /set input in workflow.input/,
      ],
      [
        { id: "m", map: { items: "input.x" }, workflow: { name: "child", input: "{{ item.nope( }}" } },
        "$.steps[0].workflow.input",
        /./,
      ],
      [
        { id: "m", map: { items: "input.x" }, workflow: { name: "child", onParentCancel: "keep" } },
        "$.steps[0].workflow.onParentCancel",
        /"cancel" or "abandon"/,
      ],
      [
        { id: "m", map: { items: "input.x", parallelism: 0 }, workflow: { name: "child" } },
        "$.steps[0].map.parallelism",
        /1 to 10000/,
      ],
      [{ id: "m", type: "w", map: { items: "steps.nope.output" } }, "$.steps[0].map.items", /unknown step/],
      [
        { id: "m", type: "w", input: "{{ item }}" },
        "$.steps[0].input",
        /only available in the input of a map step/,
      ],
      [
        { id: "m", type: "w", when: "index > 1" },
        "$.steps[0].when",
        /only available in the input of a map step/,
      ],
      [{ id: "m", type: "w", map: { items: "item" } }, "$.steps[0].map.items", /only available in the input/],
    ];
    for (const [step, path, message] of cases) {
      const errors = errorsOf([step]);
      const hit = errors.find((e) => e.path === path);
      assert.ok(hit, `${JSON.stringify(step)}: expected an error at ${path}, got ${JSON.stringify(errors)}`);
      assert.match(hit.message, message);
    }
  });

  it("a map over a child workflow: item and index in workflow.input, each field refused once with its path", () => {
    const wf = compile([
      {
        id: "each",
        map: { items: "input.orders", parallelism: 3, failure: "collect" },
        workflow: { name: "ship", version: 2, input: { order: "{{ item }}", n: "{{ index }}" } },
      },
    ]);
    const step = wf.stepsById.get("each");
    assert.ok(step);
    assert.deepEqual(step.child, { name: "ship", version: 2, onParentCancel: "cancel" });
    assert.deepEqual({ p: step.map?.parallelism, f: step.map?.failure }, { p: 3, f: "collect" });
    assert.deepEqual(renderElementInput(wf, step, {}, new Map(), RUN, { id: 9 }, 4), {
      workflow: "ship",
      version: 2,
      input: { order: { id: 9 }, n: 4 },
    });
    const errors = errorsOf([
      {
        id: "m",
        map: { items: "input.x" },
        workflow: { name: "child" },
        compensate: { type: "undo" },
        wait: { signal: "s" },
      },
    ]);
    assert.deepEqual(
      errors.map((e) => e.path),
      ["$.steps[0].compensate", "$.steps[0].wait"],
      JSON.stringify(errors),
    );
    assert.match(errors[0]?.message ?? "", /a child workflow step has no compensate/);
    // item and index stay out of the rest of the step.
    const outside = errorsOf([
      { id: "m", map: { items: "input.x" }, workflow: { name: "child" }, when: "item > 1" },
    ]);
    assert.equal(outside[0]?.path, "$.steps[0].when");
  });

  it("a ready map step starts with its items; not an array or too many fail with MAP_ITEMS_INVALID", () => {
    const wf = compile([{ id: "each", type: "w", map: { items: "input.xs" }, input: "{{ item }}" }]);
    const ready = evaluateRun(wf, { xs: [1, 2, 3] }, new Map(), RUN);
    assert.deepEqual(ready.ready, [{ stepId: "each", input: [1, 2, 3] }]);
    for (const [xs, message] of [
      [{ a: 1 }, /must yield an array, got object/],
      ["abc", /got string/],
      [Array.from({ length: 10_001 }, (_, i) => i), /10001 elements; a map step takes at most 10000/],
    ] as const) {
      const ev = evaluateRun(wf, { xs }, new Map(), RUN);
      assert.equal(ev.ready.length, 0);
      assert.equal(ev.fail[0]?.error.type, TaskErrorType.MAP_ITEMS_INVALID);
      assert.match(ev.fail[0]?.error.message ?? "", message);
    }
    assert.equal(
      evaluateRun(wf, { xs: Array.from({ length: 10_000 }, (_, i) => i) }, new Map(), RUN).ready.length,
      1,
    );
  });

  it("renders an element's input with item, index, the run input and upstream outputs", () => {
    const wf = compile([
      { id: "list", type: "w" },
      {
        id: "each",
        type: "w",
        dependsOn: ["list"],
        map: { items: "steps.list.output" },
        input: { n: "{{ item.n * 2 }}", i: "{{ index }}", tag: "{{ steps.list.output[0].n }}-{{ input.t }}" },
      },
    ]);
    const states = new Map<string, StepState>([["list", { status: "succeeded", output: [{ n: 5 }] }]]);
    const step = wf.stepsById.get("each");
    assert.ok(step);
    assert.deepEqual(renderElementInput(wf, step, { t: "x" }, states, RUN, { n: 4 }, 3), {
      n: 8,
      i: 3,
      tag: "5-x",
    });
    const bare = compile([{ id: "each", type: "w", map: { items: "input.xs" } }]);
    const s = bare.stepsById.get("each");
    assert.ok(s);
    assert.deepEqual(renderElementInput(bare, s, {}, new Map(), RUN, { any: true }, 0), { any: true });
  });
});
