/** Conversions between plain JSON and `google.protobuf.Value` messages (protobuf-es keeps Value boxed). */
import {
  fromJson,
  toJson,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  type MessageShape,
} from "@bufbuild/protobuf";
import { ValueSchema, type ListValue, type Struct, type Timestamp, type Value } from "@bufbuild/protobuf/wkt";
import { ApiError, Code } from "./errors.js";

/** JSON (undefined counts as null) to a Value message. */
export function jsonToValue(json: unknown): Value {
  return fromJson(ValueSchema, (json ?? null) as JsonValue);
}

/** A Value message (or its absence) to JSON; absent is null. Throws for a Value with no JSON form. */
export function valueToJson(value: Value | undefined): JsonValue {
  return value === undefined ? null : toJson(ValueSchema, value);
}

/**
 * A `google.protobuf.Value` (or Struct, or ListValue) a client sent with no JSON form: no kind set,
 * NaN, Infinity or -Infinity. An INVALID_ARGUMENT {@link ApiError} whose field violation is `path`
 * (where: "completed.output.items[2]") and `reason` (what); the message is `${path}: ${reason}`.
 * Raised by {@link valueToJsonChecked} and {@link checkJsonForm}.
 */
export class JsonValueError extends ApiError {
  override name = "JsonValueError";
  constructor(
    /** Where the value is, from the path given by the caller: `input.a.b`, `output.items[2]`. */
    readonly path: string,
    /** What is wrong with it, e.g. "NaN has no JSON form". */
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(Code.INVALID_ARGUMENT, `${path}: ${reason}`, [{ field: path, description: reason }], options);
  }
}

/** Type guard for {@link JsonValueError}. */
export function isJsonValueError(e: unknown): e is JsonValueError {
  return e instanceof JsonValueError;
}

/** Sets an own property, "__proto__" included (as protobuf-es's own toJson does). */
function setOwn(obj: Record<string, JsonValue>, key: string, value: JsonValue): void {
  if (key === "__proto__")
    Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
  else obj[key] = value;
}

function structToJsonChecked(struct: Struct, path: string): JsonObject {
  const json: JsonObject = {};
  for (const key of Object.keys(struct.fields)) {
    setOwn(json, key, valueToJsonChecked(struct.fields[key], `${path}.${key}`));
  }
  return json;
}

function listToJsonChecked(list: ListValue, path: string): JsonValue[] {
  return list.values.map((v, i) => valueToJsonChecked(v, `${path}[${i}]`));
}

/**
 * A Value message (or its absence: null) to JSON, for a value a client sent: one with no JSON form
 * (no kind set, NaN, ±Infinity; at the top or nested in a struct or list) throws
 * {@link JsonValueError} naming where it is, from `path` (`input.a.b`, `completed.output.items[2]`).
 * The same JSON as {@link valueToJson} otherwise (-0 included, as 0 is written in JSON).
 */
export function valueToJsonChecked(value: Value | undefined, path: string): JsonValue {
  if (value === undefined) return null;
  const kind = value.kind;
  switch (kind.case) {
    case "nullValue":
      return null;
    case "boolValue":
    case "stringValue":
      return kind.value;
    case "numberValue":
      if (Number.isNaN(kind.value)) throw new JsonValueError(path, "NaN has no JSON form");
      if (!Number.isFinite(kind.value))
        throw new JsonValueError(path, `${kind.value > 0 ? "Infinity" : "-Infinity"} has no JSON form`);
      return kind.value;
    case "structValue":
      return structToJsonChecked(kind.value, path);
    case "listValue":
      return listToJsonChecked(kind.value, path);
    default:
      throw new JsonValueError(path, "a Value with no kind set has no JSON form");
  }
}

/** The range of a Timestamp's proto3 JSON form, in milliseconds since the epoch. */
const TIMESTAMP_MS_MIN = Date.parse("0001-01-01T00:00:00Z");
const TIMESTAMP_MS_MAX = Date.parse("9999-12-31T23:59:59Z");

