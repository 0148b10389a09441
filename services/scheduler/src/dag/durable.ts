/**
 * Durable waits and sleeps in the definition language: a step with `wait` ({"signal": "approval",
 * "timeout": "2d"}) waits for a signal sent to its run, or ({"event": "orders.paid", "filter":
 * "event.payload.orderId == input.orderId", "timeout": "1h"}) for an event published after it
 * began waiting whose key matches the pattern and for which the filter is truthy (the filter may
 * name the event, the run's input and upstream outputs); a step with `sleep` ({"for": "10m"} or
 * {"until": "{{ input.remindAt }}"}) waits for a time. Neither is a task: no executor runs it and
 * it holds no executor slot. A step sets exactly one of `type`, `wait` and `sleep`; a wait or sleep
 * step takes no `input`, `retry`, `timeouts`, `compensate` or `priority` (there is nothing to run,
 * retry or undo).
 *
 * The step's task input is what it waits for, rendered when it becomes ready ({"signal",
 * "timeout"}, {"for"} or {"until"}): `until` is a template in the language of step inputs, so it
 * may name the run's input or an upstream step's output.
 */
import { DurationError, parseDuration } from "@nexusflow/common/duration";
import { ExpressionSyntaxError, type SpecError } from "./errors.js";
import { parseExpression, type Expr } from "./expr.js";
import { isPlainObject, jsonTypeOf, pathJoin } from "./json.js";
import { compileTemplate, type Template } from "./template.js";
import { patternProblem } from "./triggers.js";

/** Signal names: a letter, then letters, digits, `_`, `.`, `:` or `-`, at most 128 characters. */
export const SIGNAL_NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_.:-]{0,127}$/;
/** How a bad signal name is explained. */
export const SIGNAL_NAME_RULE =
  "use letters, digits, _, ., : and -, start with a letter, at most 128 characters";

/** A wait or sleep as written: a wait sets exactly one of `signal` and `event`. */
export interface WaitSpec {
  signal?: string;
  /** An event key pattern, as in a trigger (`orders.paid`, `orders.*`, `orders.**`). */
  event?: string;
  /** With `event`: an expression over `event.*`, `input.*`, `run.*` and upstream `steps.*`. */
  filter?: string;
  timeout?: string;
}
export interface SleepSpec {
  for?: string;
  until?: string;
}

/** A compiled wait or sleep step. */
export type CompiledDurable =
  | { readonly kind: "wait"; readonly signal: string; readonly timeoutMs: number | null }
  | CompiledEventWait
  | { readonly kind: "sleep"; readonly forMs: number | null };

/** A compiled wait for an event (core/event-waits.ts matches published events against it). */
export interface CompiledEventWait {
  readonly kind: "event";
  /** The key pattern as written. */
  readonly event: string;
  /** Its segments (`*`, `**` or a literal; dag/triggers.ts keyMatches). */
  readonly segments: readonly string[];
  /** The filter as written, or null. */
  readonly filterText: string | null;
  /** The parsed filter, or null: every event whose key matches satisfies the wait. */
  readonly filter: Expr | null;
  readonly timeoutMs: number | null;
}

/** What {@link checkDurable} found: the compiled kind and the task input template. */
export interface DurableDraft {
  readonly durable: CompiledDurable;
  readonly input: Template;
  /** Where the input template's references are reported (`$.steps[i].sleep`). */
  readonly inputPath: string;
  /**
   * A wait for an event's filter, and where its references are reported (they may name `event`,
   * `input`, `run` and upstream steps: validate.ts checks them with the others).
   */
  readonly filter?: { readonly expr: Expr; readonly path: string };
}

/** Fields a wait or sleep step may not have. */
const TASK_ONLY_FIELDS = [
  "type",
  "input",
  "retry",
  "timeouts",
  "compensate",
  "priority",
  "concurrency",
  "rateLimits",
];

