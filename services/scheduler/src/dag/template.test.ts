import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { toBinary } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { jsonToValue } from "@nexusflow/common";
import { ExpressionBudgetError, WorkBudget } from "./budget.js";
import { InputTooLargeError, isDagError, RenderError } from "./errors.js";
import { evaluateRun } from "./evaluate.js";
import type { EvalScope, StepView } from "./expr.js";
import { MAX_JOINED_CHARS } from "./strings.js";
import { compileTemplate, MAX_TASK_INPUT_BYTES, renderTemplate, templatePaths } from "./template.js";
import type { Template } from "./template.js";
import { compileWorkflow } from "./validate.js";

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
/** The RenderError of rendering `template`, which must fail. */
function renderError(template: Template, input: unknown, path = "$", budget?: WorkBudget): RenderError {
  try {
    renderTemplate(template, scope(input), path, budget);
  } catch (error) {
    assert.ok(error instanceof RenderError, `expected a RenderError, got ${String(error)}`);
    assert.ok(isDagError(error, "TEMPLATE_ERROR"));
    return error;
  }
  assert.fail("expected the template not to render");
}

describe("template limits", () => {
  const big = Array.from({ length: 1_000_000 }, (_, i) => i);

  it("spend one work budget for the whole template, failing at the string that exceeds it", () => {
    const { template } = compileTemplate(
      Object.fromEntries(["a", "b", "c", "d", "e", "f"].map((k) => [k, "{{ input.a == input.b }}"])),
    );
    // Each string alone is ordinary (1 Mi units of a 4 Mi budget); the fifth is one too many.
    const error = renderError(template, { a: big, b: [...big] }, "$.steps[2].input");
    assert.equal(error.at, "$.steps[2].input.e");
    assert.ok(error.cause instanceof ExpressionBudgetError);
    assert.match(
      error.message,
      /^\$\.steps\[2\]\.input\.e: "==" exceeds the expression work budget of 4194304 units/,
    );
    const { template: once } = compileTemplate({ a: "{{ input.a == input.b }}" });
    assert.deepEqual(renderTemplate(once, scope({ a: big, b: [...big] })), { a: true });
  });

  it("charge values spliced into text as JSON by their length", () => {
    const input = { a: Array.from({ length: 1000 }, () => 12345) }; // 6001 characters of JSON
    const { template } = compileTemplate(["a={{ input.a }}", "b={{ input.a }}", "c={{ input.a }}"]);
    const budget = new WorkBudget(1000);
    const error = renderError(template, input, "$", budget);
    assert.equal(error.at, "$[2]");
    assert.match(
      error.message,
      /rendering \{\{ \}\} as text exceeds the expression work budget of 1000 units/,
    );
    assert.equal(budget.used, 1000);
  });

  it(`cap the text of the whole template at ${MAX_JOINED_CHARS} characters`, () => {
    const s = "x".repeat(9 * 1024 * 1024);
    const two = compileTemplate({ a: "<{{ input.s }}>", b: "<{{ input.s }}>" }).template;
    // Each string is within the cap; together they are not (a definition of many such strings
    // would otherwise make that many copies of a large input).
    const error = renderError(two, { s }, "$.output");
    assert.equal(error.at, "$.output.b");
    assert.match(
      error.message,
      /the template's text would be more than 16777216 characters \(18874371 so far\)/,
    );
    const one = compileTemplate({ a: "{{ input.s }}{{ input.s }}" }).template;
    assert.equal(renderError(one, { s }).at, "$.a");
    const json = compileTemplate("v={{ input.a }}{{ input.a }}{{ input.a }}").template;
    assert.match(renderError(json, { a: big }).message, /more than 16777216 characters/);
    // Right at the cap, and values kept as they are (not made into text), render.
    const full = compileTemplate(["{{ input.s }}-{{ input.t }}", "{{ input.s }}", "{{ input.s }}"]).template;
    const t = "y".repeat(MAX_JOINED_CHARS - s.length - 1);
    const out = renderTemplate(full, scope({ s, t })) as string[];
    assert.equal(out[0]?.length, MAX_JOINED_CHARS);
    assert.equal(out[1], s);
  });

  it("make a run's step fail with the error users see for bad expressions, not the scheduler", () => {
    const compiled = compileWorkflow({
      name: "flow",
      version: 1,
      steps: [
        { id: "w", type: "x", when: Array.from({ length: 20 }, () => "input.a == input.b").join(" && ") },
        {
          id: "t",
          type: "x",
          input: { v: Array.from({ length: 20 }, () => "{{ input.a != input.b }}").join("") },
        },
        { id: "ok", type: "x", when: "input.a == input.b", input: { v: "{{ len(input.a) }}" } },
      ],
    });
    if (!compiled.ok) assert.fail(compiled.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
    const run = { id: "run-1", workflow: "flow", version: 1 };
    const evaluation = evaluateRun(compiled.workflow, { a: big, b: [...big] }, new Map(), run);
    assert.deepEqual(
      evaluation.fail.map((f) => [f.stepId, f.error.type]),
      [
        ["w", "EXPRESSION_ERROR"],
        ["t", "TEMPLATE_ERROR"],
      ],
    );
    assert.match(evaluation.fail[0]?.error.message ?? "", /^when: "==" exceeds the expression work budget/);
    assert.match(
      evaluation.fail[1]?.error.message ?? "",
      /^\$\.steps\[1\]\.input\.v: "!=" exceeds the expression work budget/,
    );
    assert.deepEqual(evaluation.ready, [{ stepId: "ok", input: { v: 1_000_000 } }]);
  });

  it("refuse a lone surrogate escape at registration, naming the field and the position", () => {
    // As JSON text (RegisterWorkflow's spec_json): "\\uD800" there is the expression's own escape.
    const compiled = compileWorkflow(
      String.raw`{"name": "flow", "version": 1, "steps": [
        {"id": "a", "type": "x", "when": "input.k == '\\uD800'", "input": {"q": "id={{ '\\uDE00' }}"}},
        {"id": "b", "type": "x", "input": {"q": "{{ '\\uD83D\\uDE00' }}"}}]}`,
    );
    assert.equal(compiled.ok, false);
    assert.deepEqual(
      (compiled.ok ? [] : compiled.errors).map((e) => `${e.path} ${e.message}`),
      [
        String.raw`$.steps[0].when invalid expression: lone surrogate "\uD800": a high surrogate escape must be followed by a low one (\uDC00-\uDFFF), as in "\uD83D\uDE00" at position 12`,
        String.raw`$.steps[0].input.q invalid template: lone surrogate "\uDE00": a low surrogate escape must follow a high one (\uD800-\uDBFF), as in "\uD83D\uDE00" at position 7`,
      ],
    );
    // "\ud800" in the JSON text is a lone surrogate written as itself: refused in any string of a
    // definition (validate.test.ts), a template's as any other, before its expressions are parsed.
    const raw = compileWorkflow(
      String.raw`{"name": "flow", "version": 1, "steps": [{"id": "b", "type": "x", "input": {"r": "{{ '\ud800' }}"}}]}`,
    );
    assert.deepEqual(
      (raw.ok ? [] : raw.errors).map((e) => e.path),
      ["$.steps[0].input.r"],
    );
    assert.match(
      raw.ok ? "" : (raw.errors[0]?.message ?? ""),
      /^a string holds a lone surrogate U\+D800 at position 4:/,
    );
  });
});

describe("template size bound (maxBytes, a task input's)", () => {
  /** Bytes of `json` as a google.protobuf.Value, as a lease carries it (core/leasing.ts measures that). */
  const encoded = (json: unknown): number => toBinary(ValueSchema, jsonToValue(json)).length;

  it("never refuses what a lease would carry: it counts a lower bound of the protobuf size", () => {
    const input = {
      s: "héllo 😀 ключ",
      n: -1.5,
      arr: [[], {}, "", 0, false, null, { "": "" }, [[["deep"]]], "x".repeat(300)],
      o: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`key ${i} é`, i % 2 === 0 ? i : `v${i}`])),
    };
    const shapes: unknown[] = [
      "{{ input }}",
      "{{ input.s }}",
      "{{ input.n }}",
      "text {{ input.arr }} and {{ input.s }}",
      { a: ["x{{ input.s }}", "{{ input.n }}", true, null, 7], "ключ 😀": "{{ input }}", e: {}, f: [] },
      ["{{ input.o }}", "{{ input.o }}", { lit: [1, "two", { three: null }] }, "{{ input.arr }}"],
      { only: "literal", list: [1, 2, 3] },
    ];
    for (const shape of shapes) {
      const { template } = compileTemplate(shape);
      const rendered = renderTemplate(template, scope(input));
      const exact = encoded(rendered);
      // At the exact size it renders; a bound well below it stops it.
      assert.deepEqual(renderTemplate(template, scope(input), "$", new WorkBudget(), exact), rendered);
      assert.throws(
        () => renderTemplate(template, scope(input), "$", new WorkBudget(), Math.floor(exact / 4)),
        (e: unknown) => e instanceof InputTooLargeError && isDagError(e, "INPUT_TOO_LARGE"),
        JSON.stringify(shape),
      );
    }
  });

  it("stops at the value that passes the bound, before rendering the rest", () => {
    const output = { rows: Array.from({ length: 1000 }, (_, i) => `row ${i}`) };
    const { template } = compileTemplate(
      Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`k${i}`, "{{ steps.a.output }}"])),
    );
    let reads = 0;
    const counting: EvalScope = {
      ...scope({}),
      stepView: (id) => {
        reads++;
        return id === "a" ? { status: "succeeded", output } : undefined;
      },
    };
    const budget = new WorkBudget();
    assert.throws(
      () => renderTemplate(template, counting, "$.steps[1].input", budget, 10 * encoded(output)),
      (e: unknown) =>
        e instanceof InputTooLargeError &&
        e.at === "$.steps[1].input.k9" &&
        /^\$\.steps\[1\]\.input\.k9: the rendered input would be larger than the \d+ bytes as protobuf/.test(
          e.message,
        ),
    );
    // Ten copies and their keys: the tenth passes the bound; the other 9,990 are never evaluated.
    assert.equal(reads, 10);
    assert.equal(budget.used, 1001, "the output was walked once");
    // Measuring is charged: out of budget, it fails where the value is, as its expression would.
    const { template: one } = compileTemplate({ v: "{{ steps.a.output }}" });
    assert.throws(
      () => renderTemplate(one, counting, "$.steps[1].input", new WorkBudget(100), MAX_TASK_INPUT_BYTES),
      (e: unknown) =>
        e instanceof RenderError &&
        isDagError(e, "TEMPLATE_ERROR") &&
        e.message.startsWith(
          "$.steps[1].input.v: measuring the rendered input exceeds the expression work budget of 100 units",
        ),
    );
    // Without a bound (the output mapping), as before.
    const unbounded = renderTemplate(template, {
      ...counting,
      stepView: () => ({ status: "succeeded", output }),
    });
    assert.equal(Object.keys(unbounded as object).length, 10_000);
  });
});
