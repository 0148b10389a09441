/**
 * The field checks of a workflow definition (validate.ts compiles the whole definition with them):
 * a {@link Checker} collects errors with the JSON path of the field at fault, suggests the field
 * or value meant for a misspelt one, and reads each kind of field (names, integers, durations,
 * retry policies, timeouts, templates, expressions, concurrency and rate limits).
 */
import { DurationError, parseDuration } from "@nexusflow/common/duration";
import type { SpecError } from "./errors.js";
import { ExpressionSyntaxError } from "./errors.js";
import { MAX_EXPRESSION_LENGTH, parseExpression } from "./expr.js";
import type { Expr } from "./expr.js";
import { isPlainObject, jsonTypeOf, pathJoin } from "./json.js";
import { MAX_ATTEMPTS_LIMIT, MAX_BACKOFF_COEFFICIENT } from "./retry.js";
import {
  CONCURRENCY_STRATEGIES,
  MAX_CONCURRENCY_LIMIT,
  MAX_CONCURRENCY_LIMITS,
  MAX_RATE,
  MAX_RATE_LIMITS,
  RATE_LIMIT_NAME_PATTERN,
} from "./spec.js";
import type { CompiledConcurrencyLimit, CompiledRateLimit, CompiledWorkflow, StepTimeouts } from "./spec.js";
import { compileTemplate } from "./template.js";
import type { Template } from "./template.js";

/** Result of {@link compileWorkflow}: the compiled workflow, or every problem found. */
export type CompileResult =
  | { readonly ok: true; readonly workflow: CompiledWorkflow }
  | { readonly ok: false; readonly errors: SpecError[] };

/** Most entries in `nonRetryableErrors`. */
export const MAX_NON_RETRYABLE_ERRORS = 100;
/** Longest error type in `nonRetryableErrors`. */
export const MAX_ERROR_TYPE_LENGTH = 256;

export const WORKFLOW_FIELDS = [
  "name",
  "version",
  "description",
  "input",
  "defaults",
  "timeout",
  "steps",
  "output",
  "concurrency",
  "triggers",
  "schedules",
  "fairness",
];
export const STEP_FIELDS = [
  "id",
  "workflow",
  "type",
  "input",
  "dependsOn",
  "when",
  "retry",
  "timeouts",
  "compensate",
  "priority",
  "concurrency",
  "rateLimits",
  "wait",
  "sleep",
  "map",
];
export const CONCURRENCY_FIELDS = ["key", "limit", "strategy"];
export const RATE_LIMIT_FIELDS = ["name", "key", "units", "rate", "per", "burst"];
export const COMPENSATE_FIELDS = ["type", "input", "retry"];
export const DEFAULTS_FIELDS = ["retry", "timeouts", "priority"];
/** Lowest scheduling priority of a step. */
export const MIN_PRIORITY = -10;
/** Highest scheduling priority of a step. */
export const MAX_PRIORITY = 10;
export const RETRY_FIELDS = [
  "maxAttempts",
  "initialInterval",
  "backoffCoefficient",
  "maxInterval",
  "jitter",
  "nonRetryableErrors",
];
export const TIMEOUT_FIELDS = ["scheduleToStart", "startToClose", "heartbeat"];
export const JITTERS = ["none", "full", "equal"];
export const NAME_RULE =
  "use lower case letters, digits, ., _ and -, start with a letter, at most 63 characters";
export const STEP_ID_RULE = "use letters, digits, _ and -, start with a letter or _, at most 63 characters";
// Suggestions cost O(candidates × length²) each; a hostile spec with thousands of typos must not make validation slow.
export const SUGGESTION_BUDGET = 50;

function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + cost);
    }
    prev = row;
  }
  return prev[b.length] as number;
}

/** Collects errors and owns the helpers that check one kind of field each. */
export class Checker {
  readonly errors: SpecError[] = [];
  private suggestions = 0;

  err(path: string, message: string): void {
    this.errors.push({ path, message });
  }

