/**
 * The operators and built-in functions of the expression language (expr.ts parses and walks the
 * tree). Each one that looks at a whole value charges what it visits to the evaluation's
 * {@link WorkBudget} (budget.ts) before or while it works, never only afterwards.
 */
import { equalWithin } from "./budget.js";
import type { WorkBudget } from "./budget.js";
import { EvaluationError } from "./errors.js";
import { isPlainObject, jsonTypeOf } from "./json.js";
import type { JsonValue } from "./json.js";
import { codePoints, joined } from "./strings.js";

/** Built-in pure functions. */
export type FunctionName = "len" | "lower" | "upper" | "contains" | "startsWith" | "exists";
/** Binary operators, including the short-circuit ones. */
export type BinaryOp =
  "||" | "&&" | "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "+" | "-" | "*" | "/" | "%";

/** Throws the {@link EvaluationError} of a failed evaluation, optionally naming the unresolved path. */
export function fail(message: string, ref?: string): never {
  throw new EvaluationError(message, ref);
}

function finite(value: number, op: string): number {
  if (!Number.isFinite(value)) fail(`${op} produced a number that is not finite`);
  return value;
}

/** How a value is named in messages ("array", "string", ...). */
export function describeValue(value: JsonValue): string {
  return jsonTypeOf(value);
}

function contains(haystack: JsonValue, needle: JsonValue, what: string, budget: WorkBudget): boolean {
  if (Array.isArray(haystack)) {
    for (const item of haystack as readonly JsonValue[]) {
      // One unit per element looked at, on top of what comparing it with the needle costs.
      budget.charge(1, what);
      if (equalWithin(item, needle, budget, what)) return true;
    }
    return false;
  }
  if (typeof haystack === "string") {
    if (typeof needle !== "string")
      fail(`${what}: a substring test needs a string, got ${describeValue(needle)}`);
    budget.chargeChars(haystack.length, what);
    return haystack.includes(needle);
  }
  if (isPlainObject(haystack)) {
    if (typeof needle !== "string") fail(`${what}: a key test needs a string, got ${describeValue(needle)}`);
    return Object.hasOwn(haystack, needle);
  }
  return fail(`${what} needs an array, object or string on the right, got ${describeValue(haystack)}`);
}

function compare<T extends number | string>(op: "<" | "<=" | ">" | ">=", l: T, r: T): boolean {
  return op === "<" ? l < r : op === "<=" ? l <= r : op === ">" ? l > r : l >= r;
}

const OP_NAMES: Readonly<Record<BinaryOp, string>> = {
  "||": '"||"',
  "&&": '"&&"',
  "==": '"=="',
  "!=": '"!="',
  "<": '"<"',
  "<=": '"<="',
  ">": '">"',
  ">=": '">="',
  in: '"in"',
  "+": '"+"',
  "-": '"-"',
  "*": '"*"',
  "/": '"/"',
  "%": '"%"',
};

/** Applies a binary operator other than `&&` / `||` (which expr.ts short-circuits). */
export function binary(op: BinaryOp, left: JsonValue, right: JsonValue, budget: WorkBudget): JsonValue {
  switch (op) {
    case "==":
      return equalWithin(left, right, budget, OP_NAMES[op]);
    case "!=":
      return !equalWithin(left, right, budget, OP_NAMES[op]);
    case "<":
    case "<=":
    case ">":
    case ">=": {
      if (typeof left === "number" && typeof right === "number") return compare(op, left, right);
      if (typeof left === "string" && typeof right === "string") {
        budget.chargeChars(Math.min(left.length, right.length), OP_NAMES[op]);
        return compare(op, left, right);
      }
      return fail(
        `"${op}" compares two numbers or two strings, got ${describeValue(left)} and ${describeValue(right)}`,
      );
    }
    case "in":
      return contains(right, left, OP_NAMES[op], budget);
    case "+":
      if (typeof left === "number" && typeof right === "number") return finite(left + right, "+");
      // Joining is O(1) (V8 makes a rope); whatever later reads the result is charged for it.
      if (typeof left === "string" && typeof right === "string") return joined(left, right);
      return fail(
        `"+" adds two numbers or joins two strings, got ${describeValue(left)} and ${describeValue(right)}`,
      );
    case "-":
    case "*":
    case "/":
    case "%": {
      if (typeof left !== "number" || typeof right !== "number") {
        fail(`"${op}" needs two numbers, got ${describeValue(left)} and ${describeValue(right)}`);
      }
      if ((op === "/" || op === "%") && right === 0) fail(`division by zero in "${op}"`);
      const result =
        op === "-" ? left - right : op === "*" ? left * right : op === "/" ? left / right : left % right;
      return finite(result, op);
    }
    case "&&":
    case "||":
      // Short-circuit operators are handled before both sides are evaluated.
      return fail(`internal: ${op} reached binary()`);
  }
}

/** Calls a built-in function other than `exists()` (which expr.ts answers from the path itself). */
export function call(fn: FunctionName, args: readonly JsonValue[], budget: WorkBudget): JsonValue {
  const [a = null, b = null] = args;
  switch (fn) {
    case "len":
      if (typeof a === "string") {
        budget.chargeChars(a.length, "len()");
        return codePoints(a);
      }
      if (Array.isArray(a)) return a.length;
      if (isPlainObject(a)) return budget.keysOf(a, "len()").length;
      return fail(`len() needs a string, array or object, got ${describeValue(a)}`);
    case "lower":
    case "upper":
      if (typeof a !== "string") fail(`${fn}() needs a string, got ${describeValue(a)}`);
      budget.chargeChars(a.length, fn === "lower" ? "lower()" : "upper()");
      return fn === "lower" ? a.toLowerCase() : a.toUpperCase();
    case "contains":
      return contains(a, b, "contains()", budget);
    case "startsWith":
      if (typeof a !== "string" || typeof b !== "string") {
        fail(`startsWith() needs two strings, got ${describeValue(a)} and ${describeValue(b)}`);
      }
      budget.chargeChars(Math.min(a.length, b.length), "startsWith()");
      return a.startsWith(b);
    case "exists":
      // Handled in evaluate(): it must not fail on the path it tests.
      return fail("internal: exists() reached call()");
  }
}
