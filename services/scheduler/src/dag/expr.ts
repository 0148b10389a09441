/**
 * The expression language of `when` and `{{ }}`: a hand-written scanner and recursive-descent
 * parser producing a small AST, and an evaluator over JSON values. Nothing is ever handed to
 * eval/Function, and paths read only own properties of plain JSON data, so an expression cannot
 * reach prototypes, globals or host objects whatever the workflow author writes. The operators and
 * functions are in operators.ts; whatever they walk is charged to the evaluation's work budget
 * (budget.ts), so no expression can hold the scheduler's thread for long.
 *
 * Precedence, loosest first: `||`, `&&`, `== !=`, `< <= > >= in`, `+ -`, `* / %`, unary `! -`.
 */
import { WorkBudget } from "./budget.js";
import { ExpressionSyntaxError } from "./errors.js";
import { childOf, isPlainObject, jsonTypeOf, MISSING } from "./json.js";
import type { JsonValue } from "./json.js";
import { binary, call, describeValue, fail } from "./operators.js";
import type { BinaryOp, FunctionName } from "./operators.js";
import { escapedLowSurrogate, loneSurrogateEscape, surrogatePairAt, unitName } from "./strings.js";
import type { RunInfo, StepStatus } from "./spec.js";

/** Longest accepted expression source, in characters (one `when`, or one `{{ }}` part). */
export const MAX_EXPRESSION_LENGTH = 4096;
/** Deepest accepted nesting of parentheses, brackets, calls and unary operators. */
export const MAX_EXPRESSION_DEPTH = 64;

/**
 * Names an expression may start a path with. `step` exists only in `compensate.input`, `event`
 * (`event.key`, `event.payload`) only in a trigger's or a wait's `filter`, `item` and `index` only
 * in a map step's `input`.
 */
export type PathRoot = "input" | "steps" | "run" | "step" | "event" | "item" | "index";
export type { BinaryOp, FunctionName } from "./operators.js";

/** A reference such as `steps.charge.output.id` or `input["order id"][0]`. */
export interface PathExpr {
  readonly kind: "path";
  readonly root: PathRoot;
  /** Segments after the root; for `steps` the first one is the step id. */
  readonly segments: readonly (string | number)[];
  /** The path as written, for messages. */
  readonly text: string;
  readonly pos: number;
}

/** Parsed expression tree. `pos` is the 0-based offset of the node in the source text. */
export type Expr =
  | { readonly kind: "literal"; readonly value: JsonValue; readonly pos: number }
  | { readonly kind: "array"; readonly items: readonly Expr[]; readonly pos: number }
  | PathExpr
  | { readonly kind: "unary"; readonly op: "!" | "-"; readonly operand: Expr; readonly pos: number }
  | {
      readonly kind: "binary";
      readonly op: BinaryOp;
      readonly left: Expr;
      readonly right: Expr;
      readonly pos: number;
    }
  | {
      readonly kind: "call";
      readonly fn: FunctionName;
      readonly args: readonly Expr[];
      readonly pos: number;
    };

/** What an expression can see of one step. */
export interface StepView {
  readonly status: StepStatus;
  /** The step's result; only meaningful when `status` is "succeeded". */
  readonly output?: unknown;
}

/** Data an expression is evaluated against. */
export interface EvalScope {
  /** The run input; `undefined` when the run has none. */
  readonly input: unknown;
  /** `run.id`, `run.workflow`, `run.version`; `undefined` makes every `run.*` path unresolved. */
  readonly run: RunInfo | undefined;
  /** The compensated step's own input/output (`step.*`); only set while rendering `compensate.input`. */
  readonly step: { readonly input?: unknown; readonly output?: unknown } | undefined;
  /** A map step's element (`item`) and its position (`index`); absent everywhere else. */
  readonly element?: { readonly item: unknown; readonly index: number } | undefined;
  /** The event a trigger's or a wait's filter looks at (`event.*`); absent everywhere else. */
  readonly event?: { readonly key: string; readonly payload: unknown } | undefined;
  /** Looks up a step by id; `undefined` for unknown ids. */
  stepView(id: string): StepView | undefined;
}