  suggest(word: string, options: Iterable<string>): string {
    if (this.suggestions >= SUGGESTION_BUDGET) return "";
    this.suggestions++;
    let best: string | undefined;
    let bestDistance = 3;
    for (const option of options) {
      if (option.toLowerCase() === word.toLowerCase()) return ` (did you mean "${option}"?)`;
      const d = editDistance(word, option, 2);
      if (d < bestDistance) {
        best = option;
        bestDistance = d;
      }
    }
    return best !== undefined && word.length > 2 ? ` (did you mean "${best}"?)` : "";
  }

  /** Checks that `value` is an object with only `allowed` keys; returns it as a record or undefined. */
  object(
    value: unknown,
    path: string,
    what: string,
    allowed: readonly string[],
  ): Record<string, unknown> | undefined {
    if (!isPlainObject(value)) {
      this.err(path, `${what} must be an object, got ${jsonTypeOf(value)}`);
      return undefined;
    }
    for (const key of Object.keys(value)) {
      if (!allowed.includes(key)) {
        this.err(
          pathJoin(path, key),
          `unknown field ${JSON.stringify(key)} in ${what}${this.suggest(key, allowed)}; allowed fields: ${allowed.join(", ")}`,
        );
      }
    }
    return value;
  }

  string(value: unknown, path: string, what: string): value is string {
    if (typeof value === "string") return true;
    this.err(path, `${what} must be a string, got ${jsonTypeOf(value)}`);
    return false;
  }

  name(value: unknown, path: string, what: string, pattern: RegExp, rule: string): value is string {
    if (!this.string(value, path, what)) return false;
    if (pattern.test(value)) return true;
    this.err(path, `${what} ${JSON.stringify(value.slice(0, 100))} is invalid: ${rule}`);
    return false;
  }

  integer(value: unknown, path: string, what: string, min: number, max: number): value is number {
    if (typeof value === "number" && Number.isInteger(value) && value >= min && value <= max) return true;
    this.err(
      path,
      `${what} must be an integer from ${min} to ${max}, got ${JSON.stringify(value) ?? jsonTypeOf(value)}`,
    );
    return false;
  }
  /** A priority as written (absent: undefined; out of range: an error, and undefined). */
  priority(value: unknown, path: string): number | undefined {
    if (value === undefined) return undefined;
    return this.integer(value, path, "priority", MIN_PRIORITY, MAX_PRIORITY) ? value : undefined;
  }

  /** Parses a duration that must be positive; returns milliseconds or undefined after reporting. */
  duration(value: unknown, path: string, what: string): number | undefined {
    if (!this.string(value, path, what)) return undefined;
    try {
      const ms = parseDuration(value);
      if (ms > 0) return ms;
      this.err(path, `${what} must be longer than 0, got ${JSON.stringify(value)}`);
    } catch (error) {
      if (!(error instanceof DurationError)) throw error;
      this.err(path, `${what}: ${error.message}`);
    }
    return undefined;
  }

  /** Checks a retry policy as written; returns true when it can be resolved. */
  retry(value: unknown, path: string): boolean {
    const policy = this.object(value, path, "retry", RETRY_FIELDS);
    if (policy === undefined) return false;
    const before = this.errors.length;
    if (policy["maxAttempts"] !== undefined) {
      this.integer(
        policy["maxAttempts"],
        pathJoin(path, "maxAttempts"),
        "maxAttempts",
        1,
        MAX_ATTEMPTS_LIMIT,
      );
    }
    const initial =
      policy["initialInterval"] === undefined
        ? undefined
        : this.duration(policy["initialInterval"], pathJoin(path, "initialInterval"), "initialInterval");
    const coefficient = policy["backoffCoefficient"];
    if (
      coefficient !== undefined &&
      (typeof coefficient !== "number" || coefficient < 1 || coefficient > MAX_BACKOFF_COEFFICIENT)
    ) {
      this.err(
        pathJoin(path, "backoffCoefficient"),
        `backoffCoefficient must be a number from 1 to ${MAX_BACKOFF_COEFFICIENT}, got ${JSON.stringify(coefficient)}`,
      );
    }
    const max =
      policy["maxInterval"] === undefined
        ? undefined
        : this.duration(policy["maxInterval"], pathJoin(path, "maxInterval"), "maxInterval");
    if (initial !== undefined && max !== undefined && max < initial) {
      this.err(pathJoin(path, "maxInterval"), "maxInterval must not be shorter than initialInterval");
    }
    const jitter = policy["jitter"];
    if (jitter !== undefined && !(typeof jitter === "string" && JITTERS.includes(jitter))) {
      this.err(
        pathJoin(path, "jitter"),
        `jitter must be one of "none", "full", "equal", got ${JSON.stringify(jitter)}`,
      );
    }
    const nonRetryable = policy["nonRetryableErrors"];
    if (nonRetryable !== undefined) {
      const at = pathJoin(path, "nonRetryableErrors");
      if (!Array.isArray(nonRetryable)) {
        this.err(at, `nonRetryableErrors must be an array of error types, got ${jsonTypeOf(nonRetryable)}`);
      } else {
        if (nonRetryable.length > MAX_NON_RETRYABLE_ERRORS) {
          this.err(
            at,
            `nonRetryableErrors has ${nonRetryable.length} entries; the limit is ${MAX_NON_RETRYABLE_ERRORS}`,
          );
        }
        nonRetryable.forEach((type: unknown, i) => {
          if (typeof type !== "string" || type.length === 0 || type.length > MAX_ERROR_TYPE_LENGTH) {
            this.err(
              pathJoin(at, i),
              `must be a non-empty string of at most ${MAX_ERROR_TYPE_LENGTH} characters`,
            );
          }
        });
      }
    }
    return this.errors.length === before;
  }