function duration(value: unknown, path: string, what: string, errors: SpecError[]): number | undefined {
  if (typeof value !== "string") {
    errors.push({
      path,
      message: `${what} must be a duration string such as "10m", got ${jsonTypeOf(value)}`,
    });
    return undefined;
  }
  try {
    const ms = parseDuration(value);
    if (ms > 0) return ms;
    errors.push({ path, message: `${what} must be longer than 0, got ${JSON.stringify(value)}` });
  } catch (error) {
    if (!(error instanceof DurationError)) throw error;
    errors.push({ path, message: `${what}: ${error.message}` });
  }
  return undefined;
}

function unknownFields(
  obj: Record<string, unknown>,
  allowed: string[],
  path: string,
  what: string,
  errors: SpecError[],
): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key))
      errors.push({
        path: pathJoin(path, key),
        message: `unknown field ${JSON.stringify(key)} in ${what}; allowed fields: ${allowed.join(", ")}`,
      });
  }
}

/**
 * Checks the `wait` or `sleep` of a step (`step` as written, at `path`); undefined when it has
 * neither (a task step) or after reporting errors.
 */
export function checkDurable(
  step: Record<string, unknown>,
  path: string,
  errors: SpecError[],
): DurableDraft | undefined {
  const hasWait = step["wait"] !== undefined;
  const hasSleep = step["sleep"] !== undefined;
  if (!hasWait && !hasSleep) return undefined;
  const kind = hasWait ? "wait" : "sleep";
  const before = errors.length;
  if (hasWait && hasSleep)
    errors.push({ path: pathJoin(path, "sleep"), message: "a step sets only one of type, wait and sleep" });
  for (const field of TASK_ONLY_FIELDS) {
    if (step[field] !== undefined)
      errors.push({
        path: pathJoin(path, field),
        message: `a ${kind} step has no ${field}: no executor runs it (a step sets only one of type, wait and sleep)`,
      });
  }
  const at = pathJoin(path, kind);
  const body = step[kind];
  if (!isPlainObject(body)) {
    errors.push({ path: at, message: `${kind} must be an object, got ${jsonTypeOf(body)}` });
    return undefined;
  }
  if (kind === "wait") return checkWait(body, at, errors, before);
  unknownFields(body, ["for", "until"], at, "sleep", errors);
  const hasFor = body["for"] !== undefined;
  const hasUntil = body["until"] !== undefined;
  if (hasFor === hasUntil)
    errors.push({ path: at, message: "sleep sets exactly one of for (a duration) and until (a time)" });
  let forMs: number | null = null;
  if (hasFor) forMs = duration(body["for"], pathJoin(at, "for"), "sleep.for", errors) ?? null;
  let input: Template = { kind: "literal", value: { for: body["for"] as string } };
  if (hasUntil) {
    const until = body["until"];
    if (typeof until !== "string" || until.length === 0)
      errors.push({
        path: pathJoin(at, "until"),
        message: `sleep.until must be an RFC 3339 time or a template rendering one, got ${typeof until === "string" ? "an empty string" : jsonTypeOf(until)}`,
      });
    else {
      const compiled = compileTemplate({ until }, at);
      errors.push(...compiled.errors);
      input = compiled.template;
      if (compiled.template.kind === "literal" && untilTime(until) === null)
        errors.push({
          path: pathJoin(at, "until"),
          message: `sleep.until must be an RFC 3339 time with an offset (e.g. "2026-12-24T18:00:00Z"), got ${JSON.stringify(until.slice(0, 100))}`,
        });
    }
  }
  if (errors.length > before) return undefined;
  return { durable: { kind: "sleep", forMs }, input, inputPath: at };
}