/** Outcome of resolving a path: a value (null with `skipped` for paths into a skipped step) or why not. */
export type Resolution =
  | { readonly found: true; readonly value: JsonValue; readonly skipped: boolean }
  | { readonly found: false; readonly reason: string };

const FUNCTION_ARITY: Readonly<Record<FunctionName, number>> = {
  len: 1,
  lower: 1,
  upper: 1,
  contains: 2,
  startsWith: 2,
  exists: 1,
};
const ROOTS: ReadonlySet<string> = new Set<PathRoot>([
  "input",
  "steps",
  "run",
  "step",
  "event",
  "item",
  "index",
]);
const RUN_FIELDS: ReadonlySet<string> = new Set(["id", "workflow", "version"]);

type TokenKind = "number" | "string" | "name" | "punct" | "close" | "eof";
interface Token {
  readonly kind: TokenKind;
  readonly text: string;
  readonly value: string | number;
  readonly pos: number;
  readonly end: number;
}

const NUMBER = /\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const NAME = /[A-Za-z_][A-Za-z0-9_]*/y;
// Step ids may contain "-", which elsewhere is subtraction; directly after `steps.` an id is the
// only thing that can follow, so reading dashes greedily there is unambiguous.
const STEP_ID = /[A-Za-z_][A-Za-z0-9_-]*/y;
const TWO_CHAR = new Set(["&&", "||", "==", "!=", "<=", ">="]);
const ONE_CHAR = new Set(["(", ")", "[", "]", ",", ".", "!", "<", ">", "+", "-", "*", "/", "%"]);
const ESCAPES: Readonly<Record<string, string>> = {
  "\\": "\\",
  "'": "'",
  '"': '"',
  "/": "/",
  n: "\n",
  r: "\r",
  t: "\t",
  b: "\b",
  f: "\f",
};

class Parser {
  private cursor: number;
  private tok: Token;
  private depth = 0;
  /** End offset of the most recently consumed token, so paths know where they stop in the source. */
  private lastEnd = 0;

  constructor(
    private readonly src: string,
    start: number,
    private readonly inTemplate: boolean,
  ) {
    this.cursor = start;
    this.tok = this.scan();
  }

  /** Parses one expression and checks that it is followed by the expected terminator. */
  parseAll(): { expr: Expr; end: number } {
    const start = this.tok.pos;
    const expr = this.parseExpr();
    if (this.inTemplate) {
      if (this.tok.kind !== "close")
        this.fail(`expected "}}" but found ${this.describe(this.tok)}`, this.tok.pos);
    } else if (this.tok.kind !== "eof") {
      this.fail(`unexpected ${this.describe(this.tok)} after the end of the expression`, this.tok.pos);
    }
    if (this.tok.pos - start > MAX_EXPRESSION_LENGTH) {
      this.fail(`expression is longer than ${MAX_EXPRESSION_LENGTH} characters`, start);
    }
    return { expr, end: this.tok.end };
  }

  private fail(message: string, pos: number): never {
    throw new ExpressionSyntaxError(message, pos);
  }

  private describe(tok: Token): string {
    if (tok.kind === "eof") return this.inTemplate ? 'end of text (missing "}}")' : "end of expression";
    if (tok.kind === "close") return '"}}"';
    return JSON.stringify(tok.text);
  }

  private skipSpace(): void {
    while (this.cursor < this.src.length) {
      const c = this.src.charCodeAt(this.cursor);
      if (c !== 32 && c !== 9 && c !== 10 && c !== 13) break;
      this.cursor++;
    }
  }

  private token(kind: TokenKind, pos: number, end: number, value?: string | number): Token {
    const text = this.src.slice(pos, end);
    return { kind, text, value: value ?? text, pos, end };
  }