/**
 * Throws {@link JsonValueError} for the first `google.protobuf.Value`, `Struct` or `ListValue`
 * anywhere in `message` (a message of `schema`, e.g. a WorkflowSpec a client sent) that has no JSON
 * form, or `Timestamp` outside proto3 JSON's range, named by proto field names from `path`
 * (`spec.steps[2].input.a`), so that `toJson` of the message cannot fail on one. Messages of other
 * well-known types (Duration, Any, ...) are not looked into.
 */
export function checkJsonForm<Desc extends DescMessage>(
  schema: Desc,
  message: MessageShape<Desc>,
  path: string,
): void {
  checkMessage(schema, message, path);
}

/** Throws {@link JsonValueError} for a NaN or ±Infinity anywhere in plain JSON-like data. */
function checkPlainJson(json: unknown, path: string): void {
  if (typeof json === "number") {
    if (Number.isNaN(json)) throw new JsonValueError(path, "NaN has no JSON form");
    if (!Number.isFinite(json))
      throw new JsonValueError(path, `${json > 0 ? "Infinity" : "-Infinity"} has no JSON form`);
  } else if (Array.isArray(json)) {
    for (const [i, item] of json.entries()) checkPlainJson(item, `${path}[${i}]`);
  } else if (json !== null && typeof json === "object") {
    for (const key of Object.keys(json))
      checkPlainJson((json as Record<string, unknown>)[key], `${path}.${key}`);
  }
}

function checkMessage(schema: DescMessage, message: unknown, path: string): void {
  switch (schema.typeName) {
    case "google.protobuf.Value":
      valueToJsonChecked(message as Value, path);
      return;
    case "google.protobuf.Struct":
      // In a message field protobuf-es keeps a Struct as plain JSON (JsonObject), where a number
      // that was NaN or ±Infinity on the wire stays one (a Value with no kind became null).
      if ((message as Partial<Struct>).$typeName === "google.protobuf.Struct")
        structToJsonChecked(message as Struct, path);
      else checkPlainJson(message, path);
      return;
    case "google.protobuf.ListValue":
      listToJsonChecked(message as ListValue, path);
      return;
    case "google.protobuf.Timestamp": {
      const { seconds, nanos } = message as Timestamp;
      const ms = Number(seconds) * 1000;
      if (!(ms >= TIMESTAMP_MS_MIN && ms <= TIMESTAMP_MS_MAX) || nanos < 0 || nanos > 999_999_999)
        throw new JsonValueError(
          path,
          "a Timestamp must be from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, with nanos from 0 to 999999999",
        );
      return;
    }
  }
  if (schema.typeName.startsWith("google.protobuf.")) return;
  const fields = message as Record<string, unknown>;
  for (const field of schema.fields) {
    let value: unknown;
    if (field.oneof === undefined) value = fields[field.localName];
    else {
      const oneof = fields[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
      value = oneof?.case === field.localName ? oneof.value : undefined;
    }
    if (value === undefined || value === null) continue;
    const at = `${path}.${field.name}`;
    if (field.fieldKind === "message") checkMessage(field.message, value, at);
    else if (field.fieldKind === "list" && field.listKind === "message") {
      for (const [i, item] of (value as unknown[]).entries())
        checkMessage(field.message, item, `${at}[${i}]`);
    } else if (field.fieldKind === "map" && field.mapKind === "message") {
      for (const [k, item] of Object.entries(value as Record<string, unknown>))
        checkMessage(field.message, item, `${at}.${k}`);
    }
  }
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
  const at = nulCharacterAt(value);
  return at === undefined ? undefined : `${path}${at}`;
}

/**
 * Where in `value` the first NUL is, as a path suffix ("" for `value` itself, `[2].a`), or
 * undefined; the path is built only for a value that has one (every report's output is checked).
 */
function nulCharacterAt(value: unknown): string | undefined {
  if (typeof value === "string") return value.includes("\u0000") ? "" : undefined;
  if (value === null || typeof value !== "object") return undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = nulCharacterAt(value[i]);
      if (found !== undefined) return `[${i}]${found}`;
    }
    return undefined;
  }
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (key.includes("\u0000")) return `.${key}`;
    const found = nulCharacterAt(record[key]);
    if (found !== undefined) return `.${key}${found}`;
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