/** Checks a `wait` object (at `at`): a signal, or an event with its optional filter. */
function checkWait(
  body: Record<string, unknown>,
  at: string,
  errors: SpecError[],
  before: number,
): DurableDraft | undefined {
  unknownFields(body, ["signal", "event", "filter", "timeout"], at, "wait", errors);
  const signal = body["signal"];
  const event = body["event"];
  const signalPath = pathJoin(at, "signal");
  const eventPath = pathJoin(at, "event");
  if (signal === undefined && event === undefined)
    errors.push({
      path: signalPath,
      message:
        "wait.signal (a signal's name) or wait.event (an event key pattern) is required: a wait sets exactly one of them",
    });
  else if (signal !== undefined && event !== undefined)
    errors.push({
      path: eventPath,
      message: "a wait sets exactly one of signal and event: it waits for a signal or for an event",
    });
  else if (signal !== undefined && (typeof signal !== "string" || !SIGNAL_NAME_PATTERN.test(signal)))
    errors.push({
      path: signalPath,
      message: `signal name ${typeof signal === "string" ? JSON.stringify(signal.slice(0, 100)) : jsonTypeOf(signal)} is invalid: ${SIGNAL_NAME_RULE}`,
    });
  else if (event !== undefined) {
    const problem =
      typeof event === "string" ? patternProblem(event) : `must be a string, got ${jsonTypeOf(event)}`;
    if (problem !== undefined) errors.push({ path: eventPath, message: `wait.event: ${problem}` });
  }
  let filter: Expr | null = null;
  const rawFilter = body["filter"];
  const filterPath = pathJoin(at, "filter");
  if (rawFilter !== undefined) {
    if (event === undefined)
      errors.push({ path: filterPath, message: "wait.filter goes with wait.event (a signal wait has none)" });
    else if (typeof rawFilter !== "string" || rawFilter.trim() === "")
      errors.push({
        path: filterPath,
        message: `wait.filter must be an expression such as "event.payload.orderId == input.orderId", got ${typeof rawFilter === "string" ? "an empty string" : jsonTypeOf(rawFilter)}`,
      });
    else
      try {
        filter = parseExpression(rawFilter);
      } catch (e) {
        if (!(e instanceof ExpressionSyntaxError)) throw e;
        errors.push({ path: filterPath, message: `wait.filter: ${e.message}` });
      }
  }
  const timeoutMs =
    body["timeout"] === undefined
      ? null
      : (duration(body["timeout"], pathJoin(at, "timeout"), "wait.timeout", errors) ?? null);
  if (errors.length > before) return undefined;
  // The task's input says what it waits for (GetRun shows it).
  const literal: Record<string, string> = {};
  if (typeof body["timeout"] === "string") literal["timeout"] = body["timeout"];
  if (signal !== undefined)
    return {
      durable: { kind: "wait", signal: signal as string, timeoutMs },
      input: { kind: "literal", value: { signal: signal as string, ...literal } },
      inputPath: at,
    };
  const pattern = event as string;
  const filterText = filter === null ? null : (rawFilter as string);
  return {
    durable: Object.freeze({
      kind: "event",
      event: pattern,
      segments: Object.freeze(pattern.split(".")),
      filterText,
      filter,
      timeoutMs,
    }),
    input: {
      kind: "literal",
      value: { event: pattern, ...(filterText === null ? {} : { filter: filterText }), ...literal },
    },
    inputPath: at,
    ...(filter === null ? {} : { filter: { expr: filter, path: filterPath } }),
  };
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$/;

/**
 * The time of a rendered `sleep.until` (an RFC 3339 string with an offset), or null; also null
 * for a date or time the calendar does not have (2026-04-31, 2027-02-29, 24:00), which Date.parse
 * would roll into the next day or month.
 */
export function untilTime(value: unknown): Date | null {
  const m = typeof value === "string" ? RFC3339.exec(value) : null;
  if (m === null) return null;
  const n = (i: number): number => Number(m[i]);
  const [year, month, day] = [n(1), n(2), n(3)];
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth) return null;
  if (n(4) > 23 || n(5) > 59 || n(6) > 59) return null;
  if (m[9] !== undefined && (n(9) > 23 || n(10) > 59)) return null;
  const ms = Date.parse(value as string);
  return Number.isFinite(ms) ? new Date(ms) : null;
}