  /** Checks timeouts as written; returns the parsed values (absent or invalid fields omitted). */
  timeouts(value: unknown, path: string): Partial<Record<keyof StepTimeouts, number>> | undefined {
    const timeouts = this.object(value, path, "timeouts", TIMEOUT_FIELDS);
    if (timeouts === undefined) return undefined;
    const out: Partial<Record<keyof StepTimeouts, number>> = {};
    for (const field of TIMEOUT_FIELDS as (keyof StepTimeouts)[]) {
      if (timeouts[field] === undefined) continue;
      const ms = this.duration(timeouts[field], pathJoin(path, field), field);
      if (ms !== undefined) out[field] = ms;
    }
    return out;
  }

  template(value: unknown, path: string): Template {
    const { template, errors } = compileTemplate(value, path);
    this.errors.push(...errors);
    return template;
  }

  /**
   * Checks a `concurrency` list as written; returns its limits without their key space (filled in
   * by the caller), or an empty list after reporting.
   */
  concurrency(value: unknown, path: string): Omit<CompiledConcurrencyLimit, "space" | "scope">[] {
    if (!Array.isArray(value)) {
      this.err(path, `concurrency must be an array of limits, got ${jsonTypeOf(value)}`);
      return [];
    }
    if (value.length > MAX_CONCURRENCY_LIMITS)
      this.err(path, `concurrency has ${value.length} limits; the most is ${MAX_CONCURRENCY_LIMITS}`);
    const out: Omit<CompiledConcurrencyLimit, "space" | "scope">[] = [];
    const seen = new Map<string, number>();
    value.forEach((raw: unknown, i) => {
      const at = pathJoin(path, i);
      const limit = this.object(raw, at, "concurrency limit", CONCURRENCY_FIELDS);
      if (limit === undefined) return;
      const keyAt = pathJoin(at, "key");
      let key: Expr | undefined;
      if (limit["key"] === undefined)
        this.err(keyAt, "key is required (an expression such as input.customerId)");
      else key = this.expression(limit["key"], keyAt, "key");
      const limitAt = pathJoin(at, "limit");
      let n: number | undefined;
      if (limit["limit"] === undefined)
        this.err(limitAt, `limit is required (1 to ${MAX_CONCURRENCY_LIMIT})`);
      else if (this.integer(limit["limit"], limitAt, "limit", 1, MAX_CONCURRENCY_LIMIT)) n = limit["limit"];
      const strategy = limit["strategy"] ?? "queue";
      const known =
        typeof strategy === "string" && (CONCURRENCY_STRATEGIES as readonly string[]).includes(strategy);
      if (!known)
        this.err(
          pathJoin(at, "strategy"),
          `unknown strategy ${JSON.stringify(strategy)}${typeof strategy === "string" ? this.suggest(strategy, CONCURRENCY_STRATEGIES) : ""}; use one of ${CONCURRENCY_STRATEGIES.map((s) => JSON.stringify(s)).join(", ")}`,
        );
      if (key === undefined || n === undefined || !known) return;
      const expression = limit["key"] as string;
      const first = seen.get(expression);
      if (first !== undefined) {
        this.err(keyAt, `key ${JSON.stringify(expression)} is already limited at ${pathJoin(path, first)}`);
        return;
      }
      seen.set(expression, i);
      out.push({
        expression,
        key,
        limit: n,
        strategy: strategy as CompiledConcurrencyLimit["strategy"],
        path: at,
      });
    });
    return out;
  }

