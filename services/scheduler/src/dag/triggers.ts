/**
 * A workflow's `triggers`: the events that start its runs. Each trigger names an event key
 * pattern and, optionally, a filter in the expression language of `when` over `event.key` and
 * `event.payload`. Pure: validation, key matching and filter evaluation; storing events and
 * starting runs is the scheduler's (events/triggers/).
 *
 * Keys are dot-separated segments of letters, digits, `_` and `-` ("orders.created"). In a
 * pattern, a segment `*` matches exactly one segment ("orders.*" matches "orders.created", not
 * "orders" nor "orders.eu.created"), and a last segment `**` matches one or more segments
 * ("orders.**" matches both "orders.created" and "orders.eu.created", not "orders"). Other
 * segments match themselves exactly (case-sensitive).
 *
 * A workflow matches an event when any of its triggers does: the first trigger (in its list's
 * order) whose pattern matches the key and whose filter, if any, is truthy. A workflow matched by
 * several triggers is one match, and starts one run. A filter that fails on the event (a path
 * the payload lacks, a type error) does not match; when no trigger of the workflow matched and
 * one of them failed, the match is recorded as failed with the first error.
 */
import { EvaluationError, ExpressionSyntaxError, type SpecError } from "./errors.js";
import { evaluateExpression, expressionPaths, parseExpression, truthy, type Expr } from "./expr.js";
import { isPlainObject, jsonTypeOf } from "./json.js";

/** A trigger as written in a definition. */
export interface TriggerSpec {
  /** The event key pattern: exact, or with `*` / a last `**` segment. */
  event: string;
  /** An expression over `event.key` and `event.payload`; the run starts when it is truthy. */
  filter?: string;
}

/** Most triggers a workflow declares. */
export const MAX_TRIGGERS = 20;
/** Longest event key (and key pattern), in characters. */
export const MAX_EVENT_KEY_LENGTH = 255;
/** What an event key is. */
export const EVENT_KEY_PATTERN = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
/** The rule of {@link EVENT_KEY_PATTERN}, for messages. */
export const EVENT_KEY_RULE = `segments of letters, digits, _ and - separated by dots (such as "orders.created"), at most ${MAX_EVENT_KEY_LENGTH} characters`;
const SEGMENT = /^[A-Za-z0-9_-]+$/;
const TRIGGER_FIELDS = ["event", "filter"];

/** A validated trigger. */
export interface CompiledTrigger {
  /** Its index in the workflow's `triggers`. */
  readonly index: number;
  /** The pattern as written. */
  readonly event: string;
  /** The pattern's segments (`*`, `**` or a literal). */
  readonly segments: readonly string[];
  /** The parsed filter, or null when the trigger has none. */
  readonly filter: Expr | null;
}

/** The problem with an event key, or undefined when it is one. */
export function eventKeyProblem(key: string): string | undefined {
  if (key === "") return "an event key is required";
  if (key.length > MAX_EVENT_KEY_LENGTH)
    return `is ${key.length} characters; an event key is at most ${MAX_EVENT_KEY_LENGTH}`;
  if (!EVENT_KEY_PATTERN.test(key))
    return `${JSON.stringify(key.slice(0, 100))} is invalid: ${EVENT_KEY_RULE}`;
  return undefined;
}

/** The problem with a key pattern, or undefined when it is one. */
export function patternProblem(pattern: string): string | undefined {
  if (pattern === "") return "an event key pattern is required";
  if (pattern.length > MAX_EVENT_KEY_LENGTH)
    return `is ${pattern.length} characters; a key pattern is at most ${MAX_EVENT_KEY_LENGTH}`;
  const segments = pattern.split(".");
  for (const [i, seg] of segments.entries()) {
    if (seg === "*" || SEGMENT.test(seg)) continue;
    if (seg === "**") {
      if (i === segments.length - 1) continue;
      return `${JSON.stringify(pattern)}: "**" may only be the last segment`;
    }
    return `${JSON.stringify(pattern.slice(0, 100))} is invalid: ${EVENT_KEY_RULE}, where a segment may be "*" (one segment) and the last may be "**" (one or more)`;
  }
  return undefined;
}

/** Whether `key` (a valid event key) matches a trigger's pattern segments. */
export function keyMatches(segments: readonly string[], key: string): boolean {
  const parts = key.split(".");
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i];
    if (seg === "**") return parts.length > i;
    if (i >= parts.length) return false;
    if (seg !== "*" && seg !== parts[i]) return false;
  }
  return parts.length === segments.length;
}

