import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { compileWorkflow } from "./validate.js";

function errorsOf(steps: unknown[]): { path: string; message: string }[] {
  const r = compileWorkflow({ name: "parent", version: 1, steps });
  assert.equal(r.ok, false, "refused");
  return r.ok ? [] : r.errors;
}

describe("child workflow steps in the definition language", () => {
  it("compiles a child step: name, optional version, input template, onParentCancel", () => {
    const r = compileWorkflow({
      name: "parent",
      version: 1,
      steps: [
        { id: "a", type: "work" },
        {
          id: "charge",
          dependsOn: ["a"],
          workflow: { name: "charge-card", version: 3, input: { amount: "{{ steps.a.output.n }}" } },
        },
        { id: "latest", workflow: { name: "parent", onParentCancel: "abandon" } },
      ],
    });
    assert.ok(r.ok, JSON.stringify(!r.ok && r.errors));
    const charge = r.workflow.stepsById.get("charge");
    assert.deepEqual(charge?.child, { name: "charge-card", version: 3, onParentCancel: "cancel" });
    assert.equal(charge?.type, "");
    assert.equal(charge?.durable, null);
    assert.deepEqual(r.workflow.stepsById.get("latest")?.child, {
      name: "parent",
      version: null,
      onParentCancel: "abandon",
    });
    assert.equal(r.workflow.stepsById.get("a")?.child, null);
  });

  it("names the field at fault", () => {
    const cases: [unknown, string, RegExp][] = [
      [{ id: "c", workflow: {} }, "$.steps[0].workflow.name", /required/],
      [{ id: "c", workflow: { name: "Bad Name" } }, "$.steps[0].workflow.name", /invalid/],
      [{ id: "c", workflow: { name: "x", version: "3" } }, "$.steps[0].workflow.version", /got string/],
      [{ id: "c", workflow: { name: "x", version: 1.5 } }, "$.steps[0].workflow.version", /integer/],
      [{ id: "c", workflow: { name: "x", version: 0 } }, "$.steps[0].workflow.version", /from 1/],
      [{ id: "c", workflow: { name: "x", version: 2 ** 31 } }, "$.steps[0].workflow.version", /2147483647/],
      [
        { id: "c", workflow: { name: "x", onParentCancel: "kill" } },
        "$.steps[0].workflow.onParentCancel",
        /"cancel" or "abandon"/,
      ],
      [{ id: "c", workflow: { name: "x", colour: 1 } }, "$.steps[0].workflow.colour", /unknown field/],
      [{ id: "c", workflow: "x" }, "$.steps[0].workflow", /must be an object/],
      [{ id: "c", type: "t", workflow: { name: "x" } }, "$.steps[0].type", /child workflow step has no type/],
      [{ id: "c", retry: { maxAttempts: 3 }, workflow: { name: "x" } }, "$.steps[0].retry", /no retry/],
      [{ id: "c", wait: { signal: "s" }, workflow: { name: "x" } }, "$.steps[0].wait", /no wait/],
      [
        { id: "c", workflow: { name: "x", input: "{{ steps.nope.output }}" } },
        "$.steps[0].workflow.input",
        /nope/,
      ],
    ];
    for (const [step, path, message] of cases) {
      const errors = errorsOf([step]);
      const hit = errors.find(
        (e) => e.path === path || e.path.startsWith(`${path}.`) || e.path.startsWith(`${path}[`),
      );
      assert.ok(hit, `${JSON.stringify(step)}: expected an error at ${path}, got ${JSON.stringify(errors)}`);
      assert.match(hit.message, message, JSON.stringify(step));
    }
  });

  it("refuses NaN and Infinity as a version (as a number, not JSON)", () => {
    for (const version of [Number.NaN, Number.POSITIVE_INFINITY, -1]) {
      const errors = errorsOf([{ id: "c", workflow: { name: "x", version } }]);
      assert.ok(
        errors.some((e) => e.path === "$.steps[0].workflow.version"),
        String(version),
      );
    }
  });

  it("accepts a workflow that is not registered (checked when the step starts) and one starting itself", () => {
    const r = compileWorkflow({
      name: "recursive",
      version: 1,
      steps: [
        { id: "again", workflow: { name: "recursive" } },
        { id: "other", workflow: { name: "not-yet" } },
      ],
    });
    assert.ok(r.ok);
  });
});
