/**
 * JSON helpers shared by the engine: safe property access (own properties only, so user data can
 * never reach `Object.prototype`), deep equality, canonical serialization and JSON paths.
 */
import { createHash } from "node:crypto";

/** Any value that survives `JSON.parse(JSON.stringify(x))` unchanged. */
export type JsonValue =
  null | boolean | number | string | readonly JsonValue[] | { readonly [key: string]: JsonValue };

/** True for objects made by JSON.parse or object literals; arrays, class instances and null are excluded. */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Sentinel returned by {@link childOf} when there is nothing at the key. */
export const MISSING: unique symbol = Symbol("missing");

/**
 * Reads `key` of a JSON value. Only own properties of plain objects and in-range integer indexes of
 * arrays count: `constructor`, `__proto__` (unless an own data key) or `length` never resolve.
 */
export function childOf(value: unknown, key: string | number): unknown {
  if (typeof key === "number") {
    if (Array.isArray(value) && Number.isInteger(key) && key >= 0 && key < value.length) {
      return value[key] as unknown;
    }
    return MISSING;
  }
  if (isPlainObject(value) && Object.hasOwn(value, key)) return value[key];
  return MISSING;
}

/** Name of the JSON type of a value, for error messages ("object", "array", "string", ...). */
export function jsonTypeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

/**
 * Deep equality of JSON values (object key order is irrelevant). Iterative, because run inputs and
 * step outputs come from outside and may be nested deeper than the call stack allows.
 */
export function jsonEqual(a: unknown, b: unknown): boolean {
  const stack: [unknown, unknown][] = [[a, b]];
  while (stack.length > 0) {
    const [x, y] = stack.pop() as [unknown, unknown];
    if (x === y) continue;
    if (typeof x !== "object" || typeof y !== "object" || x === null || y === null) return false;
    if (Array.isArray(x)) {
      if (!Array.isArray(y) || x.length !== y.length) return false;
      for (let i = 0; i < x.length; i++) stack.push([x[i], y[i]]);
      continue;
    }
    if (Array.isArray(y) || !isPlainObject(x) || !isPlainObject(y)) return false;
    const keys = Object.keys(x);
    if (keys.length !== Object.keys(y).length) return false;
    for (const key of keys) {
      if (!Object.hasOwn(y, key)) return false;
      stack.push([x[key], y[key]]);
    }
  }
  return true;
}

/**
 * Serializes a JSON value with object keys sorted (by UTF-16 code units) and no whitespace, so two
 * documents that differ only in key order or formatting give the same text.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") {
    // undefined / functions have no JSON form; treat them like JSON.stringify does inside arrays.
    return JSON.stringify(value) ?? "null";
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const record = value as Record<string, unknown>;
  const parts: string[] = [];
  for (const key of Object.keys(record).sort()) {
    const item = record[key];
    if (item === undefined || typeof item === "function") continue;
    parts.push(`${JSON.stringify(key)}:${canonicalJson(item)}`);
  }
  return `{${parts.join(",")}}`;
}

/** sha256 (hex) of {@link canonicalJson}: equal for documents with identical content. */
export function contentHash(value: unknown): string {
  return createHash("sha256").update(canonicalJson(value)).digest("hex");
}

const SIMPLE_KEY = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** Appends one segment to a JSON path: `.name`, `["odd key"]` or `[3]`. */
export function pathJoin(base: string, key: string | number): string {
  if (typeof key === "number") return `${base}[${key}]`;
  return SIMPLE_KEY.test(key) ? `${base}.${key}` : `${base}[${JSON.stringify(key)}]`;
}

/** Creates an object with own data properties only, so a key such as `__proto__` stays plain data. */
export function objectFromEntries(entries: Iterable<readonly [string, unknown]>): Record<string, unknown> {
  // Object.fromEntries uses CreateDataProperty, which never invokes the __proto__ setter.
  return Object.fromEntries(entries);
}
