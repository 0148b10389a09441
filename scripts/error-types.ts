/**
 * The error types the scheduler and the executor produce, found in their sources, and the README's
 * table of them: both checked against the one vocabulary, `TaskErrorType` of @nexusflow/common.
 *
 * A type is produced where an attempt, task or run error is made:
 * - the first argument of `TaskError.terminal(...)`, `TaskError.retryable(...)`, `new TaskError(...)`;
 * - the `type` of an object literal that also has a `message` (an ErrorInfo, a TaskFailure, the
 *   TaskError message), e.g. `failAttempt(core, task, { type: "TIMEOUT", message, retryable })`;
 * - the `type` of an interface or type literal that also has a `message`, when it is a string
 *   literal type (or a union of them), e.g. `readonly type: "TEMPLATE_ERROR" | "EXPRESSION_ERROR"`.
 * Each such expression is read for the string values it can take: literals, both branches of
 * `?:`, both sides of `??` and `||`, the arguments of a call (`replaceNul(e.type || "UNKNOWN")`),
 * a `const` of the same file or one imported from a relative module, and `TaskErrorType.X`.
 * Anything else (`error.type`, a parameter) passes another error's type on and is not a new type.
 * Code generators aside, a type built at run time is a family: `HTTP_<status>` (httpStatusErrorType)
 * and the name of an error a handler threw (THROWN_ERROR_FALLBACK_TYPE when it has none).
 * Test files (`*.test.ts`, and modules importing node:test) are left out.
 */
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import * as taskErrorTypes from "@nexusflow/common/task-error-types";
import {
  TASK_ERROR_TYPES,
  THROWN_ERROR_FALLBACK_TYPE,
  TaskErrorType,
  isHttpStatusErrorType,
  isTaskErrorType,
} from "@nexusflow/common/task-error-types";
import ts from "typescript";

/** The folders whose sources produce error types, relative to the repository root. */
export const SCANNED_ROOTS = ["services/scheduler/src", "services/executor/src"];

/** How the README's table names the two families, in its first column. */
export const HTTP_STATUS_ROW = "HTTP_<status>";
/** See {@link HTTP_STATUS_ROW}. */
export const THROWN_ERROR_ROW = "<error name>";

/** The heading the README's table sits under. */
export const README_HEADING = "### Error types";

/** One error type found where an error is made. */
export interface ProducedType {
  /** The type, or `TaskErrorType.NAME` for a name the vocabulary does not have. */
  readonly type: string;
  /** Where, relative to the root the scan started from. */
  readonly file: string;
  /** 1-based line. */
  readonly line: number;
}

/** True for a type the vocabulary allows: a TaskErrorType, `HTTP_<status>`, or the thrown-error fallback. */
export function isKnownErrorType(type: string): boolean {
  return isTaskErrorType(type) || isHttpStatusErrorType(type) || type === THROWN_ERROR_FALLBACK_TYPE;
}

/** The `.ts` sources under `dir`, tests left out. */
function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === "node_modules" ? [] : sourceFiles(path);
    return entry.name.endsWith(".ts") && !entry.name.endsWith(".test.ts") && !entry.name.endsWith(".d.ts")
      ? [path]
      : [];
  });
}

