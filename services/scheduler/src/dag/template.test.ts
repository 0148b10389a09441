import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RenderError } from "./errors.js";
import type { EvalScope, StepView } from "./expr.js";
import { compileTemplate, renderTemplate, templatePaths } from "./template.js";

function scope(input: unknown, steps: Record<string, StepView> = {}): EvalScope {
  return {
    input,
    run: { id: "run-9", workflow: "billing", version: 2 },
    step: undefined,
    stepView: (id) => (Object.hasOwn(steps, id) ? steps[id] : undefined),
  };
}

function render(value: unknown, input: unknown = {}, steps: Record<string, StepView> = {}): unknown {
  const { template, errors } = compileTemplate(value);
  assert.deepEqual(errors, []);
  return renderTemplate(template, scope(input, steps));
}

describe("templates", () => {
  const input = { amount: 12.5, items: [{ sku: "a" }], flag: false, nothing: null, name: "ada" };

  it("keep the JSON type of a value when the string is exactly one {{ }}", () => {
    assert.equal(render("{{ input.amount }}", input), 12.5);
    assert.deepEqual(render("{{input.items}}", input), [{ sku: "a" }]);
    assert.equal(render("{{ input.flag }}", input), false);
    assert.equal(render("{{ input.nothing }}", input), null);
    assert.equal(render("{{ input.amount * 2 }}", input), 25);
  });

  it("splice values into text, objects as JSON", () => {
    assert.equal(render("total: {{ input.amount }} EUR", input), "total: 12.5 EUR");
    assert.equal(render("{{ input.name }}/{{ input.amount }}", input), "ada/12.5");
    assert.equal(render("items={{ input.items }}", input), 'items=[{"sku":"a"}]');
    assert.equal(render(" {{ input.flag }}", input), " false", "surrounding text makes it a string");
    assert.equal(render("v={{ input.nothing }}", input), "v=null");
  });

  it("apply recursively through objects and arrays, leaving keys alone", () => {
    const out = render(
      {
        "{{ keys }}": "stay",
        body: { total: "{{ input.amount }}", tags: ["x", "{{ input.name }}", 3] },
        run: "{{ run.id }}@{{ run.version }}",
      },
      input,
    );
    assert.deepEqual(out, {
      "{{ keys }}": "stay",
      body: { total: 12.5, tags: ["x", "ada", 3] },
      run: "run-9@2",
    });
  });

  it("find the closing braces with the expression scanner, so strings may contain }}", () => {
    assert.equal(render("{{ '}}' + '{{' }}"), "}}{{");
    assert.equal(render("a }} b"), "a }} b", "a stray }} is text");
  });

  it("collapse values without templates into one literal", () => {
    const value = { a: [1, { b: "plain" }] };
    const { template } = compileTemplate(value);
    assert.equal(template.kind, "literal");
  });

  it("report syntax errors with the JSON path of the string and the position", () => {
    const { errors } = compileTemplate(
      { ok: "{{ input.a }}", bad: ["x", "id={{ input.a + }}"], open: "{{ input.a" },
      "$.steps[0].input",
    );
    assert.deepEqual(
      errors.map((e) => e.path),
      ["$.steps[0].input.bad[1]", "$.steps[0].input.open"],
    );
    assert.match(errors[0]?.message ?? "", /expected a value but found "}}" at position 16/);
    assert.match(errors[1]?.message ?? "", /missing "}}"/);
  });

  it("fail rendering with a RenderError naming where and what did not resolve", () => {
    const { template } = compileTemplate({ body: { total: "{{ input.total }}" } });
    try {
      renderTemplate(template, scope(input), "$.steps[3].input");
      assert.fail("expected a RenderError");
    } catch (error) {
      assert.ok(error instanceof RenderError);
      assert.equal(error.code, "TEMPLATE_ERROR");
      assert.equal(error.at, "$.steps[3].input.body.total");
      assert.equal(error.ref, "input.total");
      assert.match(error.message, /input has no field "total"/);
    }
  });

  it("render a skipped step's output as null", () => {
    assert.deepEqual(
      render({ v: "{{ steps.a.output.x }}", s: "{{ steps.a.status }}" }, {}, { a: { status: "skipped" } }),
      {
        v: null,
        s: "skipped",
      },
    );
  });

  it("keep a __proto__ key as data instead of setting the prototype", () => {
    const value: unknown = JSON.parse('{"__proto__": {"polluted": "{{ input.name }}"}}');
    const out = render(value, input) as Record<string, unknown>;
    assert.ok(Object.hasOwn(out, "__proto__"));
    assert.equal(Object.getPrototypeOf(out), Object.prototype);
    assert.equal((out as { polluted?: unknown }).polluted, undefined);
  });

  it("list referenced paths with their location", () => {
    const { template } = compileTemplate({ a: ["{{ steps.x.output }}", "n={{ input.n }}"] }, "$.output");
    assert.deepEqual(
      templatePaths(template, "$.output").map(({ at, path }) => `${at} ${path.text}`),
      ["$.output.a[0] steps.x.output", "$.output.a[1] input.n"],
    );
  });
});
