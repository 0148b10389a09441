/** Small, dependency-free statistics for latency samples (milliseconds). */

/** Percentiles and counts of one sample set. */
export interface Summary {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** The value at quantile `q` (0..1) of an ascending array, by the nearest-rank method. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return sorted[rank - 1] as number;
}

/** The median of `values` (any order): the middle one, or the mean of the two middle ones; NaN for none. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/**
 * Each round's ratio `f(num) / f(den)`, in round order: phases of one round run back to back, so a
 * drift of the machine falls on both sides of a ratio. A round without both phases, or either
 * figure, or a denominator above zero, gives none. The median of these is how the sections that
 * alternate phases (scaling, partitioning, telemetry) compare two kinds.
 */
export function roundRatios<T extends { round: number }>(
  phases: readonly T[],
  num: (p: T) => boolean,
  den: (p: T) => boolean,
  f: (p: T) => number | undefined,
): number[] {
  const rounds = [...new Set(phases.map((p) => p.round))].sort((a, b) => a - b);
  return rounds.flatMap((round) => {
    const a = phases.find((p) => p.round === round && num(p));
    const b = phases.find((p) => p.round === round && den(p));
    const x = a === undefined ? undefined : f(a);
    const y = b === undefined ? undefined : f(b);
    return x === undefined || y === undefined || !(y > 0) ? [] : [x / y];
  });
}

/** `x` to 3 decimals. */
export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** Summarises samples; NaN fields when there are none. */
export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  const mean = n === 0 ? Number.NaN : sorted.reduce((s, v) => s + v, 0) / n;
  return {
    n,
    min: sorted[0] ?? Number.NaN,
    p50: quantile(sorted, 0.5),
    p90: quantile(sorted, 0.9),
    p99: quantile(sorted, 0.99),
    p999: quantile(sorted, 0.999),
    max: sorted[n - 1] ?? Number.NaN,
    mean,
  };
}

/** Rounds for display and JSON: 3 significant decimals below 10, 2 below 100, else 1. */
export function round(v: number): number {
  if (!Number.isFinite(v)) return v;
  const a = Math.abs(v);
  const d = a < 10 ? 3 : a < 100 ? 2 : 1;
  return Math.round(v * 10 ** d) / 10 ** d;
}

/** Rounds every number of a summary. */
export function roundSummary(s: Summary): Summary {
  return {
    n: s.n,
    min: round(s.min),
    p50: round(s.p50),
    p90: round(s.p90),
    p99: round(s.p99),
    p999: round(s.p999),
    max: round(s.max),
    mean: round(s.mean),
  };
}
