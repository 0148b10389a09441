/**
 * Templated JSON values. Any string may contain `{{ expr }}` parts; a string that is exactly one
 * `{{ ... }}` (nothing around it, not even spaces) evaluates to the expression's JSON value with its
 * type kept, while mixed text gets each value spliced in (strings as-is, everything else as JSON).
 * Object keys are never templated. There is no escape for a literal "{{": write `{{ '{{' }}`.
 */
import { WorkBudget } from "./budget.js";
import { EvaluationError, ExpressionSyntaxError, InputTooLargeError, RenderError } from "./errors.js";
import type { SpecError } from "./errors.js";
import { evaluateExpression, expressionPaths, parseTemplateExpression } from "./expr.js";
import type { EvalScope, Expr, PathExpr } from "./expr.js";
import { isPlainObject, objectFromEntries, pathJoin } from "./json.js";
import type { JsonValue } from "./json.js";
import { MAX_JOINED_CHARS } from "./strings.js";

/**
 * Largest task input, in bytes as a google.protobuf.Value: what a lease carries to an executor
 * (core/leasing.ts `MAX_LEASE_INPUT_BYTES`, the same bound, measures it exactly). Rendering a task's
 * input counts a lower bound of that size as it goes ({@link renderTemplate}'s `maxBytes`), so an
 * input that no lease could carry fails as it is rendered, not after (a thousand `{{ input }}` of a
 * 1 MB input are cheap references while rendered, but gigabytes once stored or sent).
 */
export const MAX_TASK_INPUT_BYTES = 15 * 1024 * 1024;

/** A parsed templated value; subtrees without `{{` collapse into one literal. */
export type Template =
  | { readonly kind: "literal"; readonly value: JsonValue }
  | { readonly kind: "expr"; readonly expr: Expr }
  | { readonly kind: "text"; readonly parts: readonly (string | Expr)[] }
  | { readonly kind: "array"; readonly items: readonly Template[] }
  | { readonly kind: "object"; readonly entries: readonly (readonly [string, Template])[] };

function parseString(text: string): Template {
  const parts: (string | Expr)[] = [];
  let at = 0;
  for (let open = text.indexOf("{{"); open !== -1; open = text.indexOf("{{", at)) {
    if (open > at) parts.push(text.slice(at, open));
    const { expr, end } = parseTemplateExpression(text, open + 2);
    parts.push(expr);
    at = end;
  }
  if (parts.length === 0) return { kind: "literal", value: text };
  if (at < text.length) parts.push(text.slice(at));
  if (parts.length === 1 && typeof parts[0] !== "string") return { kind: "expr", expr: parts[0] as Expr };
  return { kind: "text", parts };
}

/**
 * Parses every string of a JSON value as a template, collecting one error per bad string (located
 * at `path` and below). The value must already be JSON (no cycles, bounded depth).
 */
export function compileTemplate(value: unknown, path = "$"): { template: Template; errors: SpecError[] } {
  const errors: SpecError[] = [];
  const visit = (node: unknown, at: string): Template => {
    if (typeof node === "string") {
      try {
        return parseString(node);
      } catch (error) {
        if (!(error instanceof ExpressionSyntaxError)) throw error;
        errors.push({ path: at, message: `invalid template: ${error.message}` });
        return { kind: "literal", value: node };
      }
    }
    if (Array.isArray(node)) {
      const items = node.map((item, i) => visit(item, pathJoin(at, i)));
      return items.every((t) => t.kind === "literal")
        ? { kind: "literal", value: node as JsonValue }
        : { kind: "array", items };
    }
    if (isPlainObject(node)) {
      const entries = Object.keys(node).map((key) => [key, visit(node[key], pathJoin(at, key))] as const);
      return entries.every(([, t]) => t.kind === "literal")
        ? { kind: "literal", value: node as JsonValue }
        : { kind: "object", entries };
    }
    return { kind: "literal", value: node as JsonValue };
  };
  const template = visit(value, path);
  return { template, errors };
}

/** Every path referenced by a template, with the JSON path of the string it appears in. */
export function templatePaths(template: Template, path = "$"): { at: string; path: PathExpr }[] {
  const out: { at: string; path: PathExpr }[] = [];
  const visit = (t: Template, at: string): void => {
    switch (t.kind) {
      case "literal":
        return;
      case "expr":
        for (const p of expressionPaths(t.expr)) out.push({ at, path: p });
        return;
      case "text":
        for (const part of t.parts) {
          if (typeof part !== "string") for (const p of expressionPaths(part)) out.push({ at, path: p });
        }
        return;
      case "array":
        t.items.forEach((item, i) => visit(item, pathJoin(at, i)));
        return;
      case "object":
        for (const [key, item] of t.entries) visit(item, pathJoin(at, key));
        return;
    }
  };
  visit(template, path);
  return out;
}

/** The JSON path of the string being rendered: `path` and the segments below it. */
function locate(path: string, trail: readonly (string | number)[]): string {
  return trail.reduce<string>((p, seg) => pathJoin(p, seg), path);
}

/** Said of the charges of {@link measure}. */
const MEASURING = "measuring the rendered input";

/**
 * A lower bound of the bytes of `value` as a google.protobuf.Value, as core/leasing.ts counts them
 * exactly: a string at least 2 + its UTF-16 length (each unit is at least one byte of UTF-8), a
 * number 9, a boolean or null 2, an array 2 + 2 per element, an object 2 + 6 + the key's length per
 * key, plus what they hold. Stops once past `room`, returning what it has counted (more than
 * `room`). Charges `budget` one unit per element or key visited (as budget.ts lists keys), and keeps
 * the size of a value measured whole in `budget.sizes`, so a value templated in many times (in one
 * template, or in the steps of one evaluation of a run) is walked once. Iterative: values from
 * outside may be nested deeper than the stack allows.
 */
