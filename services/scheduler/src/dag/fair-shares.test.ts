/** `fairness` in the definition language: what compiles, and each mistake named by its path. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { compileWorkflow } from "./validate.js";

const steps = [{ id: "s", type: "t" }];

function errors(fairness: unknown): string[] {
  const r = compileWorkflow({ name: "fair", version: 1, steps, fairness });
  return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
}

describe("fairness in a definition", () => {
  it("compiles two levels with their defaults and overrides", () => {
    const r = compileWorkflow({
      name: "fair",
      version: 1,
      steps,
      fairness: [{ key: "input.tenant", weights: { acme: 4 }, max: 50 }, { key: "input.customer" }],
    });
    assert.ok(r.ok);
    const [tenant, key] = r.workflow.fairness;
    assert.equal(tenant?.expression, "input.tenant");
    assert.deepEqual([tenant?.weight, tenant?.min, tenant?.max, tenant?.weights.get("acme")], [1, 0, 50, 4]);
    assert.deepEqual([key?.level, key?.weight, key?.max], [1, 1, 0]);
    const plain = compileWorkflow({ name: "plain", version: 1, steps });
    assert.ok(plain.ok);
    assert.deepEqual(plain.workflow.fairness, []);
  });

  it("names the field at fault", () => {
    assert.match(errors({ key: "input.t" }).join("\n"), /^\$\.fairness: fairness must be an array/);
    assert.match(errors([{}, {}, {}]).join("\n"), /\$\.fairness: fairness has 3 levels; the most is 2/);
    assert.match(errors([{}]).join("\n"), /\$\.fairness\[0\]\.key: key is required/);
    assert.match(
      errors([{ key: "steps.a.output" }]).join("\n"),
      /\$\.fairness\[0\]\.key: steps\.a\.output: a fairness key is evaluated when the run starts/,
    );
    assert.match(
      errors([{ key: "input.t", wieght: 2 }]).join("\n"),
      /\$\.fairness\[0\]\.wieght: unknown field "wieght".*did you mean "weight"/,
    );
    assert.match(
      errors([{ key: "input.t", weight: 0 }]).join("\n"),
      /\$\.fairness\[0\]\.weight: weight must be an integer from 1 to 1000/,
    );
    assert.match(
      errors([{ key: "input.t", min: 5, max: 2 }]).join("\n"),
      /\$\.fairness\[0\]\.max: max \(2\) must be 0 \(none\) or at least min \(5\)/,
    );
    assert.match(
      errors([{ key: "input.t", max: 10_001 }]).join("\n"),
      /\$\.fairness\[0\]\.max: max must be an integer from 0 to 10000/,
    );
    assert.match(
      errors([{ key: "input.t", weights: [] }]).join("\n"),
      /\$\.fairness\[0\]\.weights: weights must be an object/,
    );
    assert.match(
      errors([{ key: "input.t" }, { key: "input.c", weights: { big: 1001 } }]).join("\n"),
      /\$\.fairness\[1\]\.weights\.big: a weight must be an integer from 1 to 1000/,
    );
    assert.match(errors([{ key: "input.(" }]).join("\n"), /\$\.fairness\[0\]\.key: invalid expression/);
  });
});
