/**
 * compileWorkflow: validates a workflow definition and, when it is sound, precomputes everything
 * the evaluator needs. All problems are collected in one pass (with JSON paths) so an author can fix
 * a definition in one round trip instead of one error at a time.
 */
import type { SpecError } from "./errors.js";
import { expressionPaths } from "./expr.js";
import type { Expr, PathExpr } from "./expr.js";
import { analyzeGraph } from "./graph.js";
import { createHash } from "node:crypto";
import { canonicalJson, isPlainObject, jsonTypeOf, pathJoin } from "./json.js";
import { surrogatePairAt, unitName } from "./strings.js";
import { resolveRetryPolicy } from "./retry.js";
import type { ResolvedRetryPolicy } from "./retry.js";
import { compileSchema, validateAgainstSchema } from "./schema.js";
import type { CompiledSchema } from "./schema.js";
import {
  MAX_DEPENDENCIES,
  MAX_DESCRIPTION_LENGTH,
  MAX_SPEC_BYTES,
  MAX_SPEC_DEPTH,
  MAX_STEPS,
  MAX_VERSION,
  NAME_PATTERN,
  STEP_ID_PATTERN,
} from "./spec.js";
import type {
  CompiledCompensation,
  CompiledConcurrencyLimit,
  CompiledRateLimit,
  CompiledStep,
  CompiledWorkflow,
  ResolvedTimeouts,
  RetryPolicy,
  StepSpec,
  StepTimeouts,
  WorkflowSpec,
} from "./spec.js";
import { checkChild, type CompiledChild } from "./child.js";
import { checkMap, type CompiledMap } from "./map.js";
import { checkDurable, type CompiledDurable } from "./durable.js";
import { templatePaths } from "./template.js";
import { checkTriggers } from "./triggers.js";
import { checkSchedules } from "./schedules.js";
import { checkFairness, type CompiledFairShare } from "./fair-shares.js";
import type { Template } from "./template.js";

/** Result of {@link compileWorkflow}: the compiled workflow, or every problem found. */
export type CompileResult =
  | { readonly ok: true; readonly workflow: CompiledWorkflow }
  | { readonly ok: false; readonly errors: SpecError[] };

/** Most entries in `nonRetryableErrors`. */
import {
  COMPENSATE_FIELDS,
  Checker,
  DEFAULTS_FIELDS,
  NAME_RULE,
  STEP_FIELDS,
  STEP_ID_RULE,
  WORKFLOW_FIELDS,
} from "./checker.js";
export { MAX_ERROR_TYPE_LENGTH, MAX_NON_RETRYABLE_ERRORS, MAX_PRIORITY, MIN_PRIORITY } from "./checker.js";

/** Reads the document: JSON text is parsed, anything else is copied through JSON so the caller's object is never shared. */
function readDocument(json: unknown, checker: Checker): unknown {
  let text: string | undefined;
  if (typeof json === "string") {
    text = json;
  } else {
    try {
      text = JSON.stringify(json);
    } catch (error) {
      checker.err("$", `the definition is not JSON-serializable: ${(error as Error).message}`);
      return undefined;
    }
    if (text === undefined) {
      checker.err("$", `the definition must be a JSON object, got ${typeof json}`);
      return undefined;
    }
  }
  // Each character is at least one UTF-8 byte, so the cheap length test settles most cases.
  const bytes = text.length > MAX_SPEC_BYTES ? text.length : Buffer.byteLength(text, "utf8");
  if (bytes > MAX_SPEC_BYTES) {
    checker.err("$", `the definition is ${bytes} bytes of JSON; the limit is ${MAX_SPEC_BYTES} (1 MiB)`);
    return undefined;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    checker.err("$", `the definition is not valid JSON: ${(error as Error).message}`);
    return undefined;
  }
}

/**
 * Finds a value nested deeper than the limit and returns its path. Iterative, because deep input
 * must not overflow the stack; paths are only built on the second walk, once something is too deep.
 */
