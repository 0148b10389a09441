import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EvaluationError, ExpressionSyntaxError, isDagError } from "./errors.js";
import { evaluateExpression, expressionPaths, parseExpression, truthy } from "./expr.js";
import type { EvalScope, StepView } from "./expr.js";

function scope(input: unknown, steps: Record<string, StepView> = {}): EvalScope {
  return {
    input,
    run: { id: "run-1", workflow: "orders", version: 3 },
    step: undefined,
    stepView: (id) => (Object.hasOwn(steps, id) ? steps[id] : undefined),
  };
}

function run(text: string, input: unknown = {}, steps: Record<string, StepView> = {}): unknown {
  return evaluateExpression(parseExpression(text), scope(input, steps));
}

function syntaxError(text: string): ExpressionSyntaxError {
  try {
    parseExpression(text);
  } catch (error) {
    assert.ok(error instanceof ExpressionSyntaxError, `expected a syntax error for ${text}`);
    return error;
  }
  assert.fail(`expected ${JSON.stringify(text)} not to parse`);
}

function evalError(text: string, input: unknown = {}, steps: Record<string, StepView> = {}): EvaluationError {
  try {
    run(text, input, steps);
  } catch (error) {
    assert.ok(
      error instanceof EvaluationError,
      `expected an evaluation error for ${text}, got ${String(error)}`,
    );
    return error;
  }
  assert.fail(`expected ${JSON.stringify(text)} to fail`);
}

describe("expression literals and operators", () => {
  it("evaluates literals", () => {
    assert.equal(run("42"), 42);
    assert.equal(run("1.5e2"), 150);
    assert.equal(run("'it\\'s'"), "it's");
    assert.equal(run('"tab\\tnew\\nline \\u00e9"'), "tab\tnew\nline é");
    assert.equal(run("true"), true);
    assert.equal(run("null"), null);
    assert.deepEqual(run("[1, 'a', [null]]"), [1, "a", [null]]);
  });

  it("follows precedence: * over +, + over comparison, comparison over ==, && over ||", () => {
    assert.equal(run("1 + 2 * 3"), 7);
    assert.equal(run("(1 + 2) * 3"), 9);
    assert.equal(run("10 - 4 - 3"), 3, "left associative");
    assert.equal(run("7 % 4 * 2"), 6);
    assert.equal(run("1 + 1 == 2"), true);
    assert.equal(run("1 < 2 == 2 < 3"), true);
    assert.equal(run("true || false && false"), true);
    assert.equal(run("(true || false) && false"), false);
    assert.equal(run("!false && !0"), true);
    assert.equal(run("-2 * -3"), 6);
    assert.equal(run("!(1 in [1, 2])"), false);
  });

  it("compares numbers and strings, and JSON values deeply", () => {
    assert.equal(run("'abc' < 'abd'"), true);
    assert.equal(run("3 >= 3"), true);
    assert.equal(run("input.a == input.b", { a: { x: [1, 2] }, b: { x: [1, 2] } }), true);
    assert.equal(
      run("input.a != input.b", { a: { x: 1, y: 2 }, b: { y: 2, x: 1 } }),
      false,
      "key order is irrelevant",
    );
    assert.equal(run("1 == '1'"), false, "no coercion");
    assert.equal(run("null == null"), true);
  });

  it("concatenates strings with + and supports in for arrays, objects and strings", () => {
    assert.equal(run("'a' + 'b'"), "ab");
    assert.equal(run("'ship' in input.tags", { tags: ["ship", "bill"] }), true);
    assert.equal(run("'k' in input.o", { o: { k: null } }), true);
    assert.equal(run("'ell' in 'hello'"), true);
    assert.equal(run("[1] in [[1], [2]]"), true);
  });

  it("short-circuits && and || and returns the deciding operand", () => {
    assert.equal(run("input.name || 'anonymous'", { name: "" }), "anonymous");
    assert.equal(run("input.name || 'anonymous'", { name: "ada" }), "ada");
    assert.equal(run("false && input.missing.deep"), false, "the right side is not evaluated");
    assert.equal(run("exists(input.x) && input.x > 1", {}), false);
  });

  it("implements the built-in functions", () => {
    assert.equal(run("len('héllo')"), 5);
    assert.equal(run("len(input.a)", { a: [1, 2, 3] }), 3);
    assert.equal(run("len(input.o)", { o: { a: 1, b: 2 } }), 2);
    assert.equal(run("lower('AbC') + upper('x')"), "abcX");
    assert.equal(run("contains(input.a, 2)", { a: [1, 2] }), true);
    assert.equal(run("contains('abc', 'd')"), false);
    assert.equal(run("startsWith('nexusflow', 'nexus')"), true);
    assert.equal(run("exists(input.a.b)", { a: { b: 0 } }), true);
    assert.equal(run("exists(input.a.c)", { a: { b: 0 } }), false);
    assert.equal(run("exists(input.a[3])", { a: [1] }), false);
  });

  it("uses JSON truthiness: false, null, 0 and empty string are falsy", () => {
    for (const v of [false, null, 0, ""]) assert.equal(truthy(v), false);
    for (const v of [true, 1, -1, "0", "false", [], {}]) assert.equal(truthy(v), true);
  });
});

