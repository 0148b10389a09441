/**
 * The value of a key expression (a concurrency limit's, a rate limit's, a fairness level's) in a
 * scope: a string, or a finite number as its string. Anything else, or an expression that cannot
 * be evaluated, is the caller's error, made by `fail` with a message that names the key.
 */
import { evaluateExpression, EvaluationError, type EvalScope, type Expr } from "../dag/index.js";

/** What the value of a JSON-like value is called in messages ("null", "an array", "a boolean"). */
function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  return `a ${typeof value}`;
}

/**
 * Evaluates `expression` in `scope`. `what` names the key in messages (`concurrency key "input.c"
 * ($.steps[0].concurrency[0].key)`), `noun` the kind of key (`a concurrency key`).
 */
export function keyString(
  expression: Expr,
  scope: EvalScope,
  what: string,
  noun: string,
  fail: (message: string, options?: ErrorOptions) => Error,
): string {
  let value: unknown;
  try {
    value = evaluateExpression(expression, scope);
  } catch (error) {
    // A RangeError is V8's (a string or stack too large for it): the key's failure, as in
    // dag/evaluate.ts, never an exception out of the scheduler's turn.
    if (!(error instanceof EvaluationError || error instanceof RangeError)) throw error;
    throw fail(`${what}: ${error.message}`, { cause: error });
  }
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  throw fail(`${what} is ${kindOf(value)}; ${noun} must be a string or a number`);
}
