/**
 * Direct label children for hot paths. A prom-client child (`counter.labels(a).inc()`,
 * `histogram.labels(a).observe(v)`) still does, on every call, what `labels()` did not keep: it
 * checks the label names, builds the series' key string from the label values, looks the series
 * up by that fresh string, and (histograms) looks the bucket up by its bound turned into a string.
 * On the scheduler's thread that was ~0.5 µs per increment or observation, several per task.
 *
 * A cell does that once: the first increment or observation goes through prom-client's own API
 * (the child `labels()` returns, which creates the series exactly as it would have), then the cell keeps the series' value
 * entry and its key, and later calls add to the entry's fields as prom-client's code does (same
 * fields, same arithmetic, so the same exposition). Before each such write it checks that the
 * entry is still the metric's series for that key (one lookup by an already internalized key):
 * after `reset()` or `remove(...)` it is not, and the call goes through the API again, which
 * makes the series anew.
 *
 * This reads prom-client's internals (`hashMap`, the entry's `value` / `sum`, `count`,
 * `bucketValues`, `upperBounds`), pinned at 15.1.3 in package.json; cells.test.ts checks the
 * exposition against the plain API. A metric whose shape is not the expected one gets plain
 * prom-client children instead.
 */
import type { Counter, Histogram } from "prom-client";

/** What the scheduler's hot paths call on a counter's child. */
export interface CounterChild {
  inc(value?: number): void;
}

/** What the hot paths call on a histogram's child. */
export interface HistogramChild {
  observe(value: number): void;
}

/** prom-client's per-series record of a counter (lib/counter.js). */
interface CounterEntry {
  value: number;
  labels: Record<string, string>;
}

/** prom-client's per-series record of a histogram (lib/histogram.js). */
interface HistogramEntry {
  labels: Record<string, string>;
  bucketValues: Record<string, number>;
  sum: number;
  count: number;
}

/** The internals a cell reads (see the module comment). */
interface Internals<E> {
  hashMap: Record<string, E> | undefined;
  labelNames: readonly string[];
}

/** The labels of `values` (their count already checked by the metric's `labels()`). */
function labelsOf(names: readonly string[], values: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (let i = 0; i < names.length; i++) labels[names[i] as string] = values[i] as string;
  return labels;
}

/** The series of `labels` (matched by value) and its key in the metric's `hashMap`, if any. */
function seriesOf<E extends { labels: Record<string, string> }>(
  internals: Internals<E>,
  labels: Record<string, string>,
): { key: string; entry: E } | undefined {
  const { hashMap, labelNames } = internals;
  if (hashMap === undefined) return undefined;
  for (const key of Object.keys(hashMap)) {
    const entry = hashMap[key];
    const have = entry?.labels;
    if (entry !== undefined && have !== undefined && labelNames.every((n) => have[n] === labels[n]))
      return { key, entry };
  }
  return undefined;
}

function hasInternals(metric: object): boolean {
  const m = metric as Partial<Internals<unknown>>;
  return typeof m.hashMap === "object" && m.hashMap !== null && Array.isArray(m.labelNames);
}

class CounterCell implements CounterChild {
  #entry: CounterEntry | undefined;
  #key = "";
  readonly #internals: Internals<CounterEntry>;

  constructor(
    private readonly child: CounterChild,
    metric: Counter<string>,
    private readonly labels: Record<string, string>,
  ) {
    this.#internals = metric as unknown as Internals<CounterEntry>;
  }

  inc(value = 1): void {
    const entry = this.#entry;
    // prom-client refuses values that are not finite or negative: the API says so.
    if (
      entry !== undefined &&
      value >= 0 &&
      value < Infinity &&
      this.#internals.hashMap?.[this.#key] === entry
    ) {
      entry.value += value;
      return;
    }
    this.child.inc(value);
    this.#resolve();
  }

  #resolve(): void {
    const series = seriesOf(this.#internals, this.labels);
    this.#entry = series?.entry;
    this.#key = series?.key ?? "";
  }
}

class HistogramCell implements HistogramChild {
  #entry: HistogramEntry | undefined;
  #key = "";
  readonly #internals: Internals<HistogramEntry>;
  readonly #bounds: readonly number[];
  /** The bucket keys of `bucketValues`, as prom-client indexes them (the bound as a property key). */
  readonly #bucketKeys: readonly string[];

  constructor(
    private readonly child: HistogramChild,
    metric: Histogram<string>,
    private readonly labels: Record<string, string>,
    bounds: readonly number[],
  ) {
    this.#internals = metric as unknown as Internals<HistogramEntry>;
    this.#bounds = bounds;
    this.#bucketKeys = bounds.map((b) => String(b));
  }

  observe(value: number): void {
    const entry = this.#entry;
    if (entry === undefined || !Number.isFinite(value) || this.#internals.hashMap?.[this.#key] !== entry) {
      this.child.observe(value);
      this.#resolve();
      return;
    }
    const bounds = this.#bounds;
    entry.sum += value;
    entry.count += 1;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= (bounds[i] as number)) {
        entry.bucketValues[this.#bucketKeys[i] as string]! += 1;
        return;
      }
    }
  }

  #resolve(): void {
    const series = seriesOf(this.#internals, this.labels);
    // Only an entry with every bucket is written to directly.
    const ok =
      series !== undefined &&
      this.#bucketKeys.every((k) => typeof series.entry.bucketValues?.[k] === "number");
    this.#entry = ok ? series.entry : undefined;
    this.#key = ok ? series.key : "";
  }
}

/**
 * A counter's child for `values` (in the order of its label names) that, after its first
 * increment, adds to the series directly (see the module comment).
 */
export function counterCell<L extends string>(metric: Counter<L>, ...values: string[]): CounterChild {
  const m = metric as unknown as Counter<string>;
  const child = m.labels(...values);
  // A counter with exemplars takes an options object in inc(): left to prom-client.
  if (!hasInternals(m) || (m as unknown as { enableExemplars?: boolean }).enableExemplars === true)
    return child;
  return new CounterCell(child, m, labelsOf((m as unknown as Internals<CounterEntry>).labelNames, values));
}

/**
 * A histogram's child for `values` (in the order of its label names) that, after its first
 * observation, adds to the series directly (see the module comment). Observations with an
 * exemplar still go through `observe({ labels, value, exemplarLabels })` (observeWithTrace), on
 * the same series.
 */
export function histogramCell<L extends string>(metric: Histogram<L>, ...values: string[]): HistogramChild {
  const m = metric as unknown as Histogram<string>;
  const child = m.labels(...values);
  const bounds = (m as unknown as { upperBounds?: unknown }).upperBounds;
  if (!hasInternals(m) || !Array.isArray(bounds) || !bounds.every((b) => typeof b === "number")) return child;
  const labels = labelsOf((m as unknown as Internals<HistogramEntry>).labelNames, values);
  return new HistogramCell(child, m, labels, bounds);
}

/** `metric` as a {@link Children1}/{@link Children2} source of counter cells. */
export function counterCells<L extends string>(
  metric: Counter<L>,
): { labels(...values: string[]): CounterChild } {
  return { labels: (...values) => counterCell(metric, ...values) };
}

/** `metric` as a {@link Children1}/{@link Children2} source of histogram cells. */
export function histogramCells<L extends string>(
  metric: Histogram<L>,
): { labels(...values: string[]): HistogramChild } {
  return { labels: (...values) => histogramCell(metric, ...values) };
}