describe("expression paths", () => {
  const input = { order: { "line items": [{ sku: "A-1" }], id: 7 } };

  it('supports .name, ["quoted"] and [index]', () => {
    assert.equal(run('input.order["line items"][0].sku', input), "A-1");
    assert.equal(run("input['order'].id", input), 7);
    assert.equal(run("input", input), input);
  });

  it("reads steps.<id>.output and .status, with dashes allowed in ids", () => {
    const steps = { "fetch-user": { status: "succeeded", output: { name: "ada" } } } as const;
    assert.equal(run("steps.fetch-user.output.name", {}, steps), "ada");
    assert.equal(run('steps["fetch-user"].status', {}, steps), "succeeded");
    assert.equal(
      run("steps.fetch-user.output.name + '-' + 'x'", {}, steps),
      "ada-x",
      "only the id segment reads dashes",
    );
  });

  it("gives null for paths into a skipped step, but its real status", () => {
    const steps = { a: { status: "skipped" } } as const;
    assert.equal(run("steps.a.output.deep.path", {}, steps), null);
    assert.equal(run("steps.a.status", {}, steps), "skipped");
    assert.equal(run("exists(steps.a.output)", {}, steps), false);
  });

  it("treats a succeeded step without output as output null", () => {
    assert.equal(run("steps.a.output", {}, { a: { status: "succeeded" } }), null);
  });

  it("reads run.id, run.workflow and run.version", () => {
    assert.equal(run("run.id + ':' + run.workflow"), "run-1:orders");
    assert.equal(run("run.version"), 3);
  });

  it("fails with the path when nothing is there", () => {
    const e = evalError("input.order.amount + 1", input);
    assert.equal(e.ref, "input.order.amount");
    assert.match(e.message, /input\.order has no field "amount"/);
    assert.match(evalError('input.order["line items"][4]', input).message, /no element \[4\] \(length 1\)/);
    assert.match(evalError("input.order.id.x", input).message, /input\.order\.id is number, not an object/);
    assert.match(
      evalError("steps.a.output", {}, { a: { status: "failed" } }).message,
      /has no output \(it is failed\)/,
    );
    assert.throws(
      () => evaluateExpression(parseExpression("input.x"), scope(undefined)),
      /the run has no input/,
    );
  });

  it("lists referenced paths", () => {
    const paths = expressionPaths(parseExpression("exists(steps.a.output.x) && input.y in [steps.b.status]"));
    assert.deepEqual(
      paths.map((p) => p.text),
      ["steps.a.output.x", "input.y", "steps.b.status"],
    );
  });
});

describe("expression safety", () => {
  it("never reaches prototypes through paths", () => {
    for (const text of [
      "input.constructor",
      "input.__proto__",
      "input.toString",
      "input.hasOwnProperty",
      "input.a.constructor.name",
      "input.list.length",
      "input.s.length",
      'input["__proto__"]["polluted"]',
    ]) {
      const e = evalError(text, { a: {}, list: [1], s: "abc" });
      assert.ok(isDagError(e, "EXPRESSION_ERROR"), text);
    }
    assert.equal(run("exists(input.constructor)", {}), false);
    assert.equal(run("'constructor' in input", {}), false);
    assert.equal(run("'toString' in input", {}), false);
  });

  it("treats an own __proto__ key from JSON as plain data", () => {
    const input: unknown = JSON.parse('{"__proto__": {"x": 1}}');
    assert.equal(run("input.__proto__.x", input), 1);
    assert.equal(({} as Record<string, unknown>)["x"], undefined, "Object.prototype untouched");
  });

  it("rejects anything that looks like code", () => {
    for (const text of [
      "process.exit(1)",
      "globalThis",
      "this",
      "require('fs')",
      "eval('1')",
      "Function('x')",
      "input.a = 1",
      "`x`",
      "a => 1",
    ]) {
      syntaxError(text);
    }
  });
});

