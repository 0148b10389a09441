/**
 * JSON payloads on the wire (task input, output, progress, error details): what a handler returns
 * is checked to be JSON and small enough before it becomes a `google.protobuf.Value`.
 */
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { type Value, ValueSchema } from "@bufbuild/protobuf/wkt";

/** Why a value cannot be sent (NUL: it holds U+0000, which PostgreSQL stores in no text). */
export type PayloadProblem = "NOT_JSON" | "TOO_LARGE" | "NUL";

/** Thrown by {@link toJsonPayload}. */
export class PayloadError extends Error {
  override name = "PayloadError";
  constructor(
    readonly problem: PayloadProblem,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The JSON form of `value` (as `JSON.stringify` sees it: `toJSON` applies, `undefined` becomes
 * null). Throws {@link PayloadError} when it is not serialisable or its JSON exceeds `maxBytes`.
 */
export function toJsonPayload(value: unknown, maxBytes: number): JsonValue {
  let text: string | undefined;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (e) {
    throw new PayloadError(
      "NOT_JSON",
      `not JSON-serialisable: ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
  if (text === undefined) throw new PayloadError("NOT_JSON", `not JSON-serialisable: a ${typeof value}`);
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > maxBytes)
    throw new PayloadError("TOO_LARGE", `${bytes} bytes of JSON, more than the limit of ${maxBytes}`);
  return JSON.parse(text) as JsonValue;
}

/** A JSON value as a `google.protobuf.Value`. */
export function toValue(json: JsonValue): Value {
  return fromJson(ValueSchema, json);
}

/** A `google.protobuf.Value` as JSON; an absent or empty Value is null. */
export function fromValue(value: Value | undefined): JsonValue {
  if (value === undefined || value.kind.case === undefined) return null;
  return toJson(ValueSchema, value);
}

/**
 * Whether JSON text made by `JSON.stringify` holds a U+0000 in a string: its escape `\u0000`
 * whose backslash is not itself escaped (an even run of backslashes before it).
 */
export function jsonTextHasNul(text: string): boolean {
  return text.includes("\\u0000") && /(?<!\\)(?:\\\\)*\\u0000/.test(text);
}
