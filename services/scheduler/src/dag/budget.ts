/**
 * The work budget of one expression evaluation (expr.ts) or one template rendering (template.ts).
 * Expressions run on the scheduler's only event-loop thread over run inputs and step outputs of
 * megabytes, and one 4096-character expression can repeat `input.a == input.b` hundreds of times:
 * every operator or function that walks a whole value (`==`, `!=`, `in`, `contains()`, `len()`,
 * string comparisons, `lower()`, `upper()`, `startsWith()`, a template's text) charges what it
 * visits to one budget shared by the whole evaluation, which fails with
 * {@link ExpressionBudgetError} once that is spent, so a definition cannot stall the scheduler.
 */
import { EvaluationError } from "./errors.js";
import { isPlainObject } from "./json.js";

/**
 * Units one evaluation may spend unless its caller gives another budget (4 Mi): about a quarter
 * second of the scheduler's thread at worst (plus V8's first listing of the keys of an object of
 * hundreds of thousands of keys, which no budget can make cheaper), and far more than ordinary
 * expressions use (two scalars compare for nothing, two 1,000,000-element arrays for about 1 Mi).
 */
export const DEFAULT_EXPRESSION_BUDGET = 4 * 1024 * 1024;

/** Characters of a string scanned (compared, searched, counted, case-mapped, rendered) per unit. */
export const CHARS_PER_UNIT = 16;

/**
 * Objects with more keys than this cost {@link LARGE_OBJECT_KEY_UNITS} per key, and their key list
 * is kept for the rest of the evaluation. V8 keeps such objects as hash tables and lists their keys
 * anew, and slowly, on every `Object.keys` (about 0.4 s for 1,000,000 keys, where comparing
 * 1,000,000 array elements takes 0.07 s), so their keys must cost more than an element does.
 */
export const LARGE_OBJECT_KEYS = 1024;
/** Units per key of an object with more than {@link LARGE_OBJECT_KEYS} keys. */
export const LARGE_OBJECT_KEY_UNITS = 4;

/** An evaluation that needed more work than its budget allows (code EXPRESSION_ERROR, as any evaluation error). */
export class ExpressionBudgetError extends EvaluationError {
  override name = "ExpressionBudgetError";
  /** The budget that was exceeded, in units. */
  readonly budget: number;

  /** `what` names the operator or function that ran out (`"=="`, `len()`). */
  constructor(what: string, budget: number) {
    super(
      `${what} exceeds the expression work budget of ${budget} units (about one per array element or ` +
        `object key visited, one per ${CHARS_PER_UNIT} characters scanned) that one evaluation may use`,
    );
    this.budget = budget;
  }
}

/** Units left to one evaluation; every walk over a value charges it before or while it works. */
export class WorkBudget {
  /** The budget in units. */
  readonly limit: number;
  private left: number;
  /** Key lists of large objects already listed by this evaluation (see {@link LARGE_OBJECT_KEYS}). */
  private keys: Map<object, readonly string[]> | undefined;

  /** A fresh budget of `limit` units (a positive safe integer). @default DEFAULT_EXPRESSION_BUDGET */
  constructor(limit: number = DEFAULT_EXPRESSION_BUDGET) {
    if (!Number.isSafeInteger(limit) || limit <= 0)
      throw new TypeError(`an expression work budget must be a positive integer, got ${limit}`);
    this.limit = limit;
    this.left = limit;
  }

  /** Units spent so far. */
  get used(): number {
    return this.limit - this.left;
  }

  /** Spends `units`; throws {@link ExpressionBudgetError} naming `what` when the budget is exceeded. */
  charge(units: number, what: string): void {
    this.left -= units;
    if (this.left < 0) {
      this.left = 0;
      throw new ExpressionBudgetError(what, this.limit);
    }
  }

  /** Spends the units of scanning `chars` characters. */
  chargeChars(chars: number, what: string): void {
    this.charge(Math.ceil(chars / CHARS_PER_UNIT), what);
  }

  /**
   * The own keys of a plain object, charged one unit each, {@link LARGE_OBJECT_KEY_UNITS} each in a
   * large object (even when its list is kept from an earlier call: whoever asks walks it).
   */
  keysOf(o: Readonly<Record<string, unknown>>, what: string): readonly string[] {
    let keys = this.keys?.get(o);
    if (keys === undefined) {
      keys = Object.keys(o);
      // Evaluation never changes a value, so the list stays right until the budget is dropped.
      if (keys.length > LARGE_OBJECT_KEYS) (this.keys ??= new Map()).set(o, keys);
    }
    this.charge(keys.length > LARGE_OBJECT_KEYS ? keys.length * LARGE_OBJECT_KEY_UNITS : keys.length, what);
    return keys;
  }
}

/**
 * Deep equality of JSON values (object key order is irrelevant), as json.ts's `jsonEqual` but
 * charging `budget`: each array element and each key of both objects, and equal-length strings
 * by their characters. Iterative, so nesting deeper than the call stack costs units, not a crash.
 */
export function equalWithin(a: unknown, b: unknown, budget: WorkBudget, what: string): boolean {
  // Flat pairs (x at 2i, y at 2i + 1): no tuple per visited element.
  const stack: unknown[] = [a, b];
  while (stack.length > 0) {
    const y = stack.pop();
    const x = stack.pop();
    if (typeof x === "string") {
      if (typeof y !== "string" || x.length !== y.length) return false;
      if (x.length > CHARS_PER_UNIT) budget.chargeChars(x.length, what);
      if (x !== y) return false;
      continue;
    }
    if (x === y) continue;
    if (typeof x !== "object" || typeof y !== "object" || x === null || y === null) return false;
    if (Array.isArray(x)) {
      if (!Array.isArray(y) || x.length !== y.length) return false;
      budget.charge(x.length, what);
      for (let i = 0; i < x.length; i++) stack.push(x[i], y[i]);
      continue;
    }
    if (Array.isArray(y) || !isPlainObject(x) || !isPlainObject(y)) return false;
    const keys = budget.keysOf(x, what);
    if (keys.length !== budget.keysOf(y, what).length) return false;
    for (const key of keys) {
      if (!Object.hasOwn(y, key)) return false;
      stack.push(x[key], y[key]);
    }
  }
  return true;
}
