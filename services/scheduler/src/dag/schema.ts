/**
 * A practical subset of JSON Schema for run inputs, checked without dependencies: type (one or a
 * list), properties, required, items (one schema), enum, const, minimum/maximum,
 * exclusiveMinimum/exclusiveMaximum, minLength/maxLength, minItems/maxItems, pattern and boolean
 * additionalProperties. Other assertion keywords are rejected when the workflow is registered rather
 * than silently ignored, so an author never believes a constraint is enforced when it is not.
 */
import type { SpecError } from "./errors.js";
import { isPlainObject, jsonEqual, jsonTypeOf, pathJoin } from "./json.js";
import type { JsonValue } from "./json.js";

/** Type names accepted by `type`. */
export type SchemaType = "string" | "number" | "integer" | "boolean" | "object" | "array" | "null";

/** A schema checked and prepared once at registration (regexes compiled). */
export interface CompiledSchema {
  /** For the boolean schemas `true` (anything) and `false` (nothing); null for object schemas. */
  readonly accepts: boolean | null;
  readonly types: readonly SchemaType[] | null;
  readonly properties: ReadonlyMap<string, CompiledSchema> | null;
  readonly required: readonly string[];
  readonly additionalProperties: boolean;
  readonly items: CompiledSchema | null;
  readonly enum: readonly JsonValue[] | null;
  readonly const: { readonly value: JsonValue } | null;
  readonly minimum: number | null;
  readonly maximum: number | null;
  readonly exclusiveMinimum: number | null;
  readonly exclusiveMaximum: number | null;
  readonly minLength: number | null;
  readonly maxLength: number | null;
  readonly minItems: number | null;
  readonly maxItems: number | null;
  readonly pattern: RegExp | null;
}

/** Longest accepted `pattern`, in characters. */
export const MAX_PATTERN_LENGTH = 1000;

const TYPES: ReadonlySet<string> = new Set<SchemaType>([
  "string",
  "number",
  "integer",
  "boolean",
  "object",
  "array",
  "null",
]);
// Annotations carry no constraint, so accepting them cannot mislead anyone.
const ANNOTATIONS: ReadonlySet<string> = new Set([
  "$schema",
  "$id",
  "$comment",
  "title",
  "description",
  "default",
  "examples",
  "format",
  "deprecated",
  "readOnly",
  "writeOnly",
]);
const SUPPORTED = [
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "enum",
  "const",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "minLength",
  "maxLength",
  "minItems",
  "maxItems",
  "pattern",
];
const SUPPORTED_SET: ReadonlySet<string> = new Set(SUPPORTED);

const ANYTHING: CompiledSchema = Object.freeze({
  accepts: true,
  types: null,
  properties: null,
  required: [],
  additionalProperties: true,
  items: null,
  enum: null,
  const: null,
  minimum: null,
  maximum: null,
  exclusiveMinimum: null,
  exclusiveMaximum: null,
  minLength: null,
  maxLength: null,
  minItems: null,
  maxItems: null,
  pattern: null,
});

/** Checks a schema and prepares it for {@link validateAgainstSchema}; problems are appended to `errors`. */
export function compileSchema(schema: unknown, path: string, errors: SpecError[]): CompiledSchema {
  if (typeof schema === "boolean") return { ...ANYTHING, accepts: schema };
  if (!isPlainObject(schema)) {
    errors.push({ path, message: `a schema must be an object or a boolean, got ${jsonTypeOf(schema)}` });
    return ANYTHING;
  }
  const err = (key: string, message: string): void => {
    errors.push({ path: pathJoin(path, key), message });
  };
  for (const key of Object.keys(schema)) {
    if (!SUPPORTED_SET.has(key) && !ANNOTATIONS.has(key)) {
      err(key, `unsupported JSON Schema keyword ${JSON.stringify(key)} (supported: ${SUPPORTED.join(", ")})`);
    }
  }
  const number = (key: string): number | null => {
    const v = schema[key];
    if (v === undefined) return null;
    if (typeof v !== "number") {
      err(key, `must be a number, got ${jsonTypeOf(v)}`);
      return null;
    }
    return v;
  };
  const count = (key: string): number | null => {
    const v = schema[key];
    if (v === undefined) return null;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      err(key, "must be a non-negative integer");
      return null;
    }
    return v;
  };

  let types: SchemaType[] | null = null;
  const type = schema["type"];
  if (type !== undefined) {
    const list = Array.isArray(type) ? (type as unknown[]) : [type];
    if (list.length === 0) err("type", "must name at least one type");
    types = [];
    list.forEach((t, i) => {
      if (typeof t === "string" && TYPES.has(t)) (types as SchemaType[]).push(t as SchemaType);
      else {
        const at = Array.isArray(type) ? pathJoin(pathJoin(path, "type"), i) : pathJoin(path, "type");
        errors.push({
          path: at,
          message: `must be one of ${[...TYPES].join(", ")}, got ${JSON.stringify(t)}`,
        });
      }
    });
  }

  let properties: Map<string, CompiledSchema> | null = null;
  const props = schema["properties"];
  if (props !== undefined) {
    if (!isPlainObject(props)) err("properties", `must be an object of schemas, got ${jsonTypeOf(props)}`);
    else {
      properties = new Map();
      const base = pathJoin(path, "properties");
      for (const key of Object.keys(props))
        properties.set(key, compileSchema(props[key], pathJoin(base, key), errors));
    }
  }

  const required: string[] = [];
  const req = schema["required"];
  if (req !== undefined) {
    if (!Array.isArray(req)) err("required", `must be an array of property names, got ${jsonTypeOf(req)}`);
    else {
      req.forEach((name: unknown, i) => {
        if (typeof name === "string") required.push(name);
        else errors.push({ path: pathJoin(pathJoin(path, "required"), i), message: "must be a string" });
      });
    }
  }

  let additionalProperties = true;
  const additional = schema["additionalProperties"];
  if (additional !== undefined) {
    if (typeof additional === "boolean") additionalProperties = additional;
    else err("additionalProperties", "only true or false is supported here (not a schema)");
  }

  let items: CompiledSchema | null = null;
  if (schema["items"] !== undefined) {
    if (Array.isArray(schema["items"]))
      err("items", "tuple form (an array of schemas) is not supported; use one schema");
    else items = compileSchema(schema["items"], pathJoin(path, "items"), errors);
  }

  let enumValues: JsonValue[] | null = null;
  const en = schema["enum"];
  if (en !== undefined) {
    if (!Array.isArray(en) || en.length === 0) err("enum", "must be a non-empty array");
    else enumValues = en as JsonValue[];
  }

  let pattern: RegExp | null = null;
  const pat = schema["pattern"];
  if (pat !== undefined) {
    if (typeof pat !== "string") err("pattern", `must be a string, got ${jsonTypeOf(pat)}`);
    else if (pat.length > MAX_PATTERN_LENGTH)
      err("pattern", `must be at most ${MAX_PATTERN_LENGTH} characters`);
    else {
      try {
        pattern = new RegExp(pat, "u");
      } catch (error) {
        err("pattern", `invalid regular expression: ${(error as Error).message}`);
      }
    }
  }

  return {
    accepts: null,
    types,
    properties,
    required,
    additionalProperties,
    items,
    enum: enumValues,
    const: Object.hasOwn(schema, "const") ? { value: schema["const"] as JsonValue } : null,
    minimum: number("minimum"),
    maximum: number("maximum"),
    exclusiveMinimum: number("exclusiveMinimum"),
    exclusiveMaximum: number("exclusiveMaximum"),
    minLength: count("minLength"),
    maxLength: count("maxLength"),
    minItems: count("minItems"),
    maxItems: count("maxItems"),
    pattern,
  };
}

