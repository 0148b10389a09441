/**
 * The work budget of one expression evaluation (expr.ts) or one template rendering (template.ts).
 * Expressions run on the scheduler's only event-loop thread over run inputs and step outputs of
 * megabytes, and one 4096-character expression can repeat `input.a == input.b` hundreds of times:
 * every operator or function that walks a whole value (`==`, `!=`, `in`, `contains()`, `len()`,
 * string comparisons, `lower()`, `upper()`, `startsWith()`, a template's text) charges what it
 * visits to one budget shared by the whole evaluation, which fails with
 * {@link ExpressionBudgetError} once that is spent, so a definition cannot stall the scheduler.
 * One evaluation of a run (evaluate.ts `evaluateRun`) decides any number of steps, so the budgets
 * of its expressions and templates are also charged to one {@link RunEvaluationBudget} of the pass.
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

/**
 * Units one evaluation of a run (evaluate.ts `evaluateRun`: every `when`, `map.items`, input and
 * output template it evaluates) may spend in all (16 Mi): about a second of the scheduler's thread
 * at worst, whatever the number of steps decided (a 5,000-step fan-out would otherwise get 5,000
 * expression budgets), while a few steps each spending a whole expression budget still leave room
 * for the others (ordinary steps spend next to nothing).
 */
export const RUN_EVALUATION_BUDGET = 4 * DEFAULT_EXPRESSION_BUDGET;

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

/** What a unit is, for messages. */
const UNITS = `about one per array element or object key visited, one per ${CHARS_PER_UNIT} characters scanned`;

/** An evaluation that needed more work than its budget allows (code EXPRESSION_ERROR, as any evaluation error). */
export class ExpressionBudgetError extends EvaluationError {
  override name = "ExpressionBudgetError";
  /** The budget that was exceeded, in units. */
  readonly budget: number;

  /**
   * `what` names the operator or function that ran out (`"=="`, `len()`); `message` replaces the
   * usual one (a {@link RunEvaluationBudget}'s names the step).
   */
  constructor(what: string, budget: number, message?: string) {
    super(
      message ??
        `${what} exceeds the expression work budget of ${budget} units (${UNITS}) that one evaluation may use`,
    );
    this.budget = budget;
  }
}

/**
 * Units left to one evaluation; every walk over a value charges it before or while it works. A
 * budget made within a `parent` (an expression's within its run's evaluation) charges both.
 */
export class WorkBudget {
  /** The budget in units. */
  readonly limit: number;
  private left: number;
  private readonly parent: WorkBudget | undefined;
  /** The outermost budget: its caches serve every budget within it. */
  private readonly root: WorkBudget;
  /** Key lists of large objects already listed by this evaluation (see {@link LARGE_OBJECT_KEYS}). */
  private keys: Map<object, readonly string[]> | undefined;
  /** Sizes of values already measured by this evaluation ({@link sizes}). */
  private measured: Map<object, number> | undefined;

  /**
   * A fresh budget of `limit` units (a positive safe integer), also charged to `parent` when given.
   * @default DEFAULT_EXPRESSION_BUDGET
   */
  constructor(limit: number = DEFAULT_EXPRESSION_BUDGET, parent?: WorkBudget) {
    if (!Number.isSafeInteger(limit) || limit <= 0)
      throw new TypeError(`an expression work budget must be a positive integer, got ${limit}`);
    this.limit = limit;
    this.left = limit;
    this.parent = parent;
    this.root = parent === undefined ? this : parent.root;
  }

  /** Units spent so far. */
  get used(): number {
    return this.limit - this.left;
  }

  /**
   * Spends `units` (of this budget and of its parents); throws {@link ExpressionBudgetError} naming
   * `what` when one of them is exceeded.
   */
  charge(units: number, what: string): void {
    this.left -= units;
    if (this.left < 0) {
      this.left = 0;
      throw this.exceeded(what);
    }
    if (this.parent !== undefined) this.parent.charge(units, what);
  }

  /** The error of running out while charging `what`. */
  protected exceeded(what: string): ExpressionBudgetError {
    return new ExpressionBudgetError(what, this.limit);
  }

  /**
   * Sizes measured by this evaluation (and the budgets it shares a root with) of values it does not
   * change, by value: template.ts measures a value templated in many times once.
   */
  get sizes(): Map<object, number> {
    return (this.root.measured ??= new Map());
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
    const root = this.root;
    let keys = root.keys?.get(o);
    if (keys === undefined) {
      keys = Object.keys(o);
      // Evaluation never changes a value, so the list stays right until the budget is dropped.
      if (keys.length > LARGE_OBJECT_KEYS) (root.keys ??= new Map()).set(o, keys);
    }
    this.charge(keys.length > LARGE_OBJECT_KEYS ? keys.length * LARGE_OBJECT_KEY_UNITS : keys.length, what);
    return keys;
  }
}

/**
 * The budget of one evaluation of a run ({@link RUN_EVALUATION_BUDGET} by default), shared by every
 * step it decides: each expression or template evaluated gets a {@link WorkBudget} of its own within
 * it. Its error names the step being decided when it ran out ({@link deciding}).
 */
export class RunEvaluationBudget extends WorkBudget {
  /** What is being decided, for the error: `step "charge"`, `the output mapping`. */
  deciding = "the run";

  /** A fresh budget of `limit` units. @default RUN_EVALUATION_BUDGET */
  constructor(limit: number = RUN_EVALUATION_BUDGET) {
    super(limit);
  }

  /** A budget for one expression or template of {@link deciding}, charged to this one too. */
  within(limit: number = DEFAULT_EXPRESSION_BUDGET): WorkBudget {
    return new WorkBudget(limit, this);
  }

  protected override exceeded(what: string): ExpressionBudgetError {
    return new ExpressionBudgetError(
      what,
      this.limit,
      `${what} exceeds the work budget of ${this.limit} units (${UNITS}) that one evaluation of a run may ` +
        `use for all the steps it decides (it ran out deciding ${this.deciding})`,
    );
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
