/**
 * Fair shares in the definition language: `fairness` on a workflow is a key hierarchy of at most
 * two levels, the tenant then a key within it, each with a weight (one for every key value, and
 * per value overrides), a guaranteed minimum and a burst maximum of leases per task type:
 *
 *   "fairness": [
 *     {"key": "input.tenant", "weights": {"acme": 4}, "max": 50},
 *     {"key": "input.customerId", "max": 5}
 *   ]
 *
 * The keys are evaluated when the run starts, so they may use `input` and `run` only. The rules
 * that lease by these shares are the scheduler's (core/fair-shares.ts).
 */
import type { Checker } from "./checker.js";
import { expressionPaths, type Expr } from "./expr.js";
import { isPlainObject, jsonTypeOf, pathJoin } from "./json.js";

/** Levels of a fairness hierarchy at most: the tenant, then a key within it. */
export const MAX_FAIRNESS_LEVELS = 2;
/** Highest weight of a group. */
export const MAX_FAIR_WEIGHT = 1000;
/** Most entries of one level's `weights`. */
export const MAX_FAIR_WEIGHTS = 1000;
/** Highest guaranteed minimum or burst maximum of a group (leases of one task type). */
export const MAX_FAIR_LEASES = 10_000;

/** The fields of one level as written. */
export const FAIR_SHARE_FIELDS = ["key", "weight", "weights", "min", "max"];

/** One level of `fairness` as written. */
export interface FairShareSpec {
  /** Expression over `input` and `run`: a string or a number names the group. */
  key: string;
  /** Weight of every group of the level, 1..1000 (default 1). */
  weight?: number;
  /** Weights by key value, overriding `weight`. */
  weights?: Record<string, number>;
  /** Leases of a type a group is guaranteed, 0..10000 (default 0). */
  min?: number;
  /** Leases of a type beyond which a group yields to any other that can be served (0: none). */
  max?: number;
}

/** One level of `fairness`, validated, with its key parsed. */
export interface CompiledFairShare {
  /** 0: the tenant; 1: the key within the tenant. */
  readonly level: number;
  /** The key expression as written. */
  readonly expression: string;
  readonly key: Expr;
  readonly weight: number;
  readonly weights: ReadonlyMap<string, number>;
  readonly min: number;
  /** 0: none. */
  readonly max: number;
  /** JSON path of the level, e.g. `$.fairness[0]`. */
  readonly path: string;
}

/** Checks `fairness` as written; returns its levels, or an empty list after reporting. */
export function checkFairness(checker: Checker, value: unknown, path: string): CompiledFairShare[] {
  if (!Array.isArray(value)) {
    checker.err(
      path,
      `fairness must be an array of levels (the tenant, then a key), got ${jsonTypeOf(value)}`,
    );
    return [];
  }
  if (value.length > MAX_FAIRNESS_LEVELS)
    checker.err(
      path,
      `fairness has ${value.length} levels; the most is ${MAX_FAIRNESS_LEVELS} (the tenant, then a key within it)`,
    );
  const out: CompiledFairShare[] = [];
  value.slice(0, MAX_FAIRNESS_LEVELS).forEach((raw: unknown, level) => {
    const at = pathJoin(path, level);
    const spec = checker.object(raw, at, "fairness level", FAIR_SHARE_FIELDS);
    if (spec === undefined) return;
    const before = checker.errors.length;
    const keyAt = pathJoin(at, "key");
    let key: Expr | undefined;
    if (spec["key"] === undefined) checker.err(keyAt, "key is required (an expression such as input.tenant)");
    else key = checker.expression(spec["key"], keyAt, "key");
    // Evaluated when the run starts: only its input and run.* exist then.
    for (const ref of key === undefined ? [] : expressionPaths(key))
      if (ref.root !== "input" && ref.root !== "run")
        checker.err(
          keyAt,
          `${ref.text}: a fairness key is evaluated when the run starts, so it may use input and run only`,
        );
    const count = (field: string, min: number, fallback: number): number => {
      const v = spec[field];
      if (v === undefined) return fallback;
      return checker.integer(
        v,
        pathJoin(at, field),
        field,
        min,
        field === "weight" ? MAX_FAIR_WEIGHT : MAX_FAIR_LEASES,
      )
        ? v
        : fallback;
    };
    const weight = count("weight", 1, 1);
    const min = count("min", 0, 0);
    const max = count("max", 0, 0);
    if (max !== 0 && max < min)
      checker.err(pathJoin(at, "max"), `max (${max}) must be 0 (none) or at least min (${min})`);
    const weights = new Map<string, number>();
    const rawWeights = spec["weights"];
    if (rawWeights !== undefined) {
      const wAt = pathJoin(at, "weights");
      if (!isPlainObject(rawWeights))
        checker.err(wAt, `weights must be an object of key values to weights, got ${jsonTypeOf(rawWeights)}`);
      else {
        const entries = Object.entries(rawWeights);
        if (entries.length > MAX_FAIR_WEIGHTS)
          checker.err(wAt, `weights has ${entries.length} entries; the most is ${MAX_FAIR_WEIGHTS}`);
        for (const [k, w] of entries.slice(0, MAX_FAIR_WEIGHTS))
          if (checker.integer(w, pathJoin(wAt, k), "a weight", 1, MAX_FAIR_WEIGHT)) weights.set(k, w);
      }
    }
    if (key === undefined || checker.errors.length > before) return;
    out.push(
      Object.freeze({
        level,
        expression: spec["key"] as string,
        key,
        weight,
        weights,
        min,
        max,
        path: at,
      }),
    );
  });
  return out;
}