  private scan(): Token {
    this.skipSpace();
    const src = this.src;
    const pos = this.cursor;
    if (pos >= src.length) return this.token("eof", pos, pos);
    const c = src.charAt(pos);
    if (this.inTemplate && src.startsWith("}}", pos)) {
      this.cursor = pos + 2;
      return this.token("close", pos, pos + 2);
    }
    if (c >= "0" && c <= "9") {
      NUMBER.lastIndex = pos;
      const match = NUMBER.exec(src) as RegExpExecArray;
      this.cursor = NUMBER.lastIndex;
      const next = src.charAt(this.cursor);
      if (/[A-Za-z0-9_.]/.test(next)) this.fail(`invalid number ${JSON.stringify(match[0] + next)}`, pos);
      const value = Number(match[0]);
      if (!Number.isFinite(value)) this.fail(`number ${match[0]} is too large`, pos);
      return this.token("number", pos, this.cursor, value);
    }
    if (c === "'" || c === '"') return this.scanString(c, pos);
    if (/[A-Za-z_]/.test(c)) {
      NAME.lastIndex = pos;
      NAME.exec(src);
      this.cursor = NAME.lastIndex;
      return this.token("name", pos, this.cursor);
    }
    const two = src.slice(pos, pos + 2);
    if (TWO_CHAR.has(two)) {
      this.cursor = pos + 2;
      return this.token("punct", pos, pos + 2);
    }
    if (ONE_CHAR.has(c)) {
      this.cursor = pos + 1;
      return this.token("punct", pos, pos + 1);
    }
    if (c === "=") this.fail('unexpected "=": compare with "=="', pos);
    if (c === "&") this.fail('unexpected "&": use "&&"', pos);
    if (c === "|") this.fail('unexpected "|": use "||"', pos);
    return this.fail(`unexpected character ${JSON.stringify(c)}`, pos);
  }

  private scanString(quote: string, pos: number): Token {
    const src = this.src;
    let at = pos + 1;
    let out = "";
    for (;;) {
      if (at >= src.length) this.fail("unterminated string", pos);
      const c = src.charAt(at);
      if (c === quote) break;
      if (c !== "\\") {
        const pair = surrogatePairAt(src, at);
        if (pair === 0) this.fail(`lone surrogate ${unitName(src.charCodeAt(at))} in string`, at);
        out += src.slice(at, at + pair);
        at += pair;
        continue;
      }
      const e = src.charAt(at + 1);
      const simple = ESCAPES[e];
      if (simple !== undefined) {
        out += simple;
        at += 2;
      } else if (e === "u" && /^[0-9a-fA-F]{4}$/.test(src.slice(at + 2, at + 6))) {
        const code = parseInt(src.slice(at + 2, at + 6), 16);
        // It would reach a task's input or a run's output, which PostgreSQL cannot store with it.
        if (code === 0) this.fail("a NUL character (\\u0000) cannot be stored", at);
        const low = escapedLowSurrogate(src, at + 6);
        if (code >= 0xd800 && code <= 0xdbff && low !== undefined) {
          out += String.fromCharCode(code, low);
          at += 12;
          continue;
        }
        // No UTF-8 (protobuf string, PostgreSQL text) holds half a pair.
        if (code >= 0xd800 && code <= 0xdfff) this.fail(loneSurrogateEscape(code), at);
        out += String.fromCharCode(code);
        at += 6;
      } else {
        this.fail(`invalid escape "\\${e}" in string`, at);
      }
    }
    this.cursor = at + 1;
    return this.token("string", pos, this.cursor, out);
  }

  private advance(): Token {
    const previous = this.tok;
    this.lastEnd = previous.end;
    this.tok = this.scan();
    return previous;
  }

  private isPunct(text: string): boolean {
    return this.tok.kind === "punct" && this.tok.text === text;
  }