function tooDeep(doc: unknown): string | undefined {
  const walk = (withPaths: boolean): string | undefined => {
    const stack: [unknown, number, string][] = [[doc, 0, "$"]];
    while (stack.length > 0) {
      const [value, depth, path] = stack.pop() as [unknown, number, string];
      if (typeof value !== "object" || value === null) continue;
      if (depth >= MAX_SPEC_DEPTH) return path;
      if (Array.isArray(value)) {
        value.forEach((item, i) => stack.push([item, depth + 1, withPaths ? pathJoin(path, i) : path]));
      } else {
        for (const [key, item] of Object.entries(value))
          stack.push([item, depth + 1, withPaths ? pathJoin(path, key) : path]);
      }
    }
    return undefined;
  };
  return walk(false) === undefined ? undefined : walk(true);
}

/** Most lone surrogate errors reported for one definition; one more error says how many were left out. */
export const MAX_SURROGATE_ERRORS = 20;

/** The 0-based position of the first lone surrogate in `s` (which is not well-formed). */
function loneSurrogateAt(s: string): number {
  for (let at = 0; at < s.length; at++) {
    const units = surrogatePairAt(s, at);
    if (units === 0) return at;
    if (units === 2) at++;
  }
  return -1;
}

/** Why a string with a lone surrogate at `at` is refused; `what` is "a string" or "a key". */
function loneSurrogateMessage(what: string, s: string, at: number): string {
  return (
    `${what} holds a lone surrogate ${unitName(s.charCodeAt(at))} at position ${at}: a high surrogate ` +
    `(U+D800-U+DBFF) must be followed by a low one (U+DC00-U+DFFF), and a low one must follow a high ` +
    `one, as no UTF-8 text, protobuf string or PostgreSQL value can hold one alone`
  );
}

/** Whether every string and key of the document is well-formed UTF-16. */
function allWellFormed(doc: unknown): boolean {
  const stack: unknown[] = [doc];
  while (stack.length > 0) {
    const value = stack.pop();
    if (typeof value === "string") {
      if (!value.isWellFormed()) return false;
    } else if (Array.isArray(value)) {
      for (const item of value as unknown[]) stack.push(item);
    } else if (isPlainObject(value)) {
      for (const key of Object.keys(value)) {
        if (!key.isWellFormed()) return false;
        stack.push(value[key]);
      }
    }
  }
  return true;
}

/**
 * Every string and key of the document holding a lone surrogate (an unpaired UTF-16 half, as JSON
 * text may write with a `\uD800` escape), located by JSON path: such a definition could be neither
 * stored (PostgreSQL's jsonb refuses it) nor sent (protobuf strings are UTF-8), wherever the string
 * is (an id, a description, a constant input), and no message about it may quote the string raw.
 * Iterative; paths are only built on a second walk, once one is found.
 */
function loneSurrogates(doc: unknown): SpecError[] {
  if (allWellFormed(doc)) return [];
  const errors: SpecError[] = [];
  let more = 0;
  const report = (path: string, message: string): void => {
    if (errors.length < MAX_SURROGATE_ERRORS) errors.push({ path, message });
    else more++;
  };
  // A key is checked with its value, so that errors come in document order.
  const stack: [value: unknown, path: string, key: string | undefined][] = [[doc, "$", undefined]];
  while (stack.length > 0) {
    const [value, path, key] = stack.pop() as [unknown, string, string | undefined];
    if (key !== undefined && !key.isWellFormed())
      report(path, loneSurrogateMessage("the key", key, loneSurrogateAt(key)));
    if (typeof value === "string") {
      if (!value.isWellFormed())
        report(path, loneSurrogateMessage("a string", value, loneSurrogateAt(value)));
    } else if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) stack.push([value[i], pathJoin(path, i), undefined]);
    } else if (isPlainObject(value)) {
      const keys = Object.keys(value);
      // pathJoin writes a key with a lone surrogate as a JSON string, whose escapes keep the path well-formed.
      for (let k = keys.length - 1; k >= 0; k--) {
        const name = keys[k] as string;
        stack.push([value[name], pathJoin(path, name), name]);
      }
    }
  }
  if (more > 0)
    errors.push({ path: "$", message: `${more} more strings or keys hold a lone surrogate (not listed)` });
  return errors;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const item of Object.values(value)) deepFreeze(item);
  }
  return value;
}

