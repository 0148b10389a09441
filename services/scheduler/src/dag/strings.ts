/** What expressions do with strings, bounded (expr.ts). */
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
