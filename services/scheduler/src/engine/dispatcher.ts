/**
 * Ready queues and executor sessions. Picks (session, task) pairs: a task goes only to a session
 * that advertises its type and holds credit; sessions are served round-robin, one lease per
 * session per pass, and each session gets the first ready task among its types: the one with the
 * highest priority after ageing (see PriorityQueue), which with equal priorities is the oldest.
 */
import type { SessionResponse } from "@nexusflow/gen";
import type { TaskState } from "../model/run-state.js";
import { holdOf, sameHold, type Hold, type QueueHold } from "./pending.js";

/** An attached executor session as the engine sees it. */
export interface SessionHandle {
  readonly id: string;
  readonly executorId: string;
  readonly types: ReadonlySet<string>;
  /** The session protocol version agreed in the attach (absent: 1); 2 and later take LeaseBatch frames. */
  readonly protocolVersion?: number;
  /** Leases the executor can still take. */
  credit: number;
  /** Task run ids leased on this session. */
  readonly leases: Set<string>;
  /** Drain requested: no more leases. */
  draining: boolean;
  /** Last time any message arrived (ms, monotonic). */
  lastSeen: number;
  /** When the session attached (ms since the epoch; absent: unknown). Shown by ListExecutors. */
  readonly attachedAt?: number;
  /** What the executor said of itself in its Attach (slots, labels, version), for ListExecutors. */
  readonly advertised?: {
    readonly slots: number;
    readonly labels: Readonly<Record<string, string>>;
    readonly version: string;
  };
  /** Sends a message to the executor (no-op once the stream ended). */
  send(message: SessionResponse): void;
  /**
   * Sends a SessionResponse already encoded (a lease frame) as it is (no-op once the stream ended);
   * needed from sessions of protocol version 2.
   */
  sendFrame?(frame: Uint8Array): void;
  /** Ends the stream (used when the session is declared dead). */
  close(reason: string): void;
}

/** A FIFO with O(1) push/shift and removal by skipping non-queued entries. */
class TaskQueue {
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

/** Default of {@link Dispatcher}'s ageing: the time waited that is worth one priority level. */
export const DEFAULT_PRIORITY_AGEING_MS = 10_000;

/**
 * The ready tasks of one type, by priority with ageing: a task's place is its queue time minus its
 * priority times `ageingMs` (smallest first), so each level is worth `ageingMs` of waiting and a
 * task waits at most `ageingMs` per level above it before it is first, whatever arrives after it.
 * The order of two tasks never changes as time passes, so one FIFO per priority level keeps it: a
 * peek compares the heads of the levels (one in the usual case, all tasks of priority 0). A
 * released lease goes back in front of all of them (it keeps its place).
 */
class PriorityQueue {
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

/** Queues of ready tasks by type, and the sessions that take them. */
export class Dispatcher {
  private readonly queues = new Map<string, PriorityQueue>();
  /** Attached sessions by id. */
  readonly sessions = new Map<string, SessionHandle>();
  private cursor = 0;
  /**
   * Why each type's ready tasks wait, as of the latest recordHolds (hold null when none wait or a
   * session can take them); every queued task of the type points to its record (TaskState.hold).
   * Kept in memory only: it is a fact about the sessions attached to this process, which a
   * restarted scheduler learns again as executors reconnect.
   */
  private readonly holds = new Map<string, QueueHold>();

  /**
   * `ageingMs`: the time waited that is worth one priority level (see PriorityQueue).
   * `admit`: asked for a task with concurrency keys (`TaskState.claim`) about to be leased: true
   * when it takes their slots; false when it waits in a full key's queue (or its run was
   * cancelled by the key's strategy), and the pass skips it (core/concurrency.ts).
   * @default DEFAULT_PRIORITY_AGEING_MS, every task admitted
   */
  constructor(
    private readonly ageingMs: number = DEFAULT_PRIORITY_AGEING_MS,
    private readonly admit: (task: TaskState, now: Date) => boolean = () => true,
  ) {}

  /** Adds a ready task to its type's queue, placed by `priority` and its queue time. */
  enqueue(task: TaskState, priority = 0): void {
    task.hold = this.holdRecord(task.type);
    this.queue(task.type).push(task, priority);
  }