interface StepDraft {
  readonly raw: Record<string, unknown>;
  readonly path: string;
  readonly id: string | undefined;
  readonly type: string | undefined;
  readonly dependsOn: readonly string[];
  readonly when: Expr | null;
  readonly input: Template | null;
  /** A wait or sleep step (durable.ts); null for a task. */
  readonly durable: CompiledDurable | null;
  /** A child workflow step (child.ts); null otherwise. */
  readonly child: CompiledChild | null;
  /** A map step (map.ts); null otherwise. */
  readonly map: CompiledMap | null;
  /** A wait for an event's filter and its path (durable.ts); null otherwise. */
  readonly waitFilter: { readonly expr: Expr; readonly path: string } | null;
  /** Where references of `input` are reported. */
  readonly inputPath: string;
  readonly retryOk: boolean;
  readonly timeouts: Partial<Record<keyof StepTimeouts, number>>;
  readonly priority: number | undefined;
  readonly concurrency: readonly Omit<CompiledConcurrencyLimit, "space" | "scope">[];
  readonly rateLimits: readonly CompiledRateLimit[];
  readonly compensate: {
    type: string;
    input: Template | null;
    retryOk: boolean;
    raw: Record<string, unknown>;
  } | null;
}

function checkStep(checker: Checker, value: unknown, path: string): StepDraft | undefined {
  const step = checker.object(value, path, "step", STEP_FIELDS);
  if (step === undefined) return undefined;
  const idPath = pathJoin(path, "id");
  const typePath = pathJoin(path, "type");
  let id: string | undefined;
  if (step["id"] === undefined) checker.err(idPath, "step id is required");
  else if (checker.name(step["id"], idPath, "step id", STEP_ID_PATTERN, STEP_ID_RULE)) {
    id = step["id"];
  }
  let type: string | undefined;
  const child =
    step["workflow"] === undefined
      ? undefined
      : checkChild(step, path, NAME_PATTERN, NAME_RULE, MAX_VERSION, checker.errors);
  const durable = step["workflow"] === undefined ? checkDurable(step, path, checker.errors) : undefined;
  if (
    child !== undefined ||
    durable !== undefined ||
    step["workflow"] !== undefined ||
    step["wait"] !== undefined ||
    step["sleep"] !== undefined
  )
    type = "";
  else if (step["type"] === undefined)
    checker.err(
      typePath,
      "step type is required (or wait, or sleep: a durable wait; or workflow: a child workflow)",
    );
  else if (checker.name(step["type"], typePath, "task type", NAME_PATTERN, NAME_RULE)) {
    type = step["type"];
  }

  const dependsOn: string[] = [];
  const deps = step["dependsOn"];
  const depsPath = pathJoin(path, "dependsOn");
  if (deps !== undefined) {
    if (!Array.isArray(deps))
      checker.err(depsPath, `dependsOn must be an array of step ids, got ${jsonTypeOf(deps)}`);
    else {
      if (deps.length > MAX_DEPENDENCIES) {
        checker.err(depsPath, `dependsOn has ${deps.length} entries; the limit is ${MAX_DEPENDENCIES}`);
      }
      // Wrong types keep their slot (as "") so later checks can still report entries by their index.
      deps.forEach((dep: unknown, i) => {
        if (typeof dep === "string") dependsOn.push(dep);
        else {
          checker.err(
            pathJoin(depsPath, i),
            `dependsOn entries must be step ids (strings), got ${jsonTypeOf(dep)}`,
          );
          dependsOn.push("");
        }
      });
    }
  }

  const when =
    step["when"] === undefined
      ? null
      : (checker.expression(step["when"], pathJoin(path, "when"), "when") ?? null);
  const input =
    child !== undefined
      ? child.input
      : durable !== undefined
        ? durable.input
        : step["input"] === undefined
          ? null
          : checker.template(step["input"], pathJoin(path, "input"));
  const retryOk = step["retry"] === undefined || checker.retry(step["retry"], pathJoin(path, "retry"));
  const timeouts =
    step["timeouts"] === undefined
      ? {}
      : (checker.timeouts(step["timeouts"], pathJoin(path, "timeouts")) ?? {});

  let compensate: StepDraft["compensate"] = null;
  if (step["compensate"] !== undefined) {
    const compPath = pathJoin(path, "compensate");
    const comp = checker.object(step["compensate"], compPath, "compensate", COMPENSATE_FIELDS);
    if (comp !== undefined) {
      const ctPath = pathJoin(compPath, "type");
      let ctype = "";
      if (comp["type"] === undefined) checker.err(ctPath, "compensate.type is required");
      else if (checker.name(comp["type"], ctPath, "task type", NAME_PATTERN, NAME_RULE)) {
        ctype = comp["type"];
      }
      const cinput =
        comp["input"] === undefined ? null : checker.template(comp["input"], pathJoin(compPath, "input"));
      const cretryOk =
        comp["retry"] === undefined || checker.retry(comp["retry"], pathJoin(compPath, "retry"));
      compensate = { type: ctype, input: cinput, retryOk: cretryOk, raw: comp };
    }
  }
  const priority = checker.priority(step["priority"], pathJoin(path, "priority"));
  const concurrency =
    step["concurrency"] === undefined
      ? []
      : checker.concurrency(step["concurrency"], pathJoin(path, "concurrency"));
  const rateLimits =
    step["rateLimits"] === undefined
      ? []
      : checker.rateLimits(step["rateLimits"], pathJoin(path, "rateLimits"));
  return {
    raw: step,
    path,
    id,
    type,
    dependsOn,
    when,
    input,
    durable: durable?.durable ?? null,
    child: child?.child ?? null,
    map: step["map"] === undefined ? null : (checkMap(step, path, checker.errors) ?? null),
    waitFilter: durable?.filter ?? null,
    inputPath: child?.inputPath ?? durable?.inputPath ?? pathJoin(path, "input"),
    retryOk,
    timeouts,
    priority,
    concurrency,
    rateLimits,
    compensate,
  };
}