describe("expression syntax errors", () => {
  it("report the position", () => {
    assert.equal(syntaxError("1 +").position, 3);
    assert.equal(syntaxError("(1 + 2").position, 6);
    assert.equal(syntaxError("input.a = 1").position, 8);
    assert.equal(syntaxError("1 2").position, 2);
    assert.equal(syntaxError("'abc").position, 0);
    assert.equal(syntaxError("input.@").position, 6);
    assert.match(syntaxError("1 +").message, /at position 3$/);
  });

  it("explain the mistake", () => {
    assert.match(syntaxError("a == 1").message, /unknown name "a"/);
    assert.match(syntaxError("size(input)").message, /unknown function "size"/);
    assert.match(syntaxError("len(1, 2)").message, /len\(\) takes 1 argument, got 2/);
    assert.match(syntaxError("exists(1)").message, /exists\(\) takes a path/);
    assert.match(syntaxError("true & false").message, /use "&&"/);
    assert.match(syntaxError("steps.a").message, /expected \.output or \.status/);
    assert.match(syntaxError("steps.a.status.x").message, /has no fields/);
    assert.match(syntaxError("run.name").message, /run\.id, run\.workflow or run\.version/);
    assert.match(syntaxError("step.foo").message, /step\.input or step\.output/);
    assert.match(syntaxError("input[-1]").message, /index/);
    assert.match(syntaxError("'\\q'").message, /invalid escape/);
    assert.match(syntaxError("'a\\u0000'").message, /NUL character/);
  });

  it("bound length and nesting depth", () => {
    assert.match(syntaxError("1+".repeat(2100) + "1").message, /longer than 4096/);
    assert.match(syntaxError("(".repeat(65) + "1" + ")".repeat(65)).message, /nested deeper than 64/);
    assert.match(syntaxError("!".repeat(100) + "true").message, /nested deeper than 64/);
    assert.equal(run("(".repeat(60) + "1" + ")".repeat(60)), 1);
  });
});

describe("expression runtime errors", () => {
  it("reject mismatched types instead of coercing", () => {
    assert.match(evalError("1 + 'a'").message, /adds two numbers or joins two strings/);
    assert.match(evalError("'a' < 1").message, /compares two numbers or two strings/);
    assert.match(evalError("'a' * 2").message, /needs two numbers/);
    assert.match(evalError("-'a'").message, /needs a number/);
    assert.match(evalError("1 / 0").message, /division by zero/);
    assert.match(evalError("5 % 0").message, /division by zero/);
    assert.match(evalError("1e308 * 10").message, /not finite/);
    assert.match(evalError("1 in 'abc'").message, /needs a string/);
    assert.match(evalError("1 in 5").message, /array, object or string/);
    assert.match(evalError("len(5)").message, /len\(\) needs/);
    assert.match(evalError("upper(1)").message, /upper\(\) needs a string/);
  });
});

describe("expression cost of hostile strings", () => {
  it("len() counts code points without making an array of them", () => {
    assert.equal(run("len(input.s)", { s: "a😀b" }), 3);
    // A lone surrogate counts as one, as the spread did.
    assert.equal(run("len(input.s)", { s: "\uD800x\uDC00" }), 3);
    assert.equal(run("len(input.s)", { s: "" }), 0);
  });

  it("refuses a string joined past 16 Mi characters (one evaluation joined 100 MB, then ran out of memory)", () => {
    const text = `len(${Array.from({ length: 100 }, () => "input.a").join(" + ")}) > 0`;
    const error = evalError(text, { a: "x".repeat(1_000_000) });
    assert.match(error.message, /"\+" would make a string of \d+ characters, more than 16777216/);
    // Just within: joined.
    assert.equal(run("len(input.a + input.a)", { a: "x".repeat(8 * 1024 * 1024) }), 16 * 1024 * 1024);
  });
});
