/**
 * Dynamic fan-out in the definition language: a step with `map` ({"items": "steps.list.output.files",
 * "parallelism": 50, "failure": "fail-fast"}) runs its task once per element of an array known only
 * when the step becomes ready (core/maps.ts):
 *
 * - `items` is an expression (the language of `when`) over the run input and upstream outputs; it
 *   must yield an array of at most {@link MAX_MAP_ITEMS} elements, else the step fails with
 *   MAP_ITEMS_INVALID before any element runs.
 * - the step's `type`, `input`, `retry` and `timeouts` apply to every element; in `input`, `item`
 *   is the element and `index` its position (0-based). `item` and `index` exist nowhere else.
 * - `parallelism` (1..10000, default {@link DEFAULT_MAP_PARALLELISM}): at most this many elements
 *   are queued, leased, running or waiting for a retry at once.
 * - `failure`: "fail-fast" (default) fails the step at the first element that failed for good and
 *   cancels the others; "collect" lets every element end and then fails the step with the list of
 *   failures (MAP_ELEMENTS_FAILED) if there is any.
 * - the step's output is the array of the elements' outputs, in item order.
 * - with `workflow` instead of `type` (child.ts), each element is a child run: `workflow.input`
 *   is rendered per element (with `item` and `index`), the element ends with its child, and the
 *   step's output is the children's outputs in item order. The child step's rules apply (no
 *   `type`, `input`, `retry`, `timeouts`, ...; `onParentCancel`); when the run rolls back, the
 *   children of the elements that succeeded roll back too (core/child-rollback.ts).
 *
 * A map step takes no `wait`, `sleep`, `compensate`, `concurrency` or `rateLimits` (for now): a
 * map step's compensation would be one per succeeded element, which is not built for tasks.
 */
import type { SpecError } from "./errors.js";
import { ExpressionSyntaxError } from "./errors.js";
import { parseExpression, type Expr } from "./expr.js";
import { isPlainObject, jsonTypeOf, pathJoin } from "./json.js";

/** Most elements of one map step. */
export const MAX_MAP_ITEMS = 10_000;
/** Highest `map.parallelism`. */
export const MAX_MAP_PARALLELISM = 10_000;
/** `map.parallelism` when not written. */
export const DEFAULT_MAP_PARALLELISM = 100;

/** What a map step does when an element fails for good. */
export type MapFailurePolicy = "fail-fast" | "collect";

/** A map step's `map` as written. */
export interface MapSpec {
  /** Expression yielding the array, e.g. "steps.list.output" or "input.files". */
  items: string;
  /** 1..10000, default 100. */
  parallelism?: number;
  /** Default "fail-fast". */
  failure?: MapFailurePolicy;
}

/** A compiled map step. */
export interface CompiledMap {
  /** The items expression as written. */
  readonly expression: string;
  readonly items: Expr;
  readonly parallelism: number;
  readonly failure: MapFailurePolicy;
}

const MAP_FIELDS = ["items", "parallelism", "failure"];
/** Step fields a map step refuses, with why. */
const REFUSED: readonly (readonly [string, string])[] = [
  ["wait", "a map step runs a task per element, not a durable wait"],
  ["sleep", "a map step runs a task per element, not a durable sleep"],
  ["compensate", "compensation of map steps is not supported yet"],
  ["concurrency", "concurrency limits on map steps are not supported yet (use map.parallelism)"],
  ["rateLimits", "rate limits on map steps are not supported yet"],
];

/**
 * Checks `step.map` (present) as written at `path` (the step's path): returns the compiled map, or
 * undefined after pushing errors that name the field at fault.
 */
export function checkMap(
  step: Record<string, unknown>,
  path: string,
  errors: SpecError[],
): CompiledMap | undefined {
  const at = pathJoin(path, "map");
  const before = errors.length;
  // A map over a child workflow: the child step's checks (child.ts) refuse these fields already.
  if (step["workflow"] === undefined)
    for (const [field, why] of REFUSED)
      if (step[field] !== undefined)
        errors.push({ path: pathJoin(path, field), message: `${field}: ${why}` });
  const map = step["map"];
  if (!isPlainObject(map)) {
    errors.push({
      path: at,
      message: `map must be an object {items, parallelism, failure}, got ${jsonTypeOf(map)}`,
    });
    return undefined;
  }
  for (const key of Object.keys(map))
    if (!MAP_FIELDS.includes(key))
      errors.push({
        path: pathJoin(at, key),
        message: `unknown field ${JSON.stringify(key)} (map takes ${MAP_FIELDS.join(", ")})`,
      });
  let items: Expr | undefined;
  const itemsAt = pathJoin(at, "items");
  const raw = map["items"];
  if (raw === undefined)
    errors.push({
      path: itemsAt,
      message: 'map.items is required: an expression yielding an array, e.g. "steps.list.output"',
    });
  else if (typeof raw !== "string" || raw.trim() === "")
    errors.push({
      path: itemsAt,
      message: `map.items must be an expression (a string), got ${jsonTypeOf(raw)}`,
    });
  else {
    try {
      items = parseExpression(raw);
    } catch (error) {
      if (!(error instanceof ExpressionSyntaxError)) throw error;
      errors.push({ path: itemsAt, message: `invalid expression: ${error.message}` });
    }
  }
  const parallelism = map["parallelism"] ?? DEFAULT_MAP_PARALLELISM;
  if (
    typeof parallelism !== "number" ||
    !Number.isInteger(parallelism) ||
    parallelism < 1 ||
    parallelism > MAX_MAP_PARALLELISM
  )
    errors.push({
      path: pathJoin(at, "parallelism"),
      message: `map.parallelism must be an integer from 1 to ${MAX_MAP_PARALLELISM}, got ${JSON.stringify(parallelism) ?? jsonTypeOf(parallelism)}`,
    });
  const failure = map["failure"] ?? "fail-fast";
  if (failure !== "fail-fast" && failure !== "collect")
    errors.push({
      path: pathJoin(at, "failure"),
      message: `map.failure must be "fail-fast" or "collect", got ${JSON.stringify(failure) ?? jsonTypeOf(failure)}`,
    });
  if (errors.length !== before || items === undefined) return undefined;
  return Object.freeze({
    expression: raw as string,
    items,
    parallelism: parallelism as number,
    failure: failure as MapFailurePolicy,
  });
}
