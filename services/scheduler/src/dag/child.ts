/**
 * Child workflows in the definition language: a step with `workflow` ({"name": "charge-card",
 * "version": 3, "input": {"amount": "{{ input.amount }}"}, "onParentCancel": "cancel"}) starts a
 * run of another workflow and completes with that run's output when it SUCCEEDED, or fails with
 * CHILD_FAILED when it ended otherwise. It is not a task: no executor runs it and it holds no
 * executor slot while the child runs (core/children.ts).
 *
 * - `name` is required; the workflow need not exist when the parent is registered (it may be
 *   registered later): a step whose workflow (or version) does not exist when it starts fails
 *   with CHILD_WORKFLOW_NOT_FOUND.
 * - `version` is optional: without it the child runs the latest version registered when the
 *   step starts (not when the parent started); with it, that version.
 * - `input` is a template in the language of step inputs (run input, upstream outputs); the
 *   child's input schema is checked when it starts (a mismatch fails the step with
 *   CHILD_START_FAILED).
 * - `onParentCancel`: "cancel" (default) cancels the running child when the parent is cancelled
 *   or times out, and rolls back a child that succeeded when the parent rolls back (the child's
 *   own compensations, core/child-rollback.ts); "abandon" leaves the child alone in both cases.
 * - with `map` (map.ts), one child run per element: `workflow.input` may use `item` and `index`.
 *
 * A child step takes no `type`, `retry`, `timeouts`, `compensate`, `priority` or `concurrency`:
 * a failed child is not started again (retries belong to the child's own steps), and its time
 * limit is the child workflow's `timeout`.
 */
import type { SpecError } from "./errors.js";
import { isPlainObject, jsonTypeOf, pathJoin } from "./json.js";
import { compileTemplate, type Template } from "./template.js";

/** What a parent's cancellation does to its running children. */
export type OnParentCancel = "cancel" | "abandon";

/** A child workflow step as written. */
export interface ChildWorkflowSpec {
  name: string;
  /** Omitted: the latest version when the step starts. */
  version?: number;
  /** Templated input of the child run. */
  input?: unknown;
  /** Default "cancel". */
  onParentCancel?: OnParentCancel;
}

/** A compiled child workflow step. */
export interface CompiledChild {
  readonly name: string;
  /** Null: the latest version when the step starts. */
  readonly version: number | null;
  readonly onParentCancel: OnParentCancel;
}

/** What {@link checkChild} found: the compiled child and its task input template. */
export interface ChildDraft {
  readonly child: CompiledChild;
  /** Renders {"workflow", "version", "input"}: the step's task input (what the child starts with). */
  readonly input: Template;
  readonly inputPath: string;
}

/** How deep children may nest: a run of depth 10 (the root is 0) starts no child. */
export const MAX_CHILD_DEPTH = 10;

const CHILD_FIELDS = ["name", "version", "input", "onParentCancel"];
/** Fields a child workflow step may not have. */
const TASK_ONLY_FIELDS = [
  "type",
  "input",
  "retry",
  "timeouts",
  "compensate",
  "priority",
  "concurrency",
  "rateLimits",
  "wait",
  "sleep",
];

/**
 * Checks the `workflow` of a step (`step` as written, at `path`), with `namePattern` and `nameRule`
 * the rules of workflow names; undefined when it has none, or after reporting errors.
 */
export function checkChild(
  step: Record<string, unknown>,
  path: string,
  namePattern: RegExp,
  nameRule: string,
  maxVersion: number,
  errors: SpecError[],
): ChildDraft | undefined {
  if (step["workflow"] === undefined) return undefined;
  const before = errors.length;
  for (const field of TASK_ONLY_FIELDS) {
    if (step[field] !== undefined)
      errors.push({
        path: pathJoin(path, field),
        message: `a child workflow step has no ${field}: it runs another workflow (set input in workflow.input; a step sets only one of type, wait, sleep and workflow)`,
      });
  }
  const at = pathJoin(path, "workflow");
  const body = step["workflow"];
  if (!isPlainObject(body)) {
    errors.push({ path: at, message: `workflow must be an object, got ${jsonTypeOf(body)}` });
    return undefined;
  }
  for (const key of Object.keys(body))
    if (!CHILD_FIELDS.includes(key))
      errors.push({
        path: pathJoin(at, key),
        message: `unknown field ${JSON.stringify(key)} in workflow; allowed fields: ${CHILD_FIELDS.join(", ")}`,
      });
  const name = body["name"];
  const namePath = pathJoin(at, "name");
  if (name === undefined) errors.push({ path: namePath, message: "workflow.name is required" });
  else if (typeof name !== "string" || !namePattern.test(name))
    errors.push({
      path: namePath,
      message: `workflow name ${typeof name === "string" ? JSON.stringify(name.slice(0, 100)) : jsonTypeOf(name)} is invalid: ${nameRule}`,
    });
  const version = body["version"];
  if (
    version !== undefined &&
    (typeof version !== "number" || !Number.isInteger(version) || version < 1 || version > maxVersion)
  )
    errors.push({
      path: pathJoin(at, "version"),
      message: `workflow.version must be an integer from 1 to ${maxVersion} (omit it for the latest version), got ${typeof version === "number" ? String(version) : jsonTypeOf(version)}`,
    });
  const policy = body["onParentCancel"];
  if (policy !== undefined && policy !== "cancel" && policy !== "abandon")
    errors.push({
      path: pathJoin(at, "onParentCancel"),
      message: `workflow.onParentCancel must be "cancel" or "abandon", got ${typeof policy === "string" ? JSON.stringify(policy.slice(0, 100)) : jsonTypeOf(policy)}`,
    });
  const compiled = compileTemplate(
    { workflow: name, version: version ?? null, input: body["input"] ?? null },
    at,
  );
  // Only the input is a template: the name and version are literal (a name has no braces).
  errors.push(...compiled.errors);
  if (errors.length > before) return undefined;
  return {
    child: {
      name: name as string,
      version: (version as number | undefined) ?? null,
      onParentCancel: (policy as OnParentCancel | undefined) ?? "cancel",
    },
    input: compiled.template,
    inputPath: at,
  };
}