  private expectPunct(text: string): Token {
    if (!this.isPunct(text))
      this.fail(`expected "${text}" but found ${this.describe(this.tok)}`, this.tok.pos);
    return this.advance();
  }

  private enter(pos: number): void {
    if (++this.depth > MAX_EXPRESSION_DEPTH)
      this.fail(`expression is nested deeper than ${MAX_EXPRESSION_DEPTH} levels`, pos);
  }

  private parseExpr(): Expr {
    this.enter(this.tok.pos);
    const expr = this.parseBinary(0);
    this.depth--;
    return expr;
  }

  private static readonly LEVELS: readonly (readonly BinaryOp[])[] = [
    ["||"],
    ["&&"],
    ["==", "!="],
    ["<", "<=", ">", ">=", "in"],
    ["+", "-"],
    ["*", "/", "%"],
  ];

  private binaryOpAt(level: number): BinaryOp | undefined {
    const ops = Parser.LEVELS[level] as readonly BinaryOp[];
    const tok = this.tok;
    if (tok.kind === "punct" || (tok.kind === "name" && tok.text === "in")) {
      return ops.find((op) => op === tok.text);
    }
    return undefined;
  }

  private parseBinary(level: number): Expr {
    if (level >= Parser.LEVELS.length) return this.parseUnary();
    let left = this.parseBinary(level + 1);
    for (let op = this.binaryOpAt(level); op !== undefined; op = this.binaryOpAt(level)) {
      const pos = this.advance().pos;
      const right = this.parseBinary(level + 1);
      left = { kind: "binary", op, left, right, pos };
    }
    return left;
  }

  private parseUnary(): Expr {
    if (this.isPunct("!") || this.isPunct("-")) {
      const tok = this.advance();
      this.enter(tok.pos);
      const operand = this.parseUnary();
      this.depth--;
      return { kind: "unary", op: tok.text as "!" | "-", operand, pos: tok.pos };
    }
    return this.parsePrimary();
  }

  private parsePrimary(): Expr {
    const tok = this.tok;
    switch (tok.kind) {
      case "number":
      case "string":
        this.advance();
        return { kind: "literal", value: tok.value, pos: tok.pos };
      case "punct":
        if (tok.text === "(") {
          this.advance();
          const inner = this.parseExpr();
          this.expectPunct(")");
          return inner;
        }
        if (tok.text === "[") return this.parseArray();
        break;
      case "name":
        return this.parseName();
      default:
        break;
    }
    return this.fail(`expected a value but found ${this.describe(tok)}`, tok.pos);
  }

  private parseArray(): Expr {
    const open = this.advance();
    this.enter(open.pos);
    const items: Expr[] = [];
    while (!this.isPunct("]")) {
      items.push(this.parseExpr());
      if (!this.isPunct(",")) break;
      this.advance();
    }
    this.expectPunct("]");
    this.depth--;
    return { kind: "array", items, pos: open.pos };
  }

  private parseName(): Expr {
    const tok = this.advance();
    const name = tok.text;
    if (name === "true" || name === "false") return { kind: "literal", value: name === "true", pos: tok.pos };
    if (name === "null") return { kind: "literal", value: null, pos: tok.pos };
    if (this.isPunct("(")) return this.parseCall(tok);
    if (ROOTS.has(name)) return this.parsePath(tok);
    return this.fail(
      `unknown name ${JSON.stringify(name)}: paths start with input, steps, run (or step in compensate.input) and strings need quotes`,
      tok.pos,
    );
  }

