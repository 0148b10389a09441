import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DEFAULT_EXPRESSION_BUDGET, ExpressionBudgetError, WorkBudget } from "./budget.js";
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

  it("refuse a lone surrogate, escaped or not, at its position (no UTF-8 text can hold one)", () => {
    const high = syntaxError("input.a == '\\uD800'");
    assert.equal(high.position, 12);
    assert.match(
      high.message,
      /lone surrogate "\\uD800": a high surrogate escape must be followed by a low one/,
    );
    assert.equal(high.code, "EXPRESSION_SYNTAX");
    const low = syntaxError("'ab\\udc00'");
    assert.equal(low.position, 3);
    assert.match(low.message, /lone surrogate "\\uDC00": a low surrogate escape must follow a high one/);
    assert.equal(syntaxError("'\\uD83D\\u0041'").position, 1, "a high escape then a non-surrogate");
    assert.equal(syntaxError("'\\uD83D\\uD83D\\uDE00'").position, 1, "two high escapes");
    assert.equal(syntaxError("'x\uD800'").position, 2, "written as the character itself");
    assert.match(syntaxError("'x\uDFFF'").message, /lone surrogate U\+DFFF in string at position 2$/);
    // Pairs are characters like any other, escaped or not.
    assert.equal(run("'\\uD83D\\uDE00'"), "\u{1F600}");
    assert.equal(run("'\\ud83d\\ude00!' == '\u{1F600}!'"), true);
    assert.equal(run("len('\u{1F600}')"), 1);
    assert.equal(run("'\\uFFFD\\uE000'"), "\uFFFD\uE000", "neighbours of the surrogate range");
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

/** The error of evaluating `text` within `budget` (a default one when omitted). */
function budgetError(text: string, input: unknown, budget?: WorkBudget): ExpressionBudgetError {
  try {
    evaluateExpression(parseExpression(text), scope(input), budget);
  } catch (error) {
    assert.ok(
      error instanceof ExpressionBudgetError,
      `expected a budget error for ${text}, got ${String(error)}`,
    );
    return error;
  }
  assert.fail(`expected ${text} to run out of budget`);
}

describe("expression work budget", () => {
  const big = Array.from({ length: 1_000_000 }, (_, i) => i);
  const bigInput = { a: big, b: [...big] };

  it("stops 50 comparisons of a 1,000,000-element array (3 s of the scheduler's thread) with a typed error", () => {
    const text = Array.from({ length: 50 }, () => "input.a == input.b").join(" && ");
    const error = budgetError(text, bigInput);
    assert.ok(error instanceof EvaluationError && isDagError(error, "EXPRESSION_ERROR"));
    assert.equal(error.name, "ExpressionBudgetError");
    assert.equal(error.budget, DEFAULT_EXPRESSION_BUDGET);
    assert.match(
      error.message,
      /^"==" exceeds the expression work budget of 4194304 units \(about one per array element/,
    );
    // The same comparison a few times is ordinary work.
    assert.equal(run("input.a == input.b && input.a != [] && input.b == input.a", bigInput), true);
    assert.equal(run("999999 in input.a", bigInput), true);
  });

  it("is shared by the whole evaluation, and spent by what is visited, not by what is skipped", () => {
    const budget = new WorkBudget(100);
    const input = { a: [1, 2, 3], b: [1, 2, 3], o: { x: "y".repeat(160) }, p: { x: "y".repeat(160) } };
    assert.equal(evaluateExpression(parseExpression("input.a == input.b"), scope(input), budget), true);
    assert.equal(budget.used, 3, "three elements");
    evaluateExpression(parseExpression("input.o == input.p"), scope(input), budget);
    assert.equal(budget.used, 3 + 2 + 10, "a key of each object, then 160 characters");
    evaluateExpression(parseExpression("input.a == input.a && 1 < 2 && 'a' == 'a'"), scope(input), budget);
    assert.equal(budget.used, 15, "the same array, numbers and short strings cost nothing");
    evaluateExpression(parseExpression("false && input.a == input.b"), scope(input), budget);
    assert.equal(budget.used, 15, "the right side of a short-circuit is not evaluated");
  });

  it("covers every operator and function that walks a value, however deep the value is", () => {
    const n = 10_000;
    let deepA: unknown = 0;
    let deepB: unknown = 0;
    for (let i = 0; i < n; i++) {
      deepA = [deepA];
      deepB = [deepB];
    }
    const input = {
      a: Array.from({ length: n }, (_, i) => ({ v: i })),
      b: Array.from({ length: n }, (_, i) => ({ v: i })),
      o: Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i])),
      p: Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i])),
      s: "x".repeat(n * 16),
      t: "x".repeat(n * 16),
      deepA,
      deepB,
    };
    const cases: [string, string][] = [
      ["input.a == input.b", '"=="'],
      ["input.a != input.b", '"!="'],
      ["input.o == input.p", '"=="'],
      ["input.deepA == input.deepB", '"=="'],
      ["[[input.deepA]] == [[input.deepB]]", '"=="'],
      ["-1 in input.a", '"in"'],
      ["input.b[9999] in input.a", '"in"'],
      ["'z' in input.s", '"in"'],
      ["contains(input.a, 1)", "contains()"],
      ["contains(input.s, 'z')", "contains()"],
      ["len(input.s)", "len()"],
      ["len(input.o)", "len()"],
      ["lower(input.s)", "lower()"],
      ["upper(input.s)", "upper()"],
      ["startsWith(input.s, input.t)", "startsWith()"],
      ["input.s < input.t", '"<"'],
      ["input.s >= input.t", '">="'],
    ];
    for (const [once, what] of cases) {
      // What one costs grows with the size of the value (n elements, keys, levels, 16n characters)...
      const probe = new WorkBudget(1e9);
      evaluateExpression(parseExpression(once), scope(input), probe);
      assert.ok(probe.used >= n, `${once} costs ${probe.used} units`);
      // ...and a budget that fits it twice stops three of them in one expression.
      const limit = 2 * probe.used;
      const text = `[${once}, ${once}, ${once}]`;
      const error = budgetError(text, input, new WorkBudget(limit));
      assert.ok(
        error.message.startsWith(`${what} exceeds the expression work budget of ${limit} units`),
        `${text}: ${error.message}`,
      );
    }
  });

  it("charges the keys of a large object 4 units each, and lists them once per evaluation", () => {
    const small = Object.fromEntries(Array.from({ length: 1024 }, (_, i) => [`k${i}`, i]));
    const large = Object.fromEntries(Array.from({ length: 1025 }, (_, i) => [`k${i}`, i]));
    const budget = new WorkBudget(1e9);
    evaluateExpression(parseExpression("len(input.s) + len(input.l)"), scope({ s: small, l: large }), budget);
    assert.equal(budget.used, 1024 + 4 * 1025);
    // V8 lists a large object's keys anew, slowly, on every Object.keys: once is enough.
    let listed = 0;
    const counted = new Proxy(large, {
      ownKeys: (target) => {
        listed++;
        return Reflect.ownKeys(target);
      },
    });
    const text =
      "len(input.o) + len(input.o) + len(input.o) > 0 && input.o == input.o2 && input.o2 == input.o";
    assert.equal(run(text, { o: counted, o2: { ...large } }), true);
    assert.equal(listed, 1);
  });

  it("stops nesting deeper than the call stack by units, not by a crash", () => {
    let a: unknown = 0;
    let b: unknown = 0;
    for (let i = 0; i < 1_000_000; i++) {
      a = [a];
      b = [b];
    }
    const text = Array.from({ length: 10 }, () => "input.a == input.b").join(" && ");
    assert.match(budgetError(text, { a, b }).message, /^"==" exceeds/);
    assert.equal(run("input.a == input.b", { a, b }), true);
  });

  it("refuses a budget that is not a positive integer", () => {
    for (const limit of [0, -1, 1.5, Number.NaN, Infinity])
      assert.throws(() => new WorkBudget(limit), TypeError);
  });
});
