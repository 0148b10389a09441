/**
 * Text from outside (a client's message, a handler's error) bounded before it is stored, logged or
 * sent on.
 */

/**
 * `text` made well-formed (a lone surrogate replaced: grpc-js percent-encodes details with
 * encodeURI, which throws on one, and PostgreSQL's jsonb refuses one) and cut to `max` UTF-16 code
 * units, saying how much was cut.
 */
export function boundedText(text: string, max: number): string {
  if (text.length <= max) return text.toWellFormed();
  return `${text.slice(0, max).toWellFormed()}… (${text.length - max} more characters)`;
}
