/** What expressions do with strings, bounded (expr.ts, operators.ts, template.ts). */
import { EvaluationError } from "./errors.js";

/** Longest string `+` makes (16 Mi characters): past it a key or condition only burns memory. */
export const MAX_JOINED_CHARS = 16 * 1024 * 1024;

/** The code points of `s` (what len() counts), without making an array of them. */
export function codePoints(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length - 1; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}

/** `left + right` (expr.ts `+`), refused past {@link MAX_JOINED_CHARS}. */
export function joined(left: string, right: string): string {
  const length = left.length + right.length;
  if (length > MAX_JOINED_CHARS)
    throw new EvaluationError(
      `"+" would make a string of ${length} characters, more than ${MAX_JOINED_CHARS}`,
    );
  return left + right;
}

/** `U+D800`: a UTF-16 code unit as messages name it. */
export function unitName(unit: number): string {
  return `U+${unit.toString(16).toUpperCase().padStart(4, "0")}`;
}

/**
 * Code units of the character at `at`: 2 for a surrogate pair, 1 for any other character, 0 for a
 * lone surrogate (which no UTF-8 text, protobuf string or PostgreSQL value can hold).
 */
export function surrogatePairAt(s: string, at: number): 0 | 1 | 2 {
  const c = s.charCodeAt(at);
  if (c < 0xd800 || c > 0xdfff) return 1;
  if (c >= 0xdc00) return 0;
  const d = s.charCodeAt(at + 1);
  return d >= 0xdc00 && d <= 0xdfff ? 2 : 0;
}

/** The low surrogate written as a `\uDC00`-`\uDFFF` escape at `at` of an expression's source, if one is there. */
export function escapedLowSurrogate(src: string, at: number): number | undefined {
  const escape = /^\\u([dD][c-fC-F][0-9a-fA-F]{2})$/.exec(src.slice(at, at + 6));
  return escape === null ? undefined : parseInt(escape[1] as string, 16);
}

/** Why a `\u` escape of a surrogate is refused, with the way to write the character. */
export function loneSurrogateEscape(code: number): string {
  const hex = code.toString(16).toUpperCase();
  return code <= 0xdbff
    ? `lone surrogate "\\u${hex}": a high surrogate escape must be followed by a low one ` +
        `(\\uDC00-\\uDFFF), as in "\\uD83D\\uDE00"`
    : `lone surrogate "\\u${hex}": a low surrogate escape must follow a high one (\\uD800-\\uDBFF), ` +
        `as in "\\uD83D\\uDE00"`;
}