  private parseCall(nameTok: Token): Expr {
    const fn = nameTok.text;
    if (!Object.hasOwn(FUNCTION_ARITY, fn)) {
      this.fail(
        `unknown function ${JSON.stringify(fn)} (known: ${Object.keys(FUNCTION_ARITY).join(", ")})`,
        nameTok.pos,
      );
    }
    const arity = FUNCTION_ARITY[fn as FunctionName];
    this.advance();
    this.enter(nameTok.pos);
    const args: Expr[] = [];
    while (!this.isPunct(")")) {
      args.push(this.parseExpr());
      if (!this.isPunct(",")) break;
      this.advance();
    }
    this.expectPunct(")");
    this.depth--;
    if (args.length !== arity) {
      this.fail(`${fn}() takes ${arity} argument${arity === 1 ? "" : "s"}, got ${args.length}`, nameTok.pos);
    }
    if (fn === "exists" && args[0]?.kind !== "path")
      this.fail("exists() takes a path such as input.name", nameTok.pos);
    return { kind: "call", fn: fn as FunctionName, args, pos: nameTok.pos };
  }

  /** Reads a `.name` or `[...]` segment; returns undefined when the path ends here. */
  private parseSegment(stepId: boolean): string | number | undefined {
    if (this.isPunct(".")) {
      if (stepId) {
        // The "." token was scanned, and the cursor sits right after it: read the id raw.
        this.skipSpace();
        STEP_ID.lastIndex = this.cursor;
        const match = STEP_ID.exec(this.src);
        if (match === null) return this.fail('expected a step id after "steps."', this.cursor);
        this.cursor = STEP_ID.lastIndex;
        this.advance();
        this.lastEnd = STEP_ID.lastIndex;
        return match[0];
      }
      this.advance();
      const name = this.tok;
      if (name.kind !== "name")
        this.fail(`expected a field name after "." but found ${this.describe(name)}`, name.pos);
      this.advance();
      return name.text;
    }
    if (this.isPunct("[")) {
      this.advance();
      const key = this.tok;
      const valid =
        key.kind === "string" ||
        (key.kind === "number" && !stepId && Number.isSafeInteger(key.value) && /^\d+$/.test(key.text));
      if (!valid) {
        this.fail(
          stepId
            ? 'expected a quoted step id such as ["my-step"]'
            : 'expected a quoted key or an index such as [0] or ["key"]',
          key.pos,
        );
      }
      this.advance();
      this.expectPunct("]");
      return key.value;
    }
    return undefined;
  }

  private parsePath(rootTok: Token): PathExpr {
    const root = rootTok.text as PathRoot;
    const segments: (string | number)[] = [];
    let end = rootTok.end;
    const pushSegment = (stepId: boolean): boolean => {
      const seg = this.parseSegment(stepId);
      if (seg === undefined) return false;
      segments.push(seg);
      end = this.lastEnd;
      return true;
    };
    // The fixed shapes below make paths that can never resolve a parse error rather than a runtime one.
    if (root === "steps") {
      if (!pushSegment(true))
        this.fail('expected a step id after "steps", as in steps.<id>.output', this.tok.pos);
      if (!pushSegment(false) || (segments[1] !== "output" && segments[1] !== "status")) {
        this.fail(`expected .output or .status after ${this.src.slice(rootTok.pos, end)}`, rootTok.pos);
      }
      if (segments[1] === "status" && (this.isPunct(".") || this.isPunct("["))) {
        this.fail(`${this.src.slice(rootTok.pos, end)} is a string and has no fields`, this.tok.pos);
      }
    } else if (root === "run") {
      if (!pushSegment(false) || !RUN_FIELDS.has(String(segments[0]))) {
        this.fail("expected run.id, run.workflow or run.version", rootTok.pos);
      }
      if (this.isPunct(".") || this.isPunct("["))
        this.fail(`run.${String(segments[0])} has no fields`, this.tok.pos);
    } else if (root === "step") {
      if (!pushSegment(false) || (segments[0] !== "input" && segments[0] !== "output")) {
        this.fail("expected step.input or step.output", rootTok.pos);
      }
    } else if (root === "index") {
      if (this.isPunct(".") || this.isPunct("["))
        this.fail("index is a number and has no fields", this.tok.pos);
    } else if (root === "event") {
      if (!pushSegment(false) || (segments[0] !== "key" && segments[0] !== "payload")) {
        this.fail("expected event.key or event.payload", rootTok.pos);
      }
      if (segments[0] === "key" && (this.isPunct(".") || this.isPunct("[")))
        this.fail("event.key is a string and has no fields", this.tok.pos);
    }
    while (pushSegment(false)) {
      // keep reading .name / [key] segments
    }
    return { kind: "path", root, segments, text: this.src.slice(rootTok.pos, end), pos: rootTok.pos };
  }
}

