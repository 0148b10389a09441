/**
 * Templated JSON values. Any string may contain `{{ expr }}` parts; a string that is exactly one
 * `{{ ... }}` (nothing around it, not even spaces) evaluates to the expression's JSON value with its
 * type kept, while mixed text gets each value spliced in (strings as-is, everything else as JSON).
 * Object keys are never templated. There is no escape for a literal "{{": write `{{ '{{' }}`.
 */
import { WorkBudget } from "./budget.js";
import { EvaluationError, ExpressionSyntaxError, RenderError } from "./errors.js";
import type { SpecError } from "./errors.js";
import { evaluateExpression, expressionPaths, parseTemplateExpression } from "./expr.js";
import type { EvalScope, Expr, PathExpr } from "./expr.js";
import { isPlainObject, objectFromEntries, pathJoin } from "./json.js";
import type { JsonValue } from "./json.js";
import { MAX_JOINED_CHARS } from "./strings.js";

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

/**
 * Renders a template against a scope. Throws {@link RenderError} (code TEMPLATE_ERROR) naming the
 * JSON path of the failing string under `path` and, when that is the reason, the unresolved
 * reference. Every `{{ }}` of the template spends one work `budget` (budget.ts), and the text it
 * splices into strings may total at most {@link MAX_JOINED_CHARS} characters.
 */
export function renderTemplate(
  template: Template,
  scope: EvalScope,
  path = "$",
  budget = new WorkBudget(),
): JsonValue {
  // Segments are tracked on a stack and only formatted into a path when something fails.
  const trail: (string | number)[] = [];
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
  const visit = (t: Template): JsonValue => {
    switch (t.kind) {
      case "literal":
        return t.value;
      case "expr":
        return evaluate(t.expr, false);
      case "text": {
        let out = "";
        for (const part of t.parts) {
          const piece = typeof part === "string" ? part : (evaluate(part, true) as string);
          textChars += piece.length;
          if (textChars > MAX_JOINED_CHARS) {
            const message = `the template's text would be more than ${MAX_JOINED_CHARS} characters (${textChars} so far)`;
            throw new RenderError(locate(path, trail), message, undefined);
          }
          out += piece;
        }
        return out;
      }
      case "array":
        return t.items.map((item, i) => {
          trail.push(i);
          const value = visit(item);
          trail.pop();
          return value;
        });
      case "object":
        return objectFromEntries(
          t.entries.map(([key, item]) => {
            trail.push(key);
            const value = visit(item);
            trail.pop();
            return [key, value] as const;
          }),
        ) as JsonValue;
    }
  };
  return visit(template);
}
