/**
 * A schedule's spec as the scheduler keeps it: validated, with every default applied here (and
 * nowhere else), stored as JSON in `schedules.spec`. Errors are INVALID_ARGUMENT naming the field
 * of the request (`spec.cron`, `spec.max_concurrent_runs`, ...).
 */
import { ApiError, nulCharacterPath } from "@nexusflow/common";
import { NAME_PATTERN } from "./spec.js";
import { parseCron, type CronSchedule } from "./cron.js";

/** What a fire does while earlier runs of the schedule are active. */
export type OverlapPolicy = "SKIP" | "BUFFER_ONE" | "ALLOW_ALL" | "CANCEL_OTHER" | "TERMINATE_OTHER";
/** What happens to fire times that fell during downtime. */
export type CatchUpPolicy = "OFF" | "LAST" | "ALL";

/** The normalized spec of a schedule. */
export interface ScheduleSpec {
  cron: string;
  /** IANA zone; "UTC" when none was given. */
  timeZone: string;
  workflowName: string;
  /** 0 for the latest at each fire. */
  workflowVersion: number;
  input: unknown;
  labels: Record<string, string>;
  /** @default "SKIP" */
  overlapPolicy: OverlapPolicy;
  /** Bound of ALLOW_ALL. @default 10 */
  maxConcurrentRuns: number;
  /** @default "ALL" */
  catchUpPolicy: CatchUpPolicy;
  /** @default 60000 */
  catchUpWindowMs: number;
}

/** The spec as a request carries it, before defaults (0 / "" / undefined mean "the default"). */
export interface ScheduleSpecInput {
  cron: string;
  timeZone: string;
  workflowName: string;
  workflowVersion: number;
  input: unknown;
  labels: Record<string, string>;
  overlapPolicy: OverlapPolicy | undefined;
  maxConcurrentRuns: number;
  catchUpPolicy: CatchUpPolicy | undefined;
  catchUpWindowMs: number | undefined;
}

/** Labels the scheduler adds to every run of a schedule. */
export const SCHEDULE_LABEL = "schedule";
/** The fire's key (its time, or the trigger) as a run label. */
export const FIRE_LABEL = "schedule-fire";

export const DEFAULT_MAX_CONCURRENT_RUNS = 10;
export const MAX_MAX_CONCURRENT_RUNS = 1000;
export const DEFAULT_CATCH_UP_WINDOW_MS = 60_000;
export const MAX_CATCH_UP_WINDOW_MS = 366 * 24 * 3600 * 1000;
const SCHEDULE_ID = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/i;
const LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$/i;

/** Whether `id` is a schedule id (1 to 63 letters, digits, '.', '_' or '-'). */
export function isScheduleId(id: string): boolean {
  return SCHEDULE_ID.test(id);
}

/** INVALID_ARGUMENT naming `field` unless `id` is a schedule id CreateSchedule takes. */
export function checkScheduleId(id: string, field = "schedule_id"): void {
  if (id === "") throw ApiError.invalid(field, "a schedule id is required");
  if (!SCHEDULE_ID.test(id))
    throw ApiError.invalid(
      field,
      `1 to 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit${id.includes("/") ? " (ids with '/' are those of schedules declared in workflow definitions)" : ""}`,
    );
}

/**
 * The id of the schedule a workflow definition declares as `id`: `<workflow>/<id>`. No id that
 * CreateSchedule takes has a '/', so the two kinds never collide.
 */
export function declaredScheduleId(workflowName: string, id: string): string {
  return `${workflowName}/${id}`;
}

/** Whether `id` names a schedule: one of CreateSchedule's, or `<workflow>/<id>` of a definition's. */
export function isScheduleRef(id: string): boolean {
  const slash = id.indexOf("/");
  if (slash === -1) return SCHEDULE_ID.test(id);
  return NAME_PATTERN.test(id.slice(0, slash)) && SCHEDULE_ID.test(id.slice(slash + 1));
}