  /** Checks a `rateLimits` list as written; returns its limits, or an empty list after reporting. */
  rateLimits(value: unknown, path: string): CompiledRateLimit[] {
    if (!Array.isArray(value)) {
      this.err(path, `rateLimits must be an array of rate limits, got ${jsonTypeOf(value)}`);
      return [];
    }
    if (value.length > MAX_RATE_LIMITS)
      this.err(path, `rateLimits has ${value.length} limits; the most is ${MAX_RATE_LIMITS}`);
    const out: CompiledRateLimit[] = [];
    const seen = new Map<string, number>();
    value.forEach((raw: unknown, i) => {
      const at = pathJoin(path, i);
      const limit = this.object(raw, at, "rate limit", RATE_LIMIT_FIELDS);
      if (limit === undefined) return;
      const before = this.errors.length;
      const nameAt = pathJoin(at, "name");
      const name = limit["name"];
      if (name === undefined) this.err(nameAt, 'name is required (e.g. "partner-api")');
      else if (typeof name !== "string" || !RATE_LIMIT_NAME_PATTERN.test(name))
        this.err(
          nameAt,
          `name must be 1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit, got ${JSON.stringify(name)}`,
        );
      else if (seen.has(name))
        this.err(
          nameAt,
          `rate limit "${name}" is already declared at ${pathJoin(path, seen.get(name) as number)}`,
        );
      else seen.set(name, i);
      const key =
        limit["key"] === undefined
          ? null
          : (this.expression(limit["key"], pathJoin(at, "key"), "key") ?? null);
      const rateAt = pathJoin(at, "rate");
      if (limit["rate"] === undefined)
        this.err(rateAt, `rate is required (tokens per \`per\`, 1 to ${MAX_RATE})`);
      else this.integer(limit["rate"], rateAt, "rate", 1, MAX_RATE);
      const perMs =
        limit["per"] === undefined ? 1000 : this.duration(limit["per"], pathJoin(at, "per"), "per");
      const rate = limit["rate"] as number;
      const units = limit["units"] ?? 1;
      // Default burst: one lease's units, so that no window of `per` grants more than `rate`.
      const burst = limit["burst"] ?? units;
      if (limit["burst"] !== undefined) this.integer(burst, pathJoin(at, "burst"), "burst", 1, MAX_RATE);
      if (limit["units"] !== undefined) this.integer(units, pathJoin(at, "units"), "units", 1, MAX_RATE);
      if (
        this.errors.length === before &&
        typeof units === "number" &&
        typeof burst === "number" &&
        units > burst
      )
        this.err(
          pathJoin(at, "units"),
          `units (${units}) must not exceed burst (${burst}): no lease could ever take them`,
        );
      if (this.errors.length !== before || perMs === undefined) return;
      out.push(
        Object.freeze({
          name: name as string,
          expression: key === null ? null : (limit["key"] as string),
          key,
          units: units as number,
          rate,
          perMs,
          burst: burst as number,
          path: at,
        }),
      );
    });
    return out;
  }

  expression(value: unknown, path: string, what: string): Expr | undefined {
    if (!this.string(value, path, what)) return undefined;
    if (value.length > MAX_EXPRESSION_LENGTH) {
      this.err(path, `${what} is longer than ${MAX_EXPRESSION_LENGTH} characters`);
      return undefined;
    }
    try {
      return parseExpression(value);
    } catch (error) {
      if (!(error instanceof ExpressionSyntaxError)) throw error;
      this.err(path, `invalid expression: ${error.message}`);
      return undefined;
    }
  }
}
