/**
 * Input checks shared by the built-in handlers. Each failure is a terminal INVALID_INPUT whose
 * message starts with the field at fault ("timeout: ..."), since retrying bad input never helps.
 */
import { DurationError, parseDuration } from "@nexusflow/common/duration";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { TaskError } from "./task-error.js";

/** Largest delay a single Node timer supports; longer timeouts would fire at once. */
export const MAX_TIMER_MS = 2_147_483_647;

/** A terminal INVALID_INPUT error for `field`. */
export function invalidInput(field: string, problem: string): TaskError {
  return TaskError.terminal(TaskErrorType.INVALID_INPUT, `${field}: ${problem}`, { details: { field } });
}

/** Describes a value's JSON type for error messages ("array", "null", "string"). */
export function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

/** The input as a plain object, refusing unknown fields so typos ("timout") fail loudly. */
export function expectObject(
  value: unknown,
  allowed: readonly string[],
  field = "input",
): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalidInput(field, `expected an object, got ${kindOf(value)}`);
  }
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (!allowed.includes(key)) {
      throw invalidInput(key, `unknown field (allowed: ${allowed.join(", ")})`);
    }
  }
  return record;
}

/** A required non-empty string. */
export function requiredString(record: Record<string, unknown>, field: string): string {
  const value = record[field];
  if (value === undefined) throw invalidInput(field, "is required");
  if (typeof value !== "string") throw invalidInput(field, `expected a string, got ${kindOf(value)}`);
  if (value.length === 0) throw invalidInput(field, "must not be empty");
  return value;
}

/** An optional string (undefined when absent). */
export function optionalString(record: Record<string, unknown>, field: string): string | undefined {
  const value = record[field];
  if (value === undefined) return undefined;
  if (typeof value !== "string") throw invalidInput(field, `expected a string, got ${kindOf(value)}`);
  return value;
}

/** An optional record of string values (undefined when absent). */
export function optionalStringRecord(
  record: Record<string, unknown>,
  field: string,
): Record<string, string> | undefined {
  const value = record[field];
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalidInput(field, `expected an object of strings, got ${kindOf(value)}`);
  }
  const result: Record<string, string> = {};
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
    if (typeof item !== "string")
      throw invalidInput(`${field}.${key}`, `expected a string, got ${kindOf(item)}`);
    result[key] = item;
  }
  return result;
}

/**
 * A duration field ("30s", "1m30s") in milliseconds, or `fallback` when absent. Timeouts must be
 * positive and fit a Node timer; plain waits may be zero.
 */
export function durationField(
  record: Record<string, unknown>,
  field: string,
  fallback: string | undefined,
  { allowZero = false }: { allowZero?: boolean } = {},
): number {
  const value = record[field] ?? fallback;
  if (value === undefined) throw invalidInput(field, "is required");
  if (typeof value !== "string") {
    throw invalidInput(field, `expected a duration string such as "30s", got ${kindOf(value)}`);
  }
  let ms: number;
  try {
    ms = parseDuration(value);
  } catch (e) {
    if (e instanceof DurationError) throw invalidInput(field, e.message);
    throw e;
  }
  if (ms === 0 && !allowZero) throw invalidInput(field, "must be greater than zero");
  if (!allowZero && ms > MAX_TIMER_MS) throw invalidInput(field, "must be at most 24d");
  return ms;
}