/** Validates a definition's `triggers` (at `path`); returns the triggers and every problem found. */
export function checkTriggers(
  value: unknown,
  path: string,
): { triggers: CompiledTrigger[]; errors: SpecError[] } {
  const errors: SpecError[] = [];
  const triggers: CompiledTrigger[] = [];
  if (!Array.isArray(value)) {
    errors.push({ path, message: `triggers must be an array of triggers, got ${jsonTypeOf(value)}` });
    return { triggers, errors };
  }
  if (value.length > MAX_TRIGGERS) {
    errors.push({ path, message: `a workflow has at most ${MAX_TRIGGERS} triggers, got ${value.length}` });
    return { triggers, errors };
  }
  value.forEach((raw: unknown, index) => {
    const at = `${path}[${index}]`;
    if (!isPlainObject(raw)) {
      errors.push({ path: at, message: `a trigger must be an object, got ${jsonTypeOf(raw)}` });
      return;
    }
    let ok = true;
    for (const key of Object.keys(raw))
      if (!TRIGGER_FIELDS.includes(key)) {
        ok = false;
        errors.push({
          path: `${at}.${/^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? key : JSON.stringify(key)}`,
          message: `unknown field ${JSON.stringify(key.slice(0, 100))} in trigger; allowed fields: ${TRIGGER_FIELDS.join(", ")}`,
        });
      }
    const event = raw["event"];
    if (event === undefined) {
      ok = false;
      errors.push({ path: `${at}.event`, message: "event (the key pattern) is required" });
    } else if (typeof event !== "string") {
      ok = false;
      errors.push({ path: `${at}.event`, message: `event must be a string, got ${jsonTypeOf(event)}` });
    } else {
      const problem = patternProblem(event);
      if (problem !== undefined) {
        ok = false;
        errors.push({ path: `${at}.event`, message: problem });
      }
    }
    let filter: Expr | null = null;
    const rawFilter = raw["filter"];
    if (rawFilter !== undefined) {
      if (typeof rawFilter !== "string") {
        ok = false;
        errors.push({
          path: `${at}.filter`,
          message: `filter must be a string, got ${jsonTypeOf(rawFilter)}`,
        });
      } else {
        try {
          filter = parseExpression(rawFilter);
          for (const ref of expressionPaths(filter))
            if (ref.root !== "event") {
              ok = false;
              errors.push({
                path: `${at}.filter`,
                message: `${ref.text}: a trigger's filter sees only the event (event.key, event.payload)`,
              });
            }
        } catch (e) {
          if (!(e instanceof ExpressionSyntaxError)) throw e;
          ok = false;
          errors.push({ path: `${at}.filter`, message: `filter: ${e.message}` });
        }
      }
    }
    if (ok && typeof event === "string")
      triggers.push(Object.freeze({ index, event, segments: Object.freeze(event.split(".")), filter }));
  });
  return { triggers, errors };
}

/** An event as a filter sees it. */
export interface TriggerEvent {
  readonly key: string;
  readonly payload: unknown;
}

/** How a workflow's triggers met an event: matched (by which), failed (why), or no match. */
export type TriggerOutcome =
  | { readonly matched: true; readonly index: number }
  | { readonly matched: false; readonly index: number; readonly error: string }
  | undefined;

/** Matches an event against a workflow's triggers (see the module comment). Never throws. */
export function matchTriggers(triggers: readonly CompiledTrigger[], event: TriggerEvent): TriggerOutcome {
  let failure: TriggerOutcome;
  for (const trigger of triggers) {
    if (!keyMatches(trigger.segments, event.key)) continue;
    if (trigger.filter === null) return { matched: true, index: trigger.index };
    try {
      const value = evaluateExpression(trigger.filter, {
        input: undefined,
        run: undefined,
        step: undefined,
        event,
        stepView: () => undefined,
      });
      if (truthy(value)) return { matched: true, index: trigger.index };
    } catch (e) {
      const message = e instanceof EvaluationError ? e.message : e instanceof Error ? e.message : String(e);
      failure ??= {
        matched: false,
        index: trigger.index,
        error: `triggers[${trigger.index}].filter: ${message}`,
      };
    }
  }
  return failure;
}
