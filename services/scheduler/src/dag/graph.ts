/**
 * Graph algorithms over step indexes (positions in `spec.steps`): topological order, cycle
 * naming and transitive-upstream queries. Edges point from a step to the steps it depends on.
 */

/** Result of {@link analyzeGraph}. */
export interface GraphAnalysis {
  /**
   * Steps in topological order (dependencies first; among steps whose dependencies are done, the
   * lowest spec index comes first, so a spec written in dependency order keeps its order). Steps on
   * or downstream of a cycle are missing.
   */
  readonly order: readonly number[];
  /** One closed path per strongly connected component, e.g. [a, b, c, a] (a depends on b, ...). */
  readonly cycles: readonly (readonly number[])[];
  /** Whether `ancestor` is transitively upstream of `step`; undefined when unknown because of a cycle. */
  isUpstream(step: number, ancestor: number): boolean | undefined;
}

class MinHeap {
  private readonly items: number[] = [];
  get size(): number {
    return this.items.length;
  }
  push(value: number): void {
    const a = this.items;
    a.push(value);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((a[parent] as number) <= value) break;
      a[i] = a[parent] as number;
      i = parent;
    }
    a[i] = value;
  }
  pop(): number {
    const a = this.items;
    const top = a[0] as number;
    const last = a.pop() as number;
    if (a.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= a.length) break;
        const r = l + 1;
        const c = r < a.length && (a[r] as number) < (a[l] as number) ? r : l;
        if ((a[c] as number) >= last) break;
        a[i] = a[c] as number;
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}

function stronglyConnected(deps: readonly (readonly number[])[], members: ReadonlySet<number>): number[][] {
  // Tarjan's algorithm restricted to `members`; depth is bounded by the step limit (1000).
  const index = new Map<number, number>();
  const low = new Map<number, number>();
  const onStack = new Set<number>();
  const stack: number[] = [];
  const components: number[][] = [];
  let counter = 0;
  const connect = (v: number): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of deps[v] ?? []) {
      if (!members.has(w)) continue;
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: number[] = [];
      let w: number;
      do {
        w = stack.pop() as number;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      components.push(component);
    }
  };
  for (const v of [...members].sort((a, b) => a - b)) if (!index.has(v)) connect(v);
  return components;
}

function cycleThrough(deps: readonly (readonly number[])[], component: readonly number[]): number[] {
  // Shortest cycle through the component's first step (in spec order), found by BFS.
  const inside = new Set(component);
  const start = Math.min(...component);
  const parent = new Map<number, number>();
  const queue = [start];
  for (let head = 0; head < queue.length; head++) {
    const v = queue[head] as number;
    for (const w of deps[v] ?? []) {
      if (!inside.has(w)) continue;
      if (w === start) {
        const path = [start];
        for (let x: number | undefined = v; x !== undefined && x !== start; x = parent.get(x)) path.push(x);
        // path is [start, v, parent(v), ...] walking backwards; reverse the tail to read forwards.
        const tail = path.slice(1).reverse();
        return [start, ...tail, start];
      }
      if (!parent.has(w) && w !== start) {
        parent.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start, start];
}

/** Orders the graph, names its cycles and prepares upstream queries, in O(steps × edges / 32). */
export function analyzeGraph(deps: readonly (readonly number[])[]): GraphAnalysis {
  const n = deps.length;
  const dependents: number[][] = Array.from({ length: n }, () => []);
  const remaining = new Array<number>(n).fill(0);
  deps.forEach((list, i) => {
    remaining[i] = list.length;
    for (const d of list) dependents[d]?.push(i);
  });
  const heap = new MinHeap();
  for (let i = 0; i < n; i++) if (remaining[i] === 0) heap.push(i);
  const order: number[] = [];
  while (heap.size > 0) {
    const v = heap.pop();
    order.push(v);
    for (const w of dependents[v] as number[]) {
      remaining[w] = (remaining[w] as number) - 1;
      if (remaining[w] === 0) heap.push(w);
    }
  }

  const cycles: number[][] = [];
  if (order.length < n) {
    const ordered = new Set(order);
    const stuck = new Set<number>();
    for (let i = 0; i < n; i++) if (!ordered.has(i)) stuck.add(i);
    for (const component of stronglyConnected(deps, stuck)) {
      if (component.length > 1) cycles.push(cycleThrough(deps, component));
    }
    cycles.sort((a, b) => (a[0] as number) - (b[0] as number));
  }

  // One bitset of ancestors per ordered step: a step's ancestors are its dependencies plus theirs.
  const words = Math.ceil(n / 32);
  const ancestors: (Uint32Array | undefined)[] = new Array<Uint32Array | undefined>(n);
  for (const v of order) {
    const bits = new Uint32Array(words);
    for (const d of deps[v] as readonly number[]) {
      const up = ancestors[d] as Uint32Array;
      for (let k = 0; k < words; k++) bits[k] = (bits[k] as number) | (up[k] as number);
      bits[d >> 5] = (bits[d >> 5] as number) | (1 << (d & 31));
    }
    ancestors[v] = bits;
  }
  return {
    order,
    cycles,
    isUpstream(step: number, ancestor: number): boolean | undefined {
      const bits = ancestors[step];
      if (bits === undefined) return undefined;
      return (((bits[ancestor >> 5] as number) >>> (ancestor & 31)) & 1) === 1;
    },
  };
}