/** INVALID_ARGUMENT naming `field` unless `id` names a schedule ({@link isScheduleRef}). */
export function checkScheduleRef(id: string, field = "schedule_id"): void {
  if (id === "") throw ApiError.invalid(field, "a schedule id is required");
  if (!isScheduleRef(id))
    throw ApiError.invalid(
      field,
      "1 to 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit, or <workflow>/<id> for a schedule a workflow definition declares",
    );
}

/** INVALID_ARGUMENT naming `field` for a note that is too long or cannot be stored. */
export function checkNote(note: string, field = "note"): void {
  if (note.length > 1000) throw ApiError.invalid(field, "at most 1000 characters");
  if (note.includes("\u0000")) throw ApiError.invalid(field, "contains a NUL character (U+0000)");
}

/**
 * Validates a spec and applies its defaults; `prefix` is the request's path to it ("spec.").
 * Returns the spec and its parsed expression.
 */
export function normalizeSpec(
  input: ScheduleSpecInput,
  prefix = "spec.",
): { spec: ScheduleSpec; cron: CronSchedule } {
  const cron = parseCron(input.cron, input.timeZone, `${prefix}cron`, `${prefix}time_zone`);
  if (input.workflowName === "")
    throw ApiError.invalid(`${prefix}workflow_name`, "a workflow name is required");
  if (input.workflowName.length > 63 || input.workflowName.includes("\u0000"))
    throw ApiError.invalid(`${prefix}workflow_name`, "not a workflow name (at most 63 characters)");
  if (!Number.isInteger(input.workflowVersion) || input.workflowVersion < 0)
    throw ApiError.invalid(`${prefix}workflow_version`, "must be 0 (latest) or a positive version");
  const at = nulCharacterPath(input.input, `${prefix}input`);
  if (at !== undefined)
    throw ApiError.invalid(at, "contains a NUL character (U+0000), which cannot be stored");
  const labels = Object.entries(input.labels);
  if (labels.length > 30) throw ApiError.invalid(`${prefix}labels`, "at most 30 labels");
  for (const [k, v] of labels) {
    const field = `${prefix}labels[${k}]`;
    if (!LABEL_KEY.test(k))
      throw ApiError.invalid(field, "keys are 1-63 letters, digits, '.', '_', '/' or '-'");
    if (k === SCHEDULE_LABEL || k === FIRE_LABEL) throw ApiError.invalid(field, "is set by the scheduler");
    if (v.length > 255) throw ApiError.invalid(field, "values are at most 255 characters");
    if (v.includes("\u0000")) throw ApiError.invalid(field, "contains a NUL character (U+0000)");
  }
  const max = input.maxConcurrentRuns;
  if (!Number.isInteger(max) || max < 0 || max > MAX_MAX_CONCURRENT_RUNS)
    throw ApiError.invalid(
      `${prefix}max_concurrent_runs`,
      `must be from 1 to ${MAX_MAX_CONCURRENT_RUNS} (0 means ${DEFAULT_MAX_CONCURRENT_RUNS}); got ${max}`,
    );
  const window = input.catchUpWindowMs;
  if (window !== undefined && (!Number.isFinite(window) || window < 1000 || window > MAX_CATCH_UP_WINDOW_MS))
    throw ApiError.invalid(`${prefix}catch_up_window`, `must be from 1 second to 366 days; got ${window} ms`);
  return {
    cron,
    spec: {
      cron: cron.expression,
      timeZone: cron.timeZone,
      workflowName: input.workflowName,
      workflowVersion: input.workflowVersion,
      input: input.input ?? null,
      labels: { ...input.labels },
      overlapPolicy: input.overlapPolicy ?? "SKIP",
      maxConcurrentRuns: max === 0 ? DEFAULT_MAX_CONCURRENT_RUNS : max,
      catchUpPolicy: input.catchUpPolicy ?? "ALL",
      catchUpWindowMs: window ?? DEFAULT_CATCH_UP_WINDOW_MS,
    },
  };
}

/** The parsed expression of a stored spec (valid when stored; a runtime that lost a zone refuses it). */
export function cronOf(spec: ScheduleSpec): CronSchedule {
  return parseCron(spec.cron, spec.timeZone);
}