function measure(value: unknown, budget: WorkBudget, room: number): number {
  if (typeof value === "string") return 2 + value.length;
  if (typeof value === "number") return 9;
  if (typeof value !== "object" || value === null) return 2;
  const sizes = budget.sizes;
  const known = sizes.get(value);
  if (known !== undefined) return known;
  let bytes = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === "string") bytes += 2 + v.length;
    else if (typeof v === "number") bytes += 9;
    else if (typeof v !== "object" || v === null) bytes += 2;
    else {
      const seen = sizes.get(v);
      if (seen !== undefined) bytes += seen;
      else if (Array.isArray(v)) {
        const items = v as readonly unknown[];
        // Every element is at least 2 + 2 bytes: a long array past the room is not walked.
        if (bytes + 2 + 4 * items.length > room) return bytes + 2 + 4 * items.length;
        budget.charge(items.length, MEASURING);
        bytes += 2 + 2 * items.length;
        for (let i = 0; i < items.length; i++) stack.push(items[i]);
      } else {
        const record = v as Readonly<Record<string, unknown>>;
        const keys = budget.keysOf(record, MEASURING);
        if (bytes + 2 + 8 * keys.length > room) return bytes + 2 + 8 * keys.length;
        bytes += 2;
        for (const key of keys) {
          bytes += 6 + key.length;
          stack.push(record[key]);
        }
      }
    }
    if (bytes > room) return bytes;
  }
  sizes.set(value, bytes);
  return bytes;
}

/**
 * Renders a template against a scope. Throws {@link RenderError} (code TEMPLATE_ERROR) naming the
 * JSON path of the failing string under `path` and, when that is the reason, the unresolved
 * reference. Every `{{ }}` of the template spends one work `budget` (budget.ts), and the text it
 * splices into strings may total at most {@link MAX_JOINED_CHARS} characters. With `maxBytes` (a
 * task's input: {@link MAX_TASK_INPUT_BYTES}), what is rendered is measured as it is rendered (a
 * lower bound of its bytes as protobuf, see {@link measure}), and rendering stops with
 * {@link InputTooLargeError} (code INPUT_TOO_LARGE) at the value that takes it past `maxBytes`.
 */
export function renderTemplate(
  template: Template,
  scope: EvalScope,
  path = "$",
  budget = new WorkBudget(),
  maxBytes?: number,
): JsonValue {
  // Segments are tracked on a stack and only formatted into a path when something fails.
  const trail: (string | number)[] = [];
  // A lower bound of the bytes rendered so far, as protobuf (only counted under maxBytes).
  let bytes = 0;
  const room = maxBytes ?? Infinity;
  const count = (n: number): void => {
    bytes += n;
    if (bytes > room) {
      const message = `the rendered input would be larger than the ${room} bytes as protobuf that a lease carries to an executor (at least ${bytes} bytes with this value)`;
      throw new InputTooLargeError(locate(path, trail), message, room);
    }
  };
  // Characters of all the text strings made so far: one per string would still let a definition of
  // a thousand "{{ input }}!" strings make a thousand copies of a large input.
  let textChars = 0;
  const evaluate = (expr: Expr, asText: boolean): JsonValue => {
    try {
      const value = evaluateExpression(expr, scope, budget);
      if (!asText || typeof value === "string") return value;
      const text = JSON.stringify(value);
      budget.chargeChars(text.length, "rendering {{ }} as text");
      return text;
    } catch (error) {
      if (error instanceof EvaluationError)
        throw new RenderError(locate(path, trail), error.message, error.ref, { cause: error });
      // Outside data nested deeper than the stack allows (e.g. in "==") must fail the step, not the scheduler.
      if (error instanceof RangeError)
        throw new RenderError(locate(path, trail), `value too deeply nested: ${error.message}`, undefined, {
          cause: error,
        });
      throw error;
    }
  };
  const sizing = maxBytes !== undefined;
  const sized = (value: JsonValue): JsonValue => {
    if (!sizing) return value;
    let size: number;
    try {
      size = measure(value, budget, room - bytes);
    } catch (error) {
      // Out of budget while measuring: fails where the value is, as any charge of its expression.
      if (error instanceof EvaluationError)
        throw new RenderError(locate(path, trail), error.message, undefined, { cause: error });
      throw error;
    }
    count(size);
    return value;
  };
  const visit = (t: Template): JsonValue => {
    switch (t.kind) {
      case "literal":
        return sized(t.value);
      case "expr":
        return sized(evaluate(t.expr, false));
      case "text": {
        let out = "";
        if (sizing) count(2);
        for (const part of t.parts) {
          const piece = typeof part === "string" ? part : (evaluate(part, true) as string);
          textChars += piece.length;
          if (textChars > MAX_JOINED_CHARS) {
            const message = `the template's text would be more than ${MAX_JOINED_CHARS} characters (${textChars} so far)`;
            throw new RenderError(locate(path, trail), message, undefined);
          }
          if (sizing) count(piece.length);
          out += piece;
        }
        return out;
      }
      case "array":
        if (sizing) count(2);
        return t.items.map((item, i) => {
          trail.push(i);
          if (sizing) count(2);
          const value = visit(item);
          trail.pop();
          return value;
        });
      case "object":
        if (sizing) count(2);
        return objectFromEntries(
          t.entries.map(([key, item]) => {
            trail.push(key);
            if (sizing) count(6 + key.length);
            const value = visit(item);
            trail.pop();
            return [key, value] as const;
          }),
        ) as JsonValue;
    }
  };
  return visit(template);
}
