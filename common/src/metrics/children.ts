/**
 * Cached label children. `metric.labels(a, b)` hashes its arguments into a string on every call;
 * on a hot path (a commit per millisecond, an event per task change) the child for a label
 * combination is looked up once and kept, in nested maps keyed by the label values themselves, so
 * a lookup builds no string; the last child looked up is compared first (a batch of events mostly
 * names one workflow and task type).
 */

/** A metric with labels, as prom-client's Counter, Gauge and Histogram are. */
interface Labelled<C> {
  labels(...values: string[]): C;
}

/** Children of `metric` by one label value. */
export class Children1<C> {
  readonly #byA = new Map<string, C>();
  /** The last child looked up and its label value: most lookups repeat the previous one. */
  #lastA: string | undefined;
  #last: C | undefined;
  constructor(readonly metric: Labelled<C>) {}

  /** The child for `a`. */
  get(a: string): C {
    if (a === this.#lastA) return this.#last as C;
    let c = this.#byA.get(a);
    if (c === undefined) {
      c = this.metric.labels(a);
      this.#byA.set(a, c);
    }
    this.#lastA = a;
    this.#last = c;
    return c;
  }
}

/** Children of `metric` by two label values. */
export class Children2<C> {
  readonly #byA = new Map<string, Map<string, C>>();
  /** The last child looked up and its label values: most lookups repeat the previous one. */
  #lastA: string | undefined;
  #lastB: string | undefined;
  #last: C | undefined;
  constructor(readonly metric: Labelled<C>) {}

  /** The child for (`a`, `b`). */
  get(a: string, b: string): C {
    if (a === this.#lastA && b === this.#lastB) return this.#last as C;
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
    this.#lastA = a;
    this.#lastB = b;
    this.#last = c;
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
