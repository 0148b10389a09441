/** Conversions between plain JSON and `google.protobuf.Value` messages (protobuf-es keeps Value boxed). */
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";

/** JSON (undefined counts as null) to a Value message. */
export function jsonToValue(json: unknown): Value {
  return fromJson(ValueSchema, (json ?? null) as JsonValue);
}

/** A Value message (or its absence) to JSON; absent is null. */
export function valueToJson(value: Value | undefined): JsonValue {
  return value === undefined ? null : toJson(ValueSchema, value);
}

/** The ErrorInfo-like object with details converted to a Value. */
export function errorToProto<
  E extends { type: string; message: string; retryable: boolean; details?: unknown },
>(error: E): { type: string; message: string; retryable: boolean; details?: Value } {
  return {
    type: error.type,
    message: error.message,
    retryable: error.retryable,
    ...(error.details === undefined ? {} : { details: jsonToValue(error.details) }),
  };
}

/**
 * Where `value` holds a string with a NUL character (U+0000), as a path from `path` ("input.a[2]"),
 * or undefined. PostgreSQL stores neither text nor jsonb with NUL in it: such a value is refused
 * where it enters (an API field, an executor's report), never accepted and then failing to commit.
 */
export function nulCharacterPath(value: unknown, path: string): string | undefined {
  if (typeof value === "string") return value.includes("\u0000") ? path : undefined;
  if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) {
      const found = nulCharacterPath(item, `${path}[${i}]`);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  if (value !== null && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) {
      const at = `${path}.${key}`;
      if (key.includes("\u0000")) return at;
      const found = nulCharacterPath(item, at);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/**
 * `value` with every NUL character (U+0000) in its strings, keys included, replaced by U+FFFD:
 * for text kept to be read (an error message, a command's stderr) rather than refused.
 */
export function replaceNulCharacters<T>(value: T): T {
  if (typeof value === "string")
    return (value.includes("\u0000") ? value.replaceAll("\u0000", "\ufffd") : value) as T;
  if (Array.isArray(value)) return value.map(replaceNulCharacters) as T;
  if (value !== null && typeof value === "object")
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [replaceNulCharacters(k), replaceNulCharacters(v)]),
    ) as T;
  return value;
}
