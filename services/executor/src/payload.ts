/**
 * JSON payloads on the wire (task input, output, progress, error details): what a handler returns
 * is checked to be JSON and small enough before it becomes a `google.protobuf.Value`.
 */
import { fromJson, toBinary, toJson, type JsonValue } from "@bufbuild/protobuf";
import { type Value, ValueSchema } from "@bufbuild/protobuf/wkt";

/**
 * Why a value cannot be sent (NUL: it holds U+0000, which PostgreSQL stores in no text; TOO_DEEP:
 * it is nested deeper than {@link MAX_PAYLOAD_DEPTH}).
 */
export type PayloadProblem = "NOT_JSON" | "TOO_LARGE" | "NUL" | "TOO_DEEP";

/**
 * Deepest nesting of arrays and objects in a value reported to the scheduler (an output, progress,
 * error details). The scheduler decodes each session message (each item of a Reports message
 * alone) with protobuf's limit of 100 nested messages; a `google.protobuf.Value` takes two per
 * level (Value and ListValue or Struct) under the report's own (SessionRequest or Report, Completed
 * or Heartbeat; Failed and TaskError for details). 48 levels is the most every report carries: a
 * deeper value would be refused undecoded, without its lease, so the task would never end.
 */
export const MAX_PAYLOAD_DEPTH = 48;

/**
 * Most bytes a value takes as a `google.protobuf.Value` in a report: 1 MiB below the scheduler's
 * 16 MiB receive limit. JSON grows up to 5.5 times as protobuf (`[0,0,...]`: two characters, eleven
 * bytes each), so a value within the JSON limit may not fit: one past it would break the session,
 * again at every reconnection while the report waits.
 */
export const MAX_ENCODED_PAYLOAD_BYTES = 15 * 1024 * 1024;
/** JSON bytes that are certainly within {@link MAX_ENCODED_PAYLOAD_BYTES} as protobuf. */
const SURELY_FITS_JSON_BYTES = Math.floor(MAX_ENCODED_PAYLOAD_BYTES / 5.5) - 64;

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
 * null). Throws {@link PayloadError} when it is not serialisable, its JSON exceeds `maxBytes` or
 * it is nested deeper than {@link MAX_PAYLOAD_DEPTH}.
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
  const json = checkDepth(JSON.parse(text) as JsonValue);
  if (bytes > SURELY_FITS_JSON_BYTES) {
    const encoded = toBinary(ValueSchema, toValue(json)).byteLength;
    if (encoded > MAX_ENCODED_PAYLOAD_BYTES)
      throw new PayloadError(
        "TOO_LARGE",
        `${bytes} bytes of JSON are ${encoded} bytes as protobuf, more than the ${MAX_ENCODED_PAYLOAD_BYTES} a report to the scheduler may carry`,
      );
  }
  return json;
}

/** `json` itself; throws {@link PayloadError} TOO_DEEP when it is nested deeper than {@link MAX_PAYLOAD_DEPTH}. */
export function checkDepth(json: JsonValue): JsonValue {
  if (deeperThan(json, MAX_PAYLOAD_DEPTH))
    throw new PayloadError(
      "TOO_DEEP",
      `nested deeper than ${MAX_PAYLOAD_DEPTH} levels of arrays and objects, more than a report to the scheduler can carry`,
    );
  return json;
}

/** Whether `value` holds arrays or objects more than `levels` deep (recursion at most `levels` + 1 deep). */
function deeperThan(value: unknown, levels: number): boolean {
  if (value === null || typeof value !== "object") return false;
  if (levels === 0) return true;
  const items: unknown[] = Array.isArray(value) ? value : Object.values(value);
  for (const item of items) if (deeperThan(item, levels - 1)) return true;
  return false;
}

/** A JSON value as a `google.protobuf.Value` (checked ones: {@link toJsonPayload} and {@link checkDepth}). */
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
