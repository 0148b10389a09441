/**
 * Path templates of `google.api.http` rules (google/api/http.proto):
 *
 *     Template = "/" Segments [ Verb ] ;
 *     Segments = Segment { "/" Segment } ;
 *     Segment  = "*" | "**" | LITERAL | Variable ;
 *     Variable = "{" FieldPath [ "=" Segments ] "}" ;
 *     FieldPath = IDENT { "." IDENT } ;
 *     Verb     = ":" LITERAL ;
 *
 * A variable without a pattern matches one segment (`{name}` is `{name=*}`); `**` matches the rest
 * of the path and must come last. Matched single-segment values are percent-decoded; values that
 * span segments keep `%2F` encoded, so a `/` inside a segment stays distinguishable (the spec's
 * reserved expansion).
 */

/** One segment of a template. */
export type TemplateSegment =
  | { readonly kind: "literal"; readonly value: string }
  | { readonly kind: "wildcard" }
  | { readonly kind: "deep" };

/** A `{field.path=...}` variable: the field it binds and the segments it covers. */
export interface TemplateVariable {
  /** The field path, e.g. ["run_id"] or ["run", "id"]. */
  readonly fieldPath: readonly string[];
  /** Index of the first segment it covers. */
  readonly start: number;
  /** Index after the last segment it covers. */
  readonly end: number;
}

/** A parsed path template. */
export interface PathTemplate {
  /** The template as written. */
  readonly text: string;
  readonly segments: readonly TemplateSegment[];
  readonly variables: readonly TemplateVariable[];
  /** The custom verb after the last `:`, if any, e.g. "cancel". */
  readonly verb: string | undefined;
}

/** A template that does not follow the grammar; the message names the position. */
export class TemplateError extends Error {
  override name = "TemplateError";
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** RFC 3986 pchar minus the characters the grammar uses. */
const LITERAL = /^[A-Za-z0-9\-._~!$&'()+,;=@%]+$/;

/** Parses `text`. Throws {@link TemplateError}. */
export function parsePathTemplate(text: string): PathTemplate {
  let pos = 0;
  const fail = (what: string): never => {
    throw new TemplateError(`invalid path template ${JSON.stringify(text)} at ${pos}: ${what}`);
  };
  const segments: TemplateSegment[] = [];
  const variables: TemplateVariable[] = [];
  let verb: string | undefined;

  const readUntil = (stops: string): string => {
    const start = pos;
    while (pos < text.length && !stops.includes(text.charAt(pos))) pos++;
    return text.slice(start, pos);
  };

  const parseSegments = (inVariable: boolean): void => {
    for (;;) {
      if (text.charAt(pos) === "{") {
        if (inVariable) fail("nested variable");
        pos++;
        const path = readUntil("=}");
        const fieldPath = path.split(".");
        if (!fieldPath.every((p) => IDENT.test(p))) fail(`bad field path ${JSON.stringify(path)}`);
        const start = segments.length;
        if (text.charAt(pos) === "=") {
          pos++;
          parseSegments(true);
        } else {
          segments.push({ kind: "wildcard" });
        }
        if (text.charAt(pos) !== "}") fail("expected }");
        pos++;
        variables.push({ fieldPath, start, end: segments.length });
      } else {
        const raw = readUntil(inVariable ? "/}" : "/:");
        if (raw === "*") segments.push({ kind: "wildcard" });
        else if (raw === "**") segments.push({ kind: "deep" });
        else if (LITERAL.test(raw)) segments.push({ kind: "literal", value: raw });
        else fail(raw === "" ? "empty segment" : `bad segment ${JSON.stringify(raw)}`);
      }
      if (text.charAt(pos) !== "/") return;
      pos++;
    }
  };

  if (!text.startsWith("/")) fail("must start with /");
  pos = 1;
  parseSegments(false);
  if (text.charAt(pos) === ":") {
    pos++;
    verb = readUntil("");
    if (!LITERAL.test(verb)) fail("bad verb");
  }
  if (pos !== text.length) fail(`unexpected ${JSON.stringify(text.charAt(pos))}`);
  const deep = segments.findIndex((s) => s.kind === "deep");
  if (deep !== -1 && deep !== segments.length - 1) {
    pos = 0;
    fail("** must be the last segment");
  }
  return { text, segments, variables, verb };
}

/** Percent-decodes `segment`; with `keepSlash`, an encoded "/" stays "%2F". Undefined when malformed. */
function decodeSegment(segment: string, keepSlash: boolean): string | undefined {
  try {
    return keepSlash
      ? segment
          .split(/%2F/i)
          .map((p) => decodeURIComponent(p))
          .join("%2F")
      : decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}

/**
 * Matches a request path (raw, without the query) against `template`. Returns the variables'
 * values by dotted field path, or undefined when the path does not match.
 */
export function matchPathTemplate(template: PathTemplate, path: string): Map<string, string> | undefined {
  if (!path.startsWith("/")) return undefined;
  let rest = path.slice(1);
  if (template.verb !== undefined) {
    const suffix = `:${template.verb}`;
    if (!rest.endsWith(suffix)) return undefined;
    rest = rest.slice(0, -suffix.length);
  }
  const parts = rest.split("/");
  const segs = template.segments;
  const last = segs[segs.length - 1];
  const deep = last?.kind === "deep";
  if (deep ? parts.length < segs.length - 1 : parts.length !== segs.length) return undefined;
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i] as TemplateSegment;
    const part = parts[i];
    if (seg.kind === "deep") break;
    if (part === undefined || part === "") return undefined;
    if (seg.kind === "literal" && part !== seg.value) return undefined;
  }
  const values = new Map<string, string>();
  for (const v of template.variables) {
    const coversDeep = deep && v.end === segs.length;
    const taken = coversDeep ? parts.slice(v.start) : parts.slice(v.start, v.end);
    const multi = coversDeep || v.end - v.start > 1;
    const decoded = taken.map((p) => decodeSegment(p, multi));
    if (decoded.some((d) => d === undefined)) return undefined;
    values.set(v.fieldPath.join("."), decoded.join("/"));
  }
  return values;
}

/**
 * How specific a template is, for choosing between templates that match the same path: a verb
 * first, then more literal segments, then fewer wildcards.
 */
export function templateRank(template: PathTemplate): [number, number, number] {
  const literals = template.segments.filter((s) => s.kind === "literal").length;
  const wild = template.segments.filter((s) => s.kind !== "literal").length;
  return [template.verb === undefined ? 0 : 1, literals, -wild];
}