function hasType(value: unknown, type: SchemaType): boolean {
  switch (type) {
    case "integer":
      return typeof value === "number" && Number.isInteger(value);
    case "number":
      return typeof value === "number";
    case "object":
      return isPlainObject(value);
    case "array":
      return Array.isArray(value);
    case "null":
      return value === null;
    default:
      return typeof value === type;
  }
}

function preview(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** Validates a value against a compiled schema; returns every violation with paths such as `$.amount`. */
export function validateAgainstSchema(schema: CompiledSchema, value: unknown, path = "$"): SpecError[] {
  const errors: SpecError[] = [];
  const visit = (s: CompiledSchema, v: unknown, at: string): void => {
    if (s.accepts !== null) {
      if (!s.accepts) errors.push({ path: at, message: "no value is allowed here" });
      return;
    }
    const push = (message: string): void => {
      errors.push({ path: at, message });
    };
    if (s.types !== null && !s.types.some((t) => hasType(v, t))) {
      // Further checks on a value of the wrong type would only add noise.
      push(`expected ${s.types.join(" or ")}, got ${jsonTypeOf(v)}`);
      return;
    }
    if (s.enum !== null && !s.enum.some((e) => jsonEqual(e, v))) push(`must be one of ${preview(s.enum)}`);
    if (s.const !== null && !jsonEqual(s.const.value, v)) push(`must equal ${preview(s.const.value)}`);
    if (typeof v === "number") {
      if (s.minimum !== null && v < s.minimum) push(`must be >= ${s.minimum}`);
      if (s.maximum !== null && v > s.maximum) push(`must be <= ${s.maximum}`);
      if (s.exclusiveMinimum !== null && v <= s.exclusiveMinimum) push(`must be > ${s.exclusiveMinimum}`);
      if (s.exclusiveMaximum !== null && v >= s.exclusiveMaximum) push(`must be < ${s.exclusiveMaximum}`);
    } else if (typeof v === "string") {
      // JSON Schema counts characters as code points, not UTF-16 units.
      const length = s.minLength !== null || s.maxLength !== null ? [...v].length : 0;
      if (s.minLength !== null && length < s.minLength)
        push(`must be at least ${s.minLength} characters long`);
      if (s.maxLength !== null && length > s.maxLength)
        push(`must be at most ${s.maxLength} characters long`);
      if (s.pattern !== null && !s.pattern.test(v)) push(`must match the pattern /${s.pattern.source}/`);
    } else if (Array.isArray(v)) {
      if (s.minItems !== null && v.length < s.minItems) push(`must have at least ${s.minItems} items`);
      if (s.maxItems !== null && v.length > s.maxItems) push(`must have at most ${s.maxItems} items`);
      if (s.items !== null) {
        const items = s.items;
        v.forEach((item, i) => visit(items, item, pathJoin(at, i)));
      }
    } else if (isPlainObject(v)) {
      for (const name of s.required) {
        if (!Object.hasOwn(v, name)) errors.push({ path: pathJoin(at, name), message: "is required" });
      }
      for (const key of Object.keys(v)) {
        const sub = s.properties?.get(key);
        if (sub !== undefined) visit(sub, v[key], pathJoin(at, key));
        else if (!s.additionalProperties)
          errors.push({ path: pathJoin(at, key), message: "is not an allowed property" });
      }
    }
  };
  visit(schema, value, path);
  return errors;
}
