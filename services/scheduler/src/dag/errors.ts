/**
 * Errors of the DAG engine. All of them are terminal for the run step that hit them: retrying a
 * template or expression against the same data gives the same answer, so the scheduler must not
 * retry them. They are told apart by `code`, never by message text.
 */

/** One problem found in a workflow definition or a run input, located by a JSON path such as `$.steps[2].id`. */
export interface SpecError {
  /** JSON path of the offending value, e.g. `$.steps[2].dependsOn[0]`; `$` is the whole document. */
  readonly path: string;
  /** Human-readable explanation that names the field and what is accepted. */
  readonly message: string;
}

/** Closed set of codes carried by {@link DagError}. */
export type DagErrorCode =
  | "EXPRESSION_SYNTAX"
  | "EXPRESSION_ERROR"
  | "TEMPLATE_ERROR"
  | "INPUT_TOO_LARGE"
  | "UNKNOWN_STEP"
  | "INVALID_ARGUMENT";

/** Base class of every error thrown by the DAG engine. */
export class DagError extends Error {
  override name = "DagError";
  /** Machine-readable reason; match on this, not on the message. */
  readonly code: DagErrorCode;
  /** Always true: the same inputs fail the same way, so retrying cannot help. */
  readonly terminal = true;

  /** Creates an error with a code; `cause` is kept for diagnostics. */
  constructor(code: DagErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** An expression (in `when` or inside `{{ }}`) that does not parse; `position` is a 0-based offset. */
export class ExpressionSyntaxError extends DagError {
  override name = "ExpressionSyntaxError";
  /** 0-based character offset into the source text (the whole string for templates). */
  readonly position: number;

  /** Creates a syntax error; the message gets the position appended. */
  constructor(message: string, position: number) {
    super("EXPRESSION_SYNTAX", `${message} at position ${position}`);
    this.position = position;
  }
}

/** An expression that parsed but cannot be evaluated against the run's data (missing path, wrong types). */
export class EvaluationError extends DagError {
  override name = "EvaluationError";
  /** The path text that did not resolve (e.g. `input.amount`), when that is the reason. */
  readonly ref: string | undefined;

  /** Creates an evaluation error, optionally naming the unresolved path. */
  constructor(message: string, ref?: string) {
    super("EXPRESSION_ERROR", message);
    this.ref = ref;
  }
}

/** A template that cannot be rendered; `at` locates the templated value, `ref` the unresolved path. */
export class RenderError extends DagError {
  override name = "RenderError";
  /** JSON path of the templated string inside the rendered value (e.g. `$.steps[1].input.body`). */
  readonly at: string;
  /** The expression path that did not resolve, when that is the reason. */
  readonly ref: string | undefined;

  /** Wraps the evaluation failure `cause` of the template string at `at`. */
  constructor(
    at: string,
    message: string,
    ref: string | undefined,
    options?: ErrorOptions,
    code: "TEMPLATE_ERROR" | "INPUT_TOO_LARGE" = "TEMPLATE_ERROR",
  ) {
    super(code, `${at}: ${message}`, options);
    this.at = at;
    this.ref = ref;
  }
}

/**
 * A template whose rendered value would be larger than its caller allows (a task input larger than
 * a lease carries to an executor): code INPUT_TOO_LARGE, thrown while rendering, before the value
 * is whole; `at` locates the templated value that made it too large.
 */
export class InputTooLargeError extends RenderError {
  override name = "InputTooLargeError";
  /** The bound, in bytes. */
  readonly limit: number;

  /** `message` says what was being rendered. */
  constructor(at: string, message: string, limit: number) {
    super(at, message, undefined, undefined, "INPUT_TOO_LARGE");
    this.limit = limit;
  }
}

/** Type guard for engine errors, optionally of one code. */
export function isDagError(error: unknown, code?: DagErrorCode): error is DagError {
  return error instanceof DagError && (code === undefined || error.code === code);
}
