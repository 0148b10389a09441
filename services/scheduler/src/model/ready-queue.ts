/**
 * The ready queue of one fair-share key (core/fair-shares.ts) of one task type: its tasks by
 * priority with ageing, and released leases in front. Plain data structures, no I/O; the
 * dispatcher (engine/dispatcher.ts) takes from them.
 */
import type { TaskState } from "./run-state.js";

/** A FIFO with O(1) push/shift and removal by skipping non-queued entries. */
export class TaskQueue {
  private items: TaskState[] = [];
  private head = 0;

  push(task: TaskState): void {
    this.items.push(task);
  }

  unshift(task: TaskState): void {
    if (this.head > 0) this.items[--this.head] = task;
    else this.items.unshift(task);
  }

  /** The oldest task still QUEUED, discarding stale entries on the way. */
  peek(): TaskState | undefined {
    while (this.head < this.items.length) {
      const t = this.items[this.head] as TaskState;
      if (t.status === "QUEUED") return t;
      this.head++;
    }
    this.compact();
    return undefined;
  }

  shift(): void {
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.items.length) this.compact();
  }

  private compact(): void {
    this.items = this.items.slice(this.head);
    this.head = 0;
  }

  get size(): number {
    return this.items.length - this.head;
  }

  /**
   * When its first task still QUEUED was queued (ms since the epoch), null when none is; read
   * only (metrics: stale entries are left for the dispatcher's peek to discard).
   */
  firstQueuedAt(): number | null {
    for (let i = this.head; i < this.items.length; i++) {
      const t = this.items[i] as TaskState;
      if (t.status === "QUEUED") return t.queuedAt?.getTime() ?? null;
    }
    return null;
  }

  /** The tasks still QUEUED, oldest first, each once (a task may sit in the queue twice). */
  queued(): TaskState[] {
    const seen = new Set<string>();
    const out: TaskState[] = [];
    for (let i = this.head; i < this.items.length; i++) {
      const t = this.items[i] as TaskState;
      if (t.status !== "QUEUED" || seen.has(t.id)) continue;
      seen.add(t.id);
      out.push(t);
    }
    return out;
  }
}

/**
 * The default ageing of the ready queues: the time waited that is worth one priority level
 * (EngineOptions.priorityAgeingMs).
 */
export const DEFAULT_PRIORITY_AGEING_MS = 10_000;

/**
 * The ready tasks of one fair-share key of one type, by priority with ageing: a task's place is its queue time minus its
 * priority times `ageingMs` (smallest first), so each level is worth `ageingMs` of waiting and a
 * task waits at most `ageingMs` per level above it before it is first, whatever arrives after it.
 * The order of two tasks never changes as time passes, so one FIFO per priority level keeps it: a
 * peek compares the heads of the levels (one in the usual case, all tasks of priority 0). A
 * released lease goes back in front of all of them (it keeps its place).
 */
export class PriorityQueue {
  /** One FIFO per priority level present, in the order the levels first appeared. */
  private readonly levels: { readonly priority: number; readonly queue: TaskQueue }[] = [];
  /** Released leases, served before any level. */
  private readonly front = new TaskQueue();
  /** The level the latest peek found the head in (what shift removes). */
  private headLevel: TaskQueue | undefined;
  /** The place (see the class comment) of the latest peek's head. */
  headKey = 0;

  constructor(private readonly ageingMs: number) {}

  push(task: TaskState, priority: number): void {
    let level = this.levels.find((l) => l.priority === priority);
    if (level === undefined) {
      level = { priority, queue: new TaskQueue() };
      this.levels.push(level);
    }
    level.queue.push(task);
  }

  unshift(task: TaskState): void {
    this.front.unshift(task);
  }

  /** Appends to the front queue: before every level, after what is in front already. */
  pushFront(task: TaskState): void {
    this.front.push(task);
  }

  private key(task: TaskState, priority: number): number {
    return (task.queuedAt?.getTime() ?? 0) - priority * this.ageingMs;
  }

  /**
   * The first task still QUEUED (stale entries are discarded on the way). No allocation: this is
   * the dispatcher's inner loop.
   */
  peek(): TaskState | undefined {
    if (this.front.size > 0) {
      const first = this.front.peek();
      if (first !== undefined) {
        this.headLevel = this.front;
        this.headKey = Number.NEGATIVE_INFINITY;
        return first;
      }
    }
    const levels = this.levels;
    let best: TaskState | undefined;
    for (let i = 0; i < levels.length; i++) {
      const level = levels[i] as (typeof levels)[number];
      if (levels.length > 1 && level.queue.size === 0) continue;
      const head = level.queue.peek();
      if (head === undefined) continue;
      const key = this.key(head, level.priority);
      if (best === undefined || key < this.headKey) {
        best = head;
        this.headKey = key;
        this.headLevel = level.queue;
      }
    }
    return best;
  }

  /** Removes the head the latest peek returned. */
  shift(): void {
    this.headLevel?.shift();
  }

  get size(): number {
    let n = this.front.size;
    for (const level of this.levels) n += level.queue.size;
    return n;
  }

  /**
   * When its oldest task still QUEUED was queued (ms since the epoch; the first of each level and
   * of the front), null when none is. Read only: it leaves the latest peek's head alone.
   */
  oldestQueuedAt(): number | null {
    let oldest = this.front.firstQueuedAt();
    for (const { queue } of this.levels) {
      const at = queue.firstQueuedAt();
      if (at !== null && (oldest === null || at < oldest)) oldest = at;
    }
    return oldest;
  }

  /** The tasks still QUEUED, first first, each once. */
  queued(): TaskState[] {
    const ranked: { task: TaskState; key: number }[] = [];
    for (const { priority, queue } of this.levels)
      for (const task of queue.queued()) ranked.push({ task, key: this.key(task, priority) });
    // Stable: equal places keep the order of the levels' queues.
    ranked.sort((a, b) => a.key - b.key);
    const seen = new Set<string>();
    const out: TaskState[] = [];
    for (const task of [...this.front.queued(), ...ranked.map((r) => r.task)]) {
      if (seen.has(task.id)) continue;
      seen.add(task.id);
      out.push(task);
    }
    return out;
  }
}
