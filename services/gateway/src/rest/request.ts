/**
 * Builds the request message of a REST call from its path variables, query parameters and JSON
 * body, following `google.api.http`:
 *
 * - `body: "*"`: the body is the whole request (proto3 JSON); path variables override its fields;
 *   query parameters are refused (nothing is left for them to bind).
 * - `body: "field"`: the body is that field; other fields come from the path and the query.
 * - no body: everything not in the path comes from the query.
 *
 * Query parameters name fields by proto or JSON name, dotted for nested messages
 * (`page_size=10`, `filter.state=...`); a repeated field takes the parameter once per element
 * (`statuses=RUNNING&statuses=FAILED`); a map entry is `labels[env]=prod`. Values are read as the
 * field's type: enums by name (`RUN_STATUS_RUNNING`, or `RUNNING` without the enum's prefix) or
 * number, timestamps as RFC 3339, durations as "1.5s", 64-bit integers as decimal text, bytes as
 * base64. Every problem is INVALID_ARGUMENT with a `google.rpc.BadRequest` naming the parameter.
 */
import {
  type DescEnum,
  type DescField,
  type DescMessage,
  type DescOneof,
  type JsonObject,
  type JsonValue,
  type MessageShape,
  ScalarType,
  fromJson,
} from "@bufbuild/protobuf";
import { isFieldError } from "@bufbuild/protobuf/reflect";
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { isLeafMessage, resolveFieldPath, type RestRoute } from "./routes.js";

/** An INVALID_ARGUMENT error with one field violation per problem. */
export function invalidArgument(violations: readonly { field: string; description: string }[]): ConnectError {
  const message = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
  return new ConnectError(message, Code.InvalidArgument, undefined, [
    { desc: BadRequestSchema, value: { fieldViolations: [...violations] } },
  ]);
}

class Violation extends Error {
  override name = "Violation";
  constructor(
    readonly field: string,
    readonly description: string,
  ) {
    super(`${field}: ${description}`);
  }
}

const INT32 = new Set([ScalarType.INT32, ScalarType.SINT32, ScalarType.SFIXED32]);
const UINT32 = new Set([ScalarType.UINT32, ScalarType.FIXED32]);
const INT64 = new Set([ScalarType.INT64, ScalarType.SINT64, ScalarType.SFIXED64]);
const UINT64 = new Set([ScalarType.UINT64, ScalarType.FIXED64]);

function scalarFromText(type: ScalarType, text: string, name: string): JsonValue {
  const bad = (what: string): never => {
    throw new Violation(name, `expected ${what}, got ${JSON.stringify(text)}`);
  };
  if (type === ScalarType.STRING || type === ScalarType.BYTES) return text;
  if (type === ScalarType.BOOL) {
    if (text === "true") return true;
    if (text === "false") return false;
    return bad("true or false");
  }
  if (INT32.has(type) || UINT32.has(type)) {
    const unsigned = UINT32.has(type);
    if (!(unsigned ? /^\d+$/ : /^-?\d+$/).test(text))
      return bad(unsigned ? "an unsigned integer" : "an integer");
    const n = Number(text);
    const [min, max] = unsigned ? [0, 4294967295] : [-2147483648, 2147483647];
    if (n < min || n > max) return bad(`an integer between ${min} and ${max}`);
    return n;
  }
  if (INT64.has(type) || UINT64.has(type)) {
    const unsigned = UINT64.has(type);
    if (!(unsigned ? /^\d+$/ : /^-?\d+$/).test(text))
      return bad(unsigned ? "an unsigned integer" : "an integer");
    return text;
  }
  // FLOAT, DOUBLE: the JSON mapping's special values are strings.
  if (text === "NaN" || text === "Infinity" || text === "-Infinity") return text;
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n)) return bad("a number");
  return n;
}

/** The JSON name of an enum value given by full name, name without the enum's prefix, or number. */
function enumFromText(e: DescEnum, text: string, name: string): JsonValue {
  if (/^-?\d+$/.test(text)) return Number(text);
  const upper = text.toUpperCase();
  const value =
    e.values.find((v) => v.name === text) ?? e.values.find((v) => v.localName.toUpperCase() === upper);
  if (value === undefined) {
    throw new Violation(
      name,
      `expected one of ${e.values.map((v) => v.localName).join(", ")}, got ${JSON.stringify(text)}`,
    );
  }
  return value.name;
}