/** Parses a standalone expression (a `when`). Throws {@link ExpressionSyntaxError}. */
export function parseExpression(text: string): Expr {
  if (text.length > MAX_EXPRESSION_LENGTH) {
    throw new ExpressionSyntaxError(
      `expression is longer than ${MAX_EXPRESSION_LENGTH} characters`,
      MAX_EXPRESSION_LENGTH,
    );
  }
  return new Parser(text, 0, false).parseAll().expr;
}

/**
 * Parses the expression of a `{{ }}` part starting at `start` (just after the `{{`) and returns it
 * with the offset just past the closing `}}`. Throws {@link ExpressionSyntaxError}.
 */
export function parseTemplateExpression(text: string, start: number): { expr: Expr; end: number } {
  return new Parser(text, start, true).parseAll();
}

/** Truthiness used by `when`, `!`, `&&` and `||`: false, null, 0 and "" are falsy, all else (even [] and {}) truthy. */
export function truthy(value: unknown): boolean {
  return value !== false && value !== null && value !== 0 && value !== "" && value !== undefined;
}

/** Every path referenced by an expression (including inside `exists()`), in source order. */
export function expressionPaths(expr: Expr): PathExpr[] {
  const out: PathExpr[] = [];
  const visit = (node: Expr): void => {
    switch (node.kind) {
      case "path":
        out.push(node);
        break;
      case "array":
        node.items.forEach(visit);
        break;
      case "unary":
        visit(node.operand);
        break;
      case "binary":
        visit(node.left);
        visit(node.right);
        break;
      case "call":
        node.args.forEach(visit);
        break;
      case "literal":
        break;
    }
  };
  visit(expr);
  return out;
}

const SIMPLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function formatPrefix(root: PathRoot, segments: readonly (string | number)[], count: number): string {
  let text: string = root;
  for (let i = 0; i < count; i++) {
    const seg = segments[i] as string | number;
    if (typeof seg === "number") text += `[${seg}]`;
    else if (SIMPLE_NAME.test(seg) || (root === "steps" && i === 0 && /^[A-Za-z_][A-Za-z0-9_-]*$/.test(seg)))
      text += `.${seg}`;
    else text += `[${JSON.stringify(seg)}]`;
  }
  return text;
}

function walk(path: PathExpr, base: unknown, from: number): Resolution {
  let value = base;
  const segments = path.segments;
  for (let i = from; i < segments.length; i++) {
    const seg = segments[i] as string | number;
    const next = childOf(value, seg);
    if (next === MISSING) {
      const parent = formatPrefix(path.root, segments, i);
      let reason: string;
      if (typeof seg === "number") {
        reason = Array.isArray(value)
          ? `${parent} has no element [${seg}] (length ${value.length})`
          : `${parent} is ${jsonTypeOf(value)}, not an array`;
      } else {
        reason = isPlainObject(value)
          ? `${parent} has no field ${JSON.stringify(seg)}`
          : `${parent} is ${jsonTypeOf(value)}, not an object`;
      }
      return { found: false, reason };
    }
    value = next;
  }
  return { found: true, value: value as JsonValue, skipped: false };
}

const SKIPPED: Resolution = { found: true, value: null, skipped: true };