  /**
   * Puts a task back at the front (a released lease keeps its place). A task with concurrency
   * keys (one a freed slot let out of its key's queue) goes behind those already in front, so
   * that several let out at once keep their order.
   */
  requeue(task: TaskState): void {
    task.hold = this.holdRecord(task.type);
    // A task with rate limits too (a bucket's tokens let it out of the bucket's waiters).
    if (task.claim === undefined && task.rate === undefined) this.queue(task.type).unshift(task);
    else this.queue(task.type).pushFront(task);
  }

  /** The hold record of `type`, which its queued tasks share. */
  private holdRecord(type: string): QueueHold {
    let record = this.holds.get(type);
    if (record === undefined) {
      record = { hold: null, since: null };
      this.holds.set(type, record);
    }
    return record;
  }

  private queue(type: string): PriorityQueue {
    let q = this.queues.get(type);
    if (q === undefined) {
      q = new PriorityQueue(this.ageingMs);
      this.queues.set(type, q);
    }
    return q;
  }

  /**
   * Records, for each type with ready tasks left after the pass made at `now`, why no session
   * takes them (see holdOf), and clears the holds of types with none left. Returns the types
   * whose hold changed.
   */
  recordHolds(now: Date): { type: string; hold: Hold | null }[] {
    const changed: { type: string; hold: Hold | null }[] = [];
    for (const [type, q] of this.queues) {
      const hold = q.size > 0 && q.peek() !== undefined ? holdOf(type, this.sessions.values()) : null;
      const record = this.holdRecord(type);
      if (sameHold(record.hold, hold)) continue;
      record.hold = hold;
      record.since = now;
      changed.push({ type, hold });
    }
    return changed;
  }

  /** How many tasks of its type are QUEUED ahead of `task` (walks the type's queue). */
  ahead(task: TaskState): number {
    const waiting = this.waiting(task.type);
    const i = waiting.indexOf(task);
    return i < 0 ? waiting.length : i;
  }

  /** The tasks of `type` still QUEUED, oldest first. */
  waiting(type: string): TaskState[] {
    return this.queues.get(type)?.queued() ?? [];
  }

  /** Ready tasks waiting per type (approximate: includes entries cancelled meanwhile). */
  depth(): Record<string, number> {
    return Object.fromEntries([...this.queues].map(([type, q]) => [type, q.size]));
  }

  /**
   * Takes as many fair (session, task) pairs as credit and queues allow, consuming credit. `now`:
   * the time of the leases (what `admit` decides rate limits at, so the lease times recorded are
   * the times the tokens were taken at).
   */
  take(limit = 5000, now: Date = new Date()): { session: SessionHandle; task: TaskState }[] {
    const out: { session: SessionHandle; task: TaskState }[] = [];
    const sessions = [...this.sessions.values()];
    if (sessions.length === 0) return out;
    const picked = new Set<string>();
    let progress = true;
    while (progress && out.length < limit) {
      progress = false;
      for (let i = 0; i < sessions.length && out.length < limit; i++) {
        const session = sessions[(this.cursor + i) % sessions.length] as SessionHandle;
        if (session.credit <= 0 || session.draining) continue;
        let bestTask: TaskState | undefined;
        for (;;) {
          let best: PriorityQueue | undefined;
          let head: TaskState | undefined;
          let bestKey = 0;
          for (const type of session.types) {
            const q = this.queues.get(type);
            const h = q?.peek();
            if (q !== undefined && h !== undefined && (head === undefined || q.headKey < bestKey)) {
              best = q;
              head = h;
              bestKey = q.headKey;
            }
          }
          if (best === undefined || head === undefined) break;
          // Each queue remembers its own latest peek: shifting `best` removes `head`.
          best.shift();
          // No concurrency keys (the usual case): one check. A task whose key is full now waits in
          // the key's queue, out of this one: the pass goes on to the next, never blocked by it.
          if (
            (head.claim === undefined && head.rate === undefined) ||
            picked.has(head.id) ||
            this.admit(head, now)
          ) {
            bestTask = head;
            break;
          }
        }
        if (bestTask === undefined) continue;
        if (picked.has(bestTask.id)) continue;
        picked.add(bestTask.id);
        session.credit--;
        out.push({ session, task: bestTask });
        progress = true;
      }
      this.cursor = (this.cursor + 1) % Math.max(1, sessions.length);
    }
    return out;
  }
}
