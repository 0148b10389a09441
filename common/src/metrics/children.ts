/**
 * Cached label children. `metric.labels(a, b)` hashes its arguments into a string on every call;
 * on a hot path (a commit per millisecond, an event per task change) the child for a label
 * combination is looked up once and kept, in nested maps keyed by the label values themselves, so
 * a lookup builds no string.
 */

/** A metric with labels, as prom-client's Counter, Gauge and Histogram are. */
interface Labelled<C> {
  labels(...values: string[]): C;
}

/** Children of `metric` by one label value. */
export class Children1<C> {
  readonly #byA = new Map<string, C>();
  constructor(readonly metric: Labelled<C>) {}

  /** The child for `a`. */
  get(a: string): C {
    let c = this.#byA.get(a);
    if (c === undefined) {
      c = this.metric.labels(a);
      this.#byA.set(a, c);
    }
    return c;
  }
}

/** Children of `metric` by two label values. */
export class Children2<C> {
  readonly #byA = new Map<string, Map<string, C>>();
  constructor(readonly metric: Labelled<C>) {}

  /** The child for (`a`, `b`). */
  get(a: string, b: string): C {
    let byB = this.#byA.get(a);
    if (byB === undefined) {
      byB = new Map();
      this.#byA.set(a, byB);
    }
    let c = byB.get(b);
    if (c === undefined) {
      c = this.metric.labels(a, b);
      byB.set(b, c);
    }
    return c;
  }
}

/** Children of `metric` by three label values. */
export class Children3<C> {
  readonly #byA = new Map<string, Children2<C>>();
  constructor(readonly metric: Labelled<C>) {}

  /** The child for (`a`, `b`, `c`). */
  get(a: string, b: string, c: string): C {
    let byB = this.#byA.get(a);
    if (byB === undefined) {
      byB = new Children2({ labels: (x: string, y: string) => this.metric.labels(a, x, y) });
      this.#byA.set(a, byB);
    }
    return byB.get(b, c);
  }
}
