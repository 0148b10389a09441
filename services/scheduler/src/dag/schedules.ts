/**
 * A workflow's `schedules`: cron schedules declared in its definition. Each is a ScheduleService
 * schedule whose workflow is the one declaring it (the fields of ScheduleSpec, written as the rest
 * of a definition is: policies in kebab case as the CLI takes them, the window as a duration).
 * Pure: validation and the normalized spec of each schedule; the schedules/ module keeps them in
 * step with the workflow's latest version (schedules/declared.ts).
 */
import { isApiError } from "@nexusflow/common";
import { DurationError, parseDuration } from "@nexusflow/common/duration";
import {
  MAX_CATCH_UP_WINDOW_MS,
  isScheduleId,
  normalizeSpec,
  type CatchUpPolicy,
  type OverlapPolicy,
  type ScheduleSpec,
} from "./schedule-spec.js";
import type { SpecError } from "./errors.js";
import { isPlainObject, jsonTypeOf, pathJoin } from "./json.js";
import { validateAgainstSchema, type CompiledSchema } from "./schema.js";

/** A schedule as written in a definition. */
export interface ScheduleDeclarationSpec {
  /** Unique in the list; the schedule's id in ScheduleService is `<workflow>/<id>`. */
  id: string;
  cron: string;
  /** IANA zone; UTC when absent. */
  timeZone?: string;
  /** Input of every run (null when absent). */
  input?: unknown;
  labels?: Record<string, string>;
  /** @default "skip" */
  overlapPolicy?: string;
  /** Bound of "allow-all". @default 10 */
  maxConcurrentRuns?: number;
  /** @default "all" */
  catchUpPolicy?: string;
  /** A duration. @default "60s" */
  catchUpWindow?: string;
}

/** A validated declaration: its id in the definition and the schedule's normalized spec. */
export interface DeclaredSchedule {
  /** The id as written. */
  readonly id: string;
  /** Its position in `schedules`. */
  readonly index: number;
  /** The spec a ScheduleService schedule of it has (workflow and version: the declaring one). */
  readonly spec: ScheduleSpec;
}

/** Most schedules one workflow declares. */
export const MAX_DECLARED_SCHEDULES = 20;

const FIELDS = [
  "id",
  "cron",
  "timeZone",
  "input",
  "labels",
  "overlapPolicy",
  "maxConcurrentRuns",
  "catchUpPolicy",
  "catchUpWindow",
];

/** The overlap policies by the name a definition (and the CLI) gives them. */
export const OVERLAP_POLICIES: Readonly<Record<string, OverlapPolicy>> = {
  skip: "SKIP",
  "buffer-one": "BUFFER_ONE",
  "allow-all": "ALLOW_ALL",
  "cancel-other": "CANCEL_OTHER",
  "terminate-other": "TERMINATE_OTHER",
};
/** The catch-up policies by the name a definition (and the CLI) gives them. */
export const CATCH_UP_POLICIES: Readonly<Record<string, CatchUpPolicy>> = {
  off: "OFF",
  last: "LAST",
  all: "ALL",
};

/** ScheduleService's field names (normalizeSpec's) as a definition writes them. */
const FIELD_OF: Readonly<Record<string, string>> = {
  cron: "cron",
  time_zone: "timeZone",
  labels: "labels",
  max_concurrent_runs: "maxConcurrentRuns",
  catch_up_window: "catchUpWindow",
  input: "input",
};

/**
 * `field` of normalizeSpec (`<at>.time_zone`, `<at>.labels[k]`) as a definition path; undefined
 * for the workflow's name and version (refused at `$.name` and `$.version` already).
 */
function definitionPath(at: string, field: string): string | undefined {
  const rest = field.startsWith(`${at}.`) ? field.slice(at.length + 1) : field;
  const m = /^([a-z_]+)(.*)$/.exec(rest);
  if (m === null) return at;
  if (m[1] === "workflow_name" || m[1] === "workflow_version") return undefined;
  const name = FIELD_OF[m[1] as string];
  if (name === undefined) return at;
  const tail = m[2] as string;
  // labels[k] names a key: the definition's path joins it like any other key.
  const label = /^\[(.*)\]$/.exec(tail);
  if (name === "labels" && label !== null) return pathJoin(pathJoin(at, "labels"), label[1] as string);
  return `${pathJoin(at, name)}${tail}`;
}

/**
 * Validates a definition's `schedules` (at `path`) for workflow `name` at `version`, each run input
 * against `inputSchema` when there is one; returns the declarations and every problem found.
 */