function wrapperFromText(message: DescMessage, text: string, name: string): JsonValue {
  switch (message.typeName) {
    case "google.protobuf.BoolValue":
      return scalarFromText(ScalarType.BOOL, text, name);
    case "google.protobuf.Int32Value":
      return scalarFromText(ScalarType.INT32, text, name);
    case "google.protobuf.UInt32Value":
      return scalarFromText(ScalarType.UINT32, text, name);
    case "google.protobuf.Int64Value":
      return scalarFromText(ScalarType.INT64, text, name);
    case "google.protobuf.UInt64Value":
      return scalarFromText(ScalarType.UINT64, text, name);
    case "google.protobuf.FloatValue":
    case "google.protobuf.DoubleValue":
      return scalarFromText(ScalarType.DOUBLE, text, name);
    default:
      // Timestamp (RFC 3339), Duration ("1.5s"), FieldMask, StringValue, BytesValue: strings.
      try {
        fromJson(message, text);
      } catch (e) {
        throw new Violation(name, e instanceof Error ? e.message : String(e));
      }
      return text;
  }
}

/** Reads a path or query value as the JSON value of a singular field (or one element of a list). */
function valueFromText(field: DescField, text: string, name: string): JsonValue {
  switch (field.fieldKind) {
    case "scalar":
      return scalarFromText(field.scalar, text, name);
    case "enum":
      return enumFromText(field.enum, text, name);
    case "message":
      if (!isLeafMessage(field.message))
        throw new Violation(name, "a message cannot be a parameter; set its fields");
      return wrapperFromText(field.message, text, name);
    case "list":
      switch (field.listKind) {
        case "scalar":
          return scalarFromText(field.scalar, text, name);
        case "enum":
          return enumFromText(field.enum, text, name);
        case "message":
          if (!isLeafMessage(field.message))
            throw new Violation(name, "a list of messages cannot be a parameter");
          return wrapperFromText(field.message, text, name);
      }
      break;
    case "map":
      switch (field.mapKind) {
        case "scalar":
          return scalarFromText(field.scalar, text, name);
        case "enum":
          return enumFromText(field.enum, text, name);
        case "message":
          if (!isLeafMessage(field.message))
            throw new Violation(name, "a map of messages cannot be a parameter");
          return wrapperFromText(field.message, text, name);
      }
  }
  throw new Violation(name, "unsupported field");
}

function isObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The object at `fields` inside `json` (created as needed), keyed by JSON names. */
function objectAt(json: JsonObject, fields: readonly DescField[]): JsonObject {
  let obj = json;
  for (const field of fields) {
    const key = normalizeKey(obj, field);
    const next = obj[key];
    if (isObject(next)) {
      obj = next;
    } else {
      const created: JsonObject = {};
      obj[key] = created;
      obj = created;
    }
  }
  return obj;
}

/** Makes `obj` hold `field` under its JSON name only (a body may use the proto name); returns the key. */
function normalizeKey(obj: JsonObject, field: DescField): string {
  if (field.name !== field.jsonName && Object.hasOwn(obj, field.name)) {
    if (!Object.hasOwn(obj, field.jsonName)) obj[field.jsonName] = obj[field.name] as JsonValue;
    delete obj[field.name];
  }
  return field.jsonName;
}

function setAt(json: JsonObject, fields: readonly DescField[], value: JsonValue): void {
  const parent = objectAt(json, fields.slice(0, -1));
  const leaf = fields[fields.length - 1] as DescField;
  parent[normalizeKey(parent, leaf)] = value;
}

/** Query parameter names: `a.b` or `a.b[key]` for a map entry. */
const QUERY_NAME = /^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?:\[([^\]]*)\])?$/;

/**
 * The request message for `route`: `params` are the matched path variables by dotted field path,
 * `body` the parsed JSON body (undefined when none was sent). Throws a ConnectError with
 * INVALID_ARGUMENT.
 */