function mergeTimeouts(
  defaults: Partial<Record<keyof StepTimeouts, number>>,
  step: Partial<Record<keyof StepTimeouts, number>>,
): ResolvedTimeouts {
  return Object.freeze({
    scheduleToStartMs: step.scheduleToStart ?? defaults.scheduleToStart ?? null,
    startToCloseMs: step.startToClose ?? defaults.startToClose ?? null,
    heartbeatMs: step.heartbeat ?? defaults.heartbeat ?? null,
  });
}

/** Where a reference appears, which decides what it may point at. */
interface ReferenceSite {
  /** Spec index of the step the reference belongs to; undefined for the workflow `output`. */
  readonly step: number | undefined;
  /** True inside `compensate.input`: `step.*` and the step's own `steps.<id>` are allowed. */
  readonly compensation: boolean;
  /** True inside a map step's `input`: `item` and `index` are allowed. */
  readonly element?: boolean;
  /** True inside a wait's `filter`: `event` is allowed. */
  readonly event?: boolean;
}

/**
 * Validates a workflow definition (an object, or JSON text as received by the API) and compiles it.
 * Never throws for bad input: every problem found is returned, each with a JSON path.
 */
export function compileWorkflow(json: unknown): CompileResult {
  const checker = new Checker();
  const doc = readDocument(json, checker);
  if (checker.errors.length > 0) return { ok: false, errors: checker.errors };
  const deepPath = tooDeep(doc);
  if (deepPath !== undefined) {
    // Later passes recurse; stop here rather than risk the stack on a hostile document.
    return {
      ok: false,
      errors: [{ path: deepPath, message: `nested deeper than ${MAX_SPEC_DEPTH} levels` }],
    };
  }
  // Before any other check: they would quote such strings in their messages, which must stay
  // well-formed (a message or path with a lone surrogate cannot be sent either).
  const surrogates = loneSurrogates(doc);
  if (surrogates.length > 0) return { ok: false, errors: surrogates };
  const spec = checker.object(doc, "$", "workflow", WORKFLOW_FIELDS);
  if (spec === undefined) return { ok: false, errors: checker.errors };

  if (spec["name"] === undefined) checker.err("$.name", "workflow name is required");
  else checker.name(spec["name"], "$.name", "workflow name", NAME_PATTERN, NAME_RULE);
  if (spec["version"] === undefined) checker.err("$.version", "version is required");
  else checker.integer(spec["version"], "$.version", "version", 1, MAX_VERSION);
  const description = spec["description"];
  if (description !== undefined && checker.string(description, "$.description", "description")) {
    if (description.length > MAX_DESCRIPTION_LENGTH) {
      checker.err("$.description", `description is longer than ${MAX_DESCRIPTION_LENGTH} characters`);
    }
  }
  let inputSchema: CompiledSchema | null = null;
  if (spec["input"] !== undefined) {
    if (!isPlainObject(spec["input"]))
      checker.err("$.input", `input must be a JSON Schema object, got ${jsonTypeOf(spec["input"])}`);
    else inputSchema = compileSchema(spec["input"], "$.input", checker.errors);
  }
  let defaultsRetryOk = true;
  let defaultTimeouts: Partial<Record<keyof StepTimeouts, number>> = {};
  let defaultsRetry: RetryPolicy | undefined;
  let defaultPriority = 0;
  if (spec["defaults"] !== undefined) {
    const defaults = checker.object(spec["defaults"], "$.defaults", "defaults", DEFAULTS_FIELDS);
    if (defaults !== undefined) {
      if (defaults["retry"] !== undefined) {
        defaultsRetryOk = checker.retry(defaults["retry"], "$.defaults.retry");
        defaultsRetry = defaults["retry"] as RetryPolicy;
      }
      if (defaults["timeouts"] !== undefined)
        defaultTimeouts = checker.timeouts(defaults["timeouts"], "$.defaults.timeouts") ?? {};
      defaultPriority = checker.priority(defaults["priority"], "$.defaults.priority") ?? 0;
    }
  }
  const timeoutMs =
    spec["timeout"] === undefined
      ? null
      : (checker.duration(spec["timeout"], "$.timeout", "timeout") ?? null);
  const output = spec["output"] === undefined ? null : checker.template(spec["output"], "$.output");
  const concurrency =
    spec["concurrency"] === undefined ? [] : checker.concurrency(spec["concurrency"], "$.concurrency");
  // A run's keys are evaluated when it starts: only its input and run.* exist then.
  for (const limit of concurrency)
    for (const ref of expressionPaths(limit.key))
      if (ref.root !== "input" && ref.root !== "run")
        checker.err(
          pathJoin(limit.path, "key"),
          `${ref.text}: a workflow's concurrency key is evaluated when the run starts, so it may use input and run only (put the limit on a step to key it on a step's output)`,
        );

  const fairness =
    spec["fairness"] === undefined ? [] : checkFairness(checker, spec["fairness"], "$.fairness");
  if (spec["triggers"] !== undefined)
    for (const e of checkTriggers(spec["triggers"], "$.triggers").errors) checker.err(e.path, e.message);
  if (spec["schedules"] !== undefined) {
    const workflow = { name: String(spec["name"]), version: Number(spec["version"]) };
    for (const e of checkSchedules(spec["schedules"], "$.schedules", workflow, inputSchema).errors)
      checker.err(e.path, e.message);
  }

  // Steps, first pass: each step on its own.
  const drafts: (StepDraft | undefined)[] = [];
  const rawSteps = spec["steps"];
  if (rawSteps === undefined) checker.err("$.steps", "steps is required");
  else if (!Array.isArray(rawSteps))
    checker.err("$.steps", `steps must be an array, got ${jsonTypeOf(rawSteps)}`);
  else {
    if (rawSteps.length === 0) checker.err("$.steps", "a workflow needs at least one step");
    if (rawSteps.length > MAX_STEPS)
      checker.err("$.steps", `a workflow has at most ${MAX_STEPS} steps, got ${rawSteps.length}`);
    rawSteps.forEach((raw: unknown, i) => drafts.push(checkStep(checker, raw, pathJoin("$.steps", i))));
  }

  // Second pass: ids and dependencies, which need every id.
  const indexById = new Map<string, number>();
  drafts.forEach((draft, i) => {
    if (draft?.id === undefined) return;
    const first = indexById.get(draft.id);
    if (first === undefined) indexById.set(draft.id, i);
    else
      checker.err(
        pathJoin(draft.path, "id"),
        `duplicate step id ${JSON.stringify(draft.id)} (first used at $.steps[${first}])`,
      );
  });
  const deps: number[][] = drafts.map((draft) => {
    const out: number[] = [];
    if (draft === undefined) return out;
    const seen = new Set<string>();
    draft.dependsOn.forEach((dep, k) => {
      if (dep === "") return;
      const at = (): string => `${draft.path}.dependsOn[${k}]`;
      const target = indexById.get(dep);
      if (seen.has(dep)) checker.err(at(), `${JSON.stringify(dep)} is listed more than once`);
      else if (target === undefined)
        checker.err(at(), `unknown step ${JSON.stringify(dep)}${checker.suggest(dep, indexById.keys())}`);
      else if (dep === draft.id) checker.err(at(), `step ${JSON.stringify(dep)} cannot depend on itself`);
      else out.push(target);
      seen.add(dep);
    });
    return out;
  });

  // Graph analysis is skipped past the step limit: its cost grows with steps², and the spec is rejected anyway.
  const graph = drafts.length <= MAX_STEPS ? analyzeGraph(deps) : undefined;
  const idOf = (i: number): string => drafts[i]?.id ?? `#${i}`;
  for (const cycle of graph?.cycles ?? []) {
    const start = cycle[0] as number;
    const next = cycle[1] as number;
    const draft = drafts[start] as StepDraft;
    const k = draft.dependsOn.indexOf(idOf(next));
    const names = cycle.map(idOf).join(" -> ");
    checker.err(
      k >= 0 ? pathJoin(pathJoin(draft.path, "dependsOn"), k) : draft.path,
      `dependency cycle: ${names} (each step depends on the next one)`,
    );
  }

  // References in templates and expressions must point at steps that are certain to have finished.
  const checkReference = (site: ReferenceSite, at: string, ref: PathExpr): void => {
    if (ref.root === "item" || ref.root === "index") {
      if (site.element !== true)
        checker.err(at, `${ref.text}: item and index are only available in the input of a map step`);
      return;
    }
    if (ref.root === "event") {
      if (site.event !== true)
        checker.err(
          at,
          `${ref.text}: event.* is only available in a trigger's filter and a wait's filter; a run started by an event has its payload as input`,
        );
      return;
    }
    if (ref.root === "step") {
      if (!site.compensation)
        checker.err(at, `${ref.text}: step.* is only available in compensate.input; use steps.<id>.output`);
      return;
    }
    if (ref.root !== "steps") return;
    const id = String(ref.segments[0]);
    const target = indexById.get(id);
    if (target === undefined) {
      checker.err(
        at,
        `${ref.text} refers to unknown step ${JSON.stringify(id)}${checker.suggest(id, indexById.keys())}`,
      );
      return;
    }
    if (site.step === undefined || graph === undefined) return;
    if (target === site.step) {
      if (!site.compensation)
        checker.err(
          at,
          `${ref.text}: a step cannot refer to itself (in compensate.input, step.output is its own output)`,
        );
      return;
    }
    if (graph.isUpstream(site.step, target) === false) {
      checker.err(
        at,
        `${ref.text} refers to step ${JSON.stringify(id)}, which is not upstream of ${JSON.stringify(idOf(site.step))}: add it to dependsOn (directly or through another step)`,
      );
    }
  };
  // One rate limit is one set of buckets: its steps in this definition must declare it alike.
  const declared = new Map<string, CompiledRateLimit>();
  for (const draft of drafts)
    for (const limit of draft?.rateLimits ?? []) {
      const first = declared.get(limit.name);
      if (first === undefined) declared.set(limit.name, limit);
      else if (first.rate !== limit.rate || first.perMs !== limit.perMs || first.burst !== limit.burst)
        checker.err(
          limit.path,
          `rate limit "${limit.name}" is declared at ${first.path} with rate ${first.rate} per ${first.perMs} ms, burst ${first.burst}; here with rate ${limit.rate} per ${limit.perMs} ms, burst ${limit.burst}: declare it alike (one limit, one set of buckets)`,
        );
    }
  drafts.forEach((draft, i) => {
    if (draft === undefined) return;
    const site: ReferenceSite = { step: i, compensation: false };
    if (draft.when !== null) {
      for (const ref of expressionPaths(draft.when)) checkReference(site, pathJoin(draft.path, "when"), ref);
    }
    if (draft.input !== null) {
      const inputSite = draft.map === null ? site : { ...site, element: true };
      for (const { at, path } of templatePaths(draft.input, draft.inputPath))
        checkReference(inputSite, at, path);
    }
    if (draft.waitFilter !== null)
      for (const ref of expressionPaths(draft.waitFilter.expr))
        checkReference({ ...site, event: true }, draft.waitFilter.path, ref);
    if (draft.map !== null)
      for (const ref of expressionPaths(draft.map.items))
        checkReference(site, pathJoin(pathJoin(draft.path, "map"), "items"), ref);
    for (const limit of draft.concurrency)
      for (const ref of expressionPaths(limit.key)) checkReference(site, pathJoin(limit.path, "key"), ref);
    for (const limit of draft.rateLimits)
      if (limit.key !== null)
        for (const ref of expressionPaths(limit.key)) checkReference(site, pathJoin(limit.path, "key"), ref);
    if (draft.compensate?.input != null) {
      const base = pathJoin(pathJoin(draft.path, "compensate"), "input");
      for (const { at, path } of templatePaths(draft.compensate.input, base)) {
        checkReference({ step: i, compensation: true }, at, path);
      }
    }
  });
  if (output !== null) {
    for (const { at, path } of templatePaths(output, "$.output"))
      checkReference({ step: undefined, compensation: false }, at, path);
  }

  // Effective policies: a step may combine with the defaults into an inconsistent policy.
  const effectiveRetry = (layer: unknown, ok: boolean, path: string): ResolvedRetryPolicy | undefined => {
    if (!ok || !defaultsRetryOk) return undefined;
    const policy = resolveRetryPolicy(defaultsRetry, layer as RetryPolicy | undefined);
    if (policy.maxIntervalMs < policy.initialIntervalMs) {
      const field =
        (layer as RetryPolicy | undefined)?.initialInterval !== undefined ? "initialInterval" : "maxInterval";
      checker.err(
        pathJoin(path, field),
        `initialInterval (${policy.initialIntervalMs}ms) is longer than maxInterval (${policy.maxIntervalMs}ms) once merged with defaults.retry`,
      );
      return undefined;
    }
    return policy;
  };
  const defaultPolicy = effectiveRetry(undefined, true, "$.defaults.retry");
  const stepPolicies = drafts.map((draft) => {
    if (draft === undefined) return undefined;
    const retry =
      draft.raw["retry"] === undefined
        ? defaultPolicy
        : effectiveRetry(draft.raw["retry"], draft.retryOk, pathJoin(draft.path, "retry"));
    const comp = draft.compensate;
    const compRetry =
      comp === null
        ? undefined
        : comp.raw["retry"] === undefined
          ? defaultPolicy
          : effectiveRetry(
              comp.raw["retry"],
              comp.retryOk,
              pathJoin(pathJoin(draft.path, "compensate"), "retry"),
            );
    const timeouts = mergeTimeouts(defaultTimeouts, draft.timeouts);
    if (
      timeouts.heartbeatMs !== null &&
      timeouts.startToCloseMs !== null &&
      timeouts.heartbeatMs > timeouts.startToCloseMs
    ) {
      checker.err(
        pathJoin(draft.path, "timeouts"),
        "heartbeat must not be longer than startToClose (after merging defaults.timeouts)",
      );
    }
    return { retry, compRetry, timeouts };
  });

  if (checker.errors.length > 0 || graph === undefined) return { ok: false, errors: checker.errors };
  return {
    ok: true,
    workflow: build(spec as unknown as WorkflowSpec, drafts as StepDraft[], graph.order, stepPolicies, {
      timeoutMs,
      output,
      inputSchema,
      defaultTimeouts: mergeTimeouts(defaultTimeouts, {}),
      defaultPriority,
      concurrency,
      fairness,
    }),
  };
}