export function checkSchedules(
  value: unknown,
  path: string,
  workflow: { name: string; version: number },
  inputSchema: CompiledSchema | null,
): { schedules: DeclaredSchedule[]; errors: SpecError[] } {
  const errors: SpecError[] = [];
  const schedules: DeclaredSchedule[] = [];
  const err = (at: string, message: string): void => {
    errors.push({ path: at, message });
  };
  if (!Array.isArray(value)) {
    err(path, `schedules must be an array of schedules, got ${jsonTypeOf(value)}`);
    return { schedules, errors };
  }
  if (value.length > MAX_DECLARED_SCHEDULES) {
    err(path, `a workflow declares at most ${MAX_DECLARED_SCHEDULES} schedules, got ${value.length}`);
    return { schedules, errors };
  }
  const firstOf = new Map<string, number>();
  value.forEach((raw: unknown, index) => {
    const at = `${path}[${index}]`;
    if (!isPlainObject(raw)) {
      err(at, `a schedule must be an object, got ${jsonTypeOf(raw)}`);
      return;
    }
    const before = errors.length;
    for (const key of Object.keys(raw))
      if (!FIELDS.includes(key))
        err(
          pathJoin(at, key),
          `unknown field ${JSON.stringify(key.slice(0, 100))} in schedule; allowed fields: ${FIELDS.join(", ")}`,
        );
    const id = raw["id"];
    if (id === undefined) err(pathJoin(at, "id"), "id is required");
    else if (typeof id !== "string") err(pathJoin(at, "id"), `id must be a string, got ${jsonTypeOf(id)}`);
    else if (!isScheduleId(id))
      err(
        pathJoin(at, "id"),
        `id ${JSON.stringify(id.slice(0, 100))} is invalid: 1 to 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit`,
      );
    else {
      const first = firstOf.get(id);
      if (first !== undefined)
        err(
          pathJoin(at, "id"),
          `duplicate schedule id ${JSON.stringify(id)} (first used at ${path}[${first}])`,
        );
      else firstOf.set(id, index);
    }
    const text = (field: string): string | undefined => {
      const v = raw[field];
      if (v === undefined || typeof v === "string") return v;
      err(pathJoin(at, field), `${field} must be a string, got ${jsonTypeOf(v)}`);
      return undefined;
    };
    const cron = text("cron");
    if (raw["cron"] === undefined) err(pathJoin(at, "cron"), "cron (the expression) is required");
    const timeZone = text("timeZone");
    const policy = <P>(field: string, table: Readonly<Record<string, P>>): P | undefined => {
      const v = text(field);
      if (v === undefined) return undefined;
      const found = Object.hasOwn(table, v) ? table[v] : undefined;
      if (found === undefined)
        err(
          pathJoin(at, field),
          `${field} must be one of ${Object.keys(table).join(", ")}, got ${JSON.stringify(v.slice(0, 100))}`,
        );
      return found;
    };
    const overlapPolicy = policy("overlapPolicy", OVERLAP_POLICIES);
    const catchUpPolicy = policy("catchUpPolicy", CATCH_UP_POLICIES);
    let maxConcurrentRuns = 0;
    const max = raw["maxConcurrentRuns"];
    if (max !== undefined) {
      if (typeof max === "number" && Number.isInteger(max) && max >= 1 && max <= 1000)
        maxConcurrentRuns = max;
      else
        err(
          pathJoin(at, "maxConcurrentRuns"),
          `maxConcurrentRuns must be an integer from 1 to 1000, got ${JSON.stringify(max) ?? jsonTypeOf(max)}`,
        );
    }
    let catchUpWindowMs: number | undefined;
    const window = text("catchUpWindow");
    if (window !== undefined) {
      try {
        catchUpWindowMs = parseDuration(window, MAX_CATCH_UP_WINDOW_MS);
      } catch (e) {
        if (!(e instanceof DurationError)) throw e;
        err(pathJoin(at, "catchUpWindow"), `catchUpWindow: ${e.message}`);
      }
    }
    const labels = raw["labels"];
    if (labels !== undefined) {
      if (!isPlainObject(labels))
        err(pathJoin(at, "labels"), `labels must be an object of strings, got ${jsonTypeOf(labels)}`);
      else
        for (const [k, v] of Object.entries(labels))
          if (typeof v !== "string")
            err(
              pathJoin(pathJoin(at, "labels"), k),
              `a label's value must be a string, got ${jsonTypeOf(v)}`,
            );
    }
    const input = raw["input"] ?? null;
    const inputErrors =
      inputSchema === null ? [] : validateAgainstSchema(inputSchema, input, pathJoin(at, "input"));
    if (errors.length > before || typeof id !== "string" || cron === undefined) {
      errors.push(...inputErrors);
      return;
    }
    try {
      const { spec } = normalizeSpec(
        {
          cron,
          timeZone: timeZone ?? "",
          workflowName: workflow.name,
          workflowVersion: workflow.version,
          input,
          labels: { ...(labels as Record<string, string> | undefined) },
          overlapPolicy,
          maxConcurrentRuns,
          catchUpPolicy,
          catchUpWindowMs,
        },
        `${at}.`,
      );
      if (inputErrors.length === 0) schedules.push(Object.freeze({ id, index, spec }));
    } catch (e) {
      if (!isApiError(e)) throw e;
      const v = e.violations[0];
      const field = v === undefined ? at : definitionPath(at, v.field);
      if (field !== undefined) err(field, v?.description ?? e.message);
    }
    errors.push(...inputErrors);
  });
  return { schedules, errors };
}