/** Resolves a path against a scope without throwing; paths into a skipped step's output give null. */
export function resolvePath(path: PathExpr, scope: EvalScope): Resolution {
  switch (path.root) {
    case "input":
      if (scope.input === undefined) return { found: false, reason: "the run has no input" };
      return walk(path, scope.input, 0);
    case "run": {
      if (scope.run === undefined) return { found: false, reason: "run information is not available here" };
      const field = path.segments[0];
      const run = scope.run;
      const value =
        field === "id"
          ? run.id
          : field === "workflow"
            ? run.workflow
            : field === "version"
              ? run.version
              : undefined;
      if (value === undefined) return { found: false, reason: `run has no field ${JSON.stringify(field)}` };
      return { found: true, value, skipped: false };
    }
    case "step": {
      if (scope.step === undefined)
        return { found: false, reason: "step.* is only available in compensate.input" };
      const field = path.segments[0] === "input" ? "input" : "output";
      const value = scope.step[field];
      if (value === undefined)
        return { found: false, reason: `the compensated step has no recorded ${field}` };
      return walk(path, value, 1);
    }
    case "item":
      if (scope.element === undefined)
        return { found: false, reason: "item is only available in the input of a map step" };
      return walk(path, scope.element.item, 0);
    case "index":
      if (scope.element === undefined)
        return { found: false, reason: "index is only available in the input of a map step" };
      return { found: true, value: scope.element.index, skipped: false };
    case "event": {
      if (scope.event === undefined)
        return { found: false, reason: "event.* is only available in a trigger's or a wait's filter" };
      if (path.segments[0] === "key") return { found: true, value: scope.event.key, skipped: false };
      return walk(path, scope.event.payload, 1);
    }
    case "steps": {
      const id = String(path.segments[0]);
      const view = scope.stepView(id);
      if (view === undefined) return { found: false, reason: `there is no step ${JSON.stringify(id)}` };
      if (path.segments[1] === "status") return { found: true, value: view.status, skipped: false };
      if (view.status === "skipped") return SKIPPED;
      if (view.status !== "succeeded") {
        return { found: false, reason: `step ${JSON.stringify(id)} has no output (it is ${view.status})` };
      }
      // A task that succeeded without returning anything has output null, not a missing one.
      return walk(path, view.output === undefined ? null : view.output, 2);
    }
  }
}

/**
 * Evaluates an expression. `&&` and `||` short-circuit and return the deciding operand (so
 * `steps.a.output.name || 'anonymous'` works as a default when the left side is falsy).
 * Throws `EvaluationError` (errors.ts) for unresolved paths and type errors, and its subclass
 * `ExpressionBudgetError` (budget.ts) when the evaluation needs more work than `budget` (shared by the
 * whole evaluation; pass one to share it among several, as template.ts does for a template).
 */
export function evaluateExpression(expr: Expr, scope: EvalScope, budget = new WorkBudget()): JsonValue {
  switch (expr.kind) {
    case "literal":
      return expr.value;
    case "array":
      return expr.items.map((item) => evaluateExpression(item, scope, budget));
    case "path": {
      const resolved = resolvePath(expr, scope);
      if (!resolved.found) return fail(`${expr.text} does not resolve: ${resolved.reason}`, expr.text);
      return resolved.value;
    }
    case "unary": {
      const value = evaluateExpression(expr.operand, scope, budget);
      if (expr.op === "!") return !truthy(value);
      if (typeof value !== "number") return fail(`unary "-" needs a number, got ${describeValue(value)}`);
      return -value;
    }
    case "binary": {
      const left = evaluateExpression(expr.left, scope, budget);
      if (expr.op === "&&") return truthy(left) ? evaluateExpression(expr.right, scope, budget) : left;
      if (expr.op === "||") return truthy(left) ? left : evaluateExpression(expr.right, scope, budget);
      return binary(expr.op, left, evaluateExpression(expr.right, scope, budget), budget);
    }
    case "call": {
      if (expr.fn === "exists") {
        const resolved = resolvePath(expr.args[0] as PathExpr, scope);
        return resolved.found && !resolved.skipped;
      }
      return call(
        expr.fn,
        expr.args.map((arg) => evaluateExpression(arg, scope, budget)),
        budget,
      );
    }
  }
}