export function buildRequest(
  route: RestRoute,
  params: ReadonlyMap<string, string>,
  query: URLSearchParams,
  body: JsonValue | undefined,
): MessageShape<DescMessage> {
  const input = route.method.input;
  const violations: Violation[] = [];
  const attempt = (fn: () => void): void => {
    try {
      fn();
    } catch (e) {
      if (e instanceof Violation) violations.push(e);
      else throw e;
    }
  };

  let json: JsonObject = {};
  if (body !== undefined) {
    if (route.body === "*") {
      if (!isObject(body)) throw invalidArgument([{ field: "body", description: "expected a JSON object" }]);
      json = structuredClone(body);
    } else if (route.body !== "") {
      const fields = resolveFieldPath(input, [route.body]) as DescField[];
      setAt(json, fields, body);
    }
  }

  const bound = new Set<string>();
  if (route.body !== "" && route.body !== "*") bound.add(route.body);
  for (const [path, text] of params) {
    bound.add(path);
    attempt(() => {
      const fields = resolveFieldPath(input, path.split(".")) as DescField[];
      const leaf = fields[fields.length - 1] as DescField;
      setAt(json, fields, valueFromText(leaf, text, path));
    });
  }

  const names = [...new Set(query.keys())];
  if (route.body === "*" && names.length > 0) {
    throw invalidArgument(
      names.map((n) => ({
        field: n,
        description: "query parameters are not accepted: the body is the whole request",
      })),
    );
  }
  // What the query set so far, by proto path (and map key): `page_size` and `pageSize` name one field.
  const fromQuery = new Map<string, string>();
  const once = (name: string, target: string): void => {
    const earlier = fromQuery.get(target);
    if (earlier !== undefined) throw new Violation(name, `given more than once (also as ${earlier})`);
    fromQuery.set(target, name);
  };
  for (const name of names) {
    attempt(() => {
      const m = QUERY_NAME.exec(name);
      if (m === null) throw new Violation(name, "not a field path");
      const [, path = "", mapKey] = m;
      const fields = resolveFieldPath(input, path.split("."));
      const leaf = fields?.[fields.length - 1];
      if (fields === undefined || leaf === undefined)
        throw new Violation(name, `unknown query parameter for ${input.typeName}`);
      const protoPath = fields.map((f) => f.name).join(".");
      if (bound.has(protoPath) || [...bound].some((b) => protoPath.startsWith(`${b}.`))) {
        throw new Violation(name, "already bound by the path or the body");
      }
      const values = query.getAll(name);
      if (mapKey !== undefined) {
        if (leaf.fieldKind !== "map") throw new Violation(name, "[key] is only for map fields");
        if (values.length > 1) throw new Violation(name, "given more than once");
        once(name, `${protoPath}[${mapKey}]`);
        // Defined, not assigned: a key such as `__proto__` is an entry like any other.
        Object.defineProperty(objectAt(json, fields), mapKey, {
          value: valueFromText(leaf, values[0] ?? "", name),
          enumerable: true,
          writable: true,
          configurable: true,
        });
        return;
      }
      if (leaf.fieldKind === "map") throw new Violation(name, `a map: use ${name}[key]=value`);
      if (leaf.fieldKind === "list") {
        const parent = objectAt(json, fields.slice(0, -1));
        const key = normalizeKey(parent, leaf);
        const existing = parent[key];
        const list = Array.isArray(existing) ? existing : [];
        parent[key] = [...list, ...values.map((v) => valueFromText(leaf, v, name))];
        return;
      }
      if (values.length > 1) throw new Violation(name, "given more than once for a singular field");
      once(name, protoPath);
      setAt(json, fields, valueFromText(leaf, values[0] ?? "", name));
    });
  }
  if (violations.length > 0) throw invalidArgument(violations);

  try {
    return fromJson(input, json, { ignoreUnknownFields: false });
  } catch (e) {
    const cause = e instanceof Error ? e.cause : undefined;
    const field = isFieldError(cause) ? jsonPathOf(input, json, cause.field()) : undefined;
    throw invalidArgument([
      { field: field ?? "body", description: e instanceof Error ? e.message : String(e) },
    ]);
  }
}

/**
 * Where in `json` (decoded as `message`) the field or oneof `target` of a decoding error is set,
 * as a JSON path with the keys the caller used (`definition.steps[2].retry.maxAttempts`), or
 * undefined when it cannot be found. The body's nesting is bounded, so is the recursion.
 */
function jsonPathOf(
  message: DescMessage,
  json: JsonValue | undefined,
  target: DescField | DescOneof,
): string | undefined {
  if (!isObject(json)) return undefined;
  for (const field of message.fields) {
    const key = [field.jsonName, field.name].find((k) => Object.hasOwn(json, k));
    if (key === undefined) continue;
    if (field === target || field.oneof === target) return key;
    const value = json[key];
    let inner: string | undefined;
    if (field.fieldKind === "message") {
      inner = prefixed(".", jsonPathOf(field.message, value, target));
    } else if (field.fieldKind === "list" && field.listKind === "message" && Array.isArray(value)) {
      for (let i = 0; i < value.length && inner === undefined; i++)
        inner = prefixed(`[${i}].`, jsonPathOf(field.message, value[i], target));
    } else if (field.fieldKind === "map" && field.mapKind === "message" && isObject(value)) {
      for (const [k, v] of Object.entries(value)) {
        inner = prefixed(`[${JSON.stringify(k)}].`, jsonPathOf(field.message, v, target));
        if (inner !== undefined) break;
      }
    }
    if (inner !== undefined) return `${key}${inner}`;
  }
  return undefined;
}

function prefixed(prefix: string, path: string | undefined): string | undefined {
  return path === undefined ? undefined : `${prefix}${path}`;
}