/** Every error type produced in the sources under `roots` (relative to `root`), in file order. */
export function producedErrorTypes(root: string, roots: readonly string[] = SCANNED_ROOTS): ProducedType[] {
  const modules = new Map<string, ts.SourceFile | undefined>();
  const parse = (path: string): ts.SourceFile | undefined => {
    if (!modules.has(path)) {
      let text: string | undefined;
      try {
        text = readFileSync(path, "utf8");
      } catch {
        text = undefined;
      }
      modules.set(
        path,
        text === undefined ? undefined : ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true),
      );
    }
    return modules.get(path);
  };
  const found: ProducedType[] = [];
  for (const path of roots.flatMap((r) => sourceFiles(join(root, r))).sort()) {
    const file = parse(path);
    if (file === undefined || importsNodeTest(file)) continue;
    const at = (node: ts.Node): { file: string; line: number } => ({
      file: relative(root, path),
      line: file.getLineAndCharacterOfPosition(node.getStart(file)).line + 1,
    });
    const add = (types: readonly ValueAt[]): void => {
      for (const t of types) found.push({ type: t.value, ...at(t.node) });
    };
    const visit = (node: ts.Node): void => {
      if (isTaskErrorCall(node) && node.arguments?.[0] !== undefined) {
        add(stringValues(node.arguments[0], parse, new Set()));
      } else if (ts.isObjectLiteralExpression(node) && hasMember(node.properties, "message")) {
        for (const p of node.properties) {
          if (memberName(p) !== "type") continue;
          if (ts.isPropertyAssignment(p)) add(stringValues(p.initializer, parse, new Set()));
          else if (ts.isShorthandPropertyAssignment(p)) add(stringValues(p.name, parse, new Set()));
        }
      } else if (
        (ts.isInterfaceDeclaration(node) || ts.isTypeLiteralNode(node)) &&
        hasMember(node.members, "message")
      ) {
        for (const m of node.members) {
          if (ts.isPropertySignature(m) && memberName(m) === "type" && m.type !== undefined)
            add(typeValues(m.type, parse));
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(file);
  }
  return found;
}

/** The produced types outside the vocabulary, as `file:line: TYPE` lines. */
export function unknownErrorTypes(found: readonly ProducedType[]): string[] {
  return found.filter((f) => !isKnownErrorType(f.type)).map((f) => `${f.file}:${f.line}: ${f.type}`);
}

/**
 * The first column of the table under {@link README_HEADING} (its first `code` span per row),
 * or undefined when there is no such heading or no table under it.
 */
export function readmeErrorTypes(markdown: string): string[] | undefined {
  const lines = markdown.split("\n");
  const start = lines.findIndex((l) => l.trim() === README_HEADING);
  if (start < 0) return undefined;
  let i = start + 1;
  while (i < lines.length && lines[i]?.trim() === "") i++;
  // Prose may introduce the table; it starts at the first row before the next heading.
  while (i < lines.length && !lines[i]?.trimStart().startsWith("|") && !lines[i]?.startsWith("#")) i++;
  const rows: string[] = [];
  for (; i < lines.length && lines[i]?.trimStart().startsWith("|"); i++) rows.push(lines[i] ?? "");
  if (rows.length < 3) return undefined; // header, separator, at least one row
  return rows.slice(2).map((row) => {
    const first = row.split("|")[1] ?? "";
    return /`([^`]+)`/.exec(first)?.[1] ?? first.trim();
  });
}

/** What the README's table should list: every TaskErrorType, then the two families. */
export function expectedReadmeRows(): string[] {
  return [...TASK_ERROR_TYPES, HTTP_STATUS_ROW, THROWN_ERROR_ROW];
}

// ---- reading string values out of expressions ----

interface ValueAt {
  readonly value: string;
  readonly node: ts.Node;
}

type Parse = (path: string) => ts.SourceFile | undefined;

function importsNodeTest(file: ts.SourceFile): boolean {
  return file.statements.some(
    (s) =>
      ts.isImportDeclaration(s) &&
      ts.isStringLiteral(s.moduleSpecifier) &&
      s.moduleSpecifier.text === "node:test",
  );
}

/** `TaskError.terminal(`, `TaskError.retryable(`, `new TaskError(`. */
function isTaskErrorCall(node: ts.Node): node is ts.CallExpression | ts.NewExpression {
  if (ts.isNewExpression(node))
    return ts.isIdentifier(node.expression) && node.expression.text === "TaskError";
  if (!ts.isCallExpression(node) || !ts.isPropertyAccessExpression(node.expression)) return false;
  const { expression, name } = node.expression;
  return (
    ts.isIdentifier(expression) &&
    expression.text === "TaskError" &&
    (name.text === "terminal" || name.text === "retryable")
  );
}

function memberName(member: ts.ObjectLiteralElementLike | ts.TypeElement): string | undefined {
  const name = member.name;
  if (name === undefined) return undefined;
  return ts.isIdentifier(name) || ts.isStringLiteral(name) ? name.text : undefined;
}

function hasMember(
  members: readonly (ts.ObjectLiteralElementLike | ts.TypeElement)[],
  name: string,
): boolean {
  return members.some((m) => memberName(m) === name);
}

/** The strings `expr` can evaluate to, as far as the source says; `seen` stops cycles of consts. */
function stringValues(expr: ts.Expression, parse: Parse, seen: Set<ts.Node>): ValueAt[] {
  if (ts.isStringLiteral(expr) || ts.isNoSubstitutionTemplateLiteral(expr))
    return [{ value: expr.text, node: expr }];
  if (ts.isTemplateExpression(expr)) return [{ value: expr.getText(), node: expr }];
  if (
    ts.isParenthesizedExpression(expr) ||
    ts.isAsExpression(expr) ||
    ts.isNonNullExpression(expr) ||
    ts.isSatisfiesExpression(expr)
  )
    return stringValues(expr.expression, parse, seen);
  if (ts.isConditionalExpression(expr))
    return [...stringValues(expr.whenTrue, parse, seen), ...stringValues(expr.whenFalse, parse, seen)];
  if (ts.isBinaryExpression(expr)) {
    const op = expr.operatorToken.kind;
    if (op === ts.SyntaxKind.QuestionQuestionToken || op === ts.SyntaxKind.BarBarToken)
      return [...stringValues(expr.left, parse, seen), ...stringValues(expr.right, parse, seen)];
    return [];
  }
  if (ts.isCallExpression(expr)) return expr.arguments.flatMap((a) => stringValues(a, parse, seen));
  if (ts.isPropertyAccessExpression(expr)) {
    if (!ts.isIdentifier(expr.expression) || expr.expression.text !== "TaskErrorType") return [];
    return [vocabularyValue(expr.name.text, expr)];
  }
  if (ts.isIdentifier(expr)) return identifierValues(expr, parse, seen);
  return [];
}

function vocabularyValue(name: string, node: ts.Node): ValueAt {
  const value = (TaskErrorType as Record<string, string | undefined>)[name];
  return { value: value ?? `TaskErrorType.${name}`, node };
}

/** A `const` in scope in the same file, or imported: a relative module's export, or the vocabulary's. */
function identifierValues(id: ts.Identifier, parse: Parse, seen: Set<ts.Node>): ValueAt[] {
  const file = id.getSourceFile();
  for (let scope: ts.Node | undefined = id.parent; scope !== undefined; scope = scope.parent) {
    if (!ts.isBlock(scope) && !ts.isSourceFile(scope) && !ts.isModuleBlock(scope) && !ts.isCaseClause(scope))
      continue;
    for (const statement of scope.statements) {
      const init = constInitializer(statement, id.text);
      if (init === undefined || seen.has(init)) continue;
      seen.add(init);
      return stringValues(init, parse, seen).map((v) => ({ value: v.value, node: id }));
    }
  }
  for (const statement of file.statements) {
    if (!ts.isImportDeclaration(statement) || !ts.isStringLiteral(statement.moduleSpecifier)) continue;
    const bindings = statement.importClause?.namedBindings;
    if (bindings === undefined || !ts.isNamedImports(bindings)) continue;
    const binding = bindings.elements.find((e) => e.name.text === id.text);
    if (binding === undefined) continue;
    const exported = (binding.propertyName ?? binding.name).text;
    const specifier = statement.moduleSpecifier.text;
    if (specifier.startsWith(".")) {
      const target = parse(resolve(dirname(file.fileName), specifier.replace(/\.js$/, ".ts")));
      const init = target?.statements.map((s) => constInitializer(s, exported)).find((i) => i !== undefined);
      if (init === undefined || seen.has(init)) return [];
      seen.add(init);
      return stringValues(init, parse, seen).map((v) => ({ value: v.value, node: id }));
    }
    if (specifier === "@nexusflow/common" || specifier === "@nexusflow/common/task-error-types") {
      const value = (taskErrorTypes as Record<string, unknown>)[exported];
      return typeof value === "string" ? [{ value, node: id }] : [];
    }
  }
  return [];
}

function constInitializer(statement: ts.Statement, name: string): ts.Expression | undefined {
  if (!ts.isVariableStatement(statement) || !(statement.declarationList.flags & ts.NodeFlags.Const))
    return undefined;
  const declaration = statement.declarationList.declarations.find(
    (d) => ts.isIdentifier(d.name) && d.name.text === name,
  );
  return declaration?.initializer;
}

/** The strings a type annotation allows: string literal types, unions of them, `typeof TaskErrorType.X`. */
function typeValues(type: ts.TypeNode, parse: Parse): ValueAt[] {
  if (ts.isLiteralTypeNode(type) && ts.isStringLiteral(type.literal))
    return [{ value: type.literal.text, node: type }];
  if (ts.isUnionTypeNode(type)) return type.types.flatMap((t) => typeValues(t, parse));
  if (ts.isParenthesizedTypeNode(type)) return typeValues(type.type, parse);
  if (ts.isTypeQueryNode(type) && ts.isQualifiedName(type.exprName)) {
    const { left, right } = type.exprName;
    if (ts.isIdentifier(left) && left.text === "TaskErrorType") return [vocabularyValue(right.text, type)];
  }
  return [];
}