function build(
  spec: WorkflowSpec,
  drafts: readonly StepDraft[],
  order: readonly number[],
  policies: readonly (
    | {
        retry: ResolvedRetryPolicy | undefined;
        compRetry: ResolvedRetryPolicy | undefined;
        timeouts: ResolvedTimeouts;
      }
    | undefined
  )[],
  extra: {
    timeoutMs: number | null;
    output: Template | null;
    inputSchema: CompiledSchema | null;
    defaultTimeouts: ResolvedTimeouts;
    defaultPriority: number;
    concurrency: readonly Omit<CompiledConcurrencyLimit, "space" | "scope">[];
    fairness: readonly CompiledFairShare[];
  },
): CompiledWorkflow {
  deepFreeze(spec);
  const positionOf = new Array<number>(drafts.length);
  order.forEach((specIndex, position) => {
    positionOf[specIndex] = position;
  });
  const idAt = (specIndex: number): string => (drafts[specIndex] as StepDraft).id as string;
  const dependentsOf: number[][] = drafts.map(() => []);
  // Spec-index adjacency, rebuilt from ids (validation guaranteed they are known, unique and acyclic).
  const indexById = new Map<string, number>();
  drafts.forEach((draft, i) => indexById.set(draft.id as string, i));
  const depIndexes = drafts.map((draft) => draft.dependsOn.map((id) => indexById.get(id) as number));
  depIndexes.forEach((list, i) => {
    for (const d of list) (dependentsOf[d] as number[]).push(i);
  });

  const steps: CompiledStep[] = order.map((specIndex, position) => {
    const draft = drafts[specIndex] as StepDraft;
    const policy = policies[specIndex] as NonNullable<(typeof policies)[number]>;
    const comp = draft.compensate;
    const compensate: CompiledCompensation | null =
      comp === null
        ? null
        : Object.freeze({
            type: comp.type,
            input: comp.input,
            retry: policy.compRetry as ResolvedRetryPolicy,
            timeouts: extra.defaultTimeouts,
          });
    const dependents = (dependentsOf[specIndex] as number[])
      .slice()
      .sort((a, b) => (positionOf[a] as number) - (positionOf[b] as number));
    return Object.freeze({
      id: draft.id as string,
      type: draft.type as string,
      specIndex,
      order: position,
      dependsOn: Object.freeze([...draft.dependsOn]),
      dependents: Object.freeze(dependents.map(idAt)),
      // Not frozen on purpose: V8 iterates frozen arrays several times slower, and these are the hot loop of evaluateRun.
      dependencyOrders: (depIndexes[specIndex] as number[]).map((d) => positionOf[d] as number),
      dependentOrders: dependents.map((d) => positionOf[d] as number),
      when: draft.when,
      input: draft.input,
      retry: policy.retry as ResolvedRetryPolicy,
      timeouts: policy.timeouts,
      priority: draft.priority ?? extra.defaultPriority,
      durable: draft.durable,
      child: draft.child,
      map: draft.map,
      concurrency: Object.freeze(
        draft.concurrency.map((l) =>
          Object.freeze({
            ...l,
            scope: "step" as const,
            space: `step:${spec.name}/${draft.id as string}:${l.expression}`,
          }),
        ),
      ),
      rateLimits: Object.freeze([...draft.rateLimits]),
      compensate,
      spec: draft.raw as unknown as StepSpec,
    });
  });
  const canonical = canonicalJson(spec);
  return Object.freeze({
    name: spec.name,
    version: spec.version,
    spec,
    canonicalJson: canonical,
    contentHash: createHash("sha256").update(canonical).digest("hex"),
    timeoutMs: extra.timeoutMs,
    steps: Object.freeze(steps),
    stepsById: new Map(steps.map((s) => [s.id, s])),
    order: Object.freeze(steps.map((s) => s.id)),
    dependencies: new Map(steps.map((s) => [s.id, s.dependsOn])),
    dependents: new Map(steps.map((s) => [s.id, s.dependents])),
    output: extra.output,
    inputSchema: extra.inputSchema,
    concurrency: Object.freeze(
      extra.concurrency.map((l) =>
        Object.freeze({ ...l, scope: "workflow" as const, space: `workflow:${spec.name}:${l.expression}` }),
      ),
    ),
    fairness: Object.freeze([...extra.fairness]),
  });
}

/** Validates a run input against the workflow's `input` schema (no schema: anything goes); undefined is checked as null. */
export function validateRunInput(workflow: CompiledWorkflow, input: unknown): SpecError[] {
  if (workflow.inputSchema === null) return [];
  return validateAgainstSchema(workflow.inputSchema, input === undefined ? null : input, "$");
}
