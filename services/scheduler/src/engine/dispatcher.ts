/**
 * Ready queues and executor sessions. Picks (session, task) pairs: a task goes only to a session
 * that advertises its type and holds credit; sessions are served round-robin, one lease per
 * session per pass, and each session gets the first ready task among its types. Within a type,
 * the tenants and keys of fair shares take turns by weight (core/fair-shares.ts), and within a key
 * the task with the highest priority after ageing goes first (model/ready-queue.ts PriorityQueue),
 * which with equal priorities is the oldest.
 */
import type { SessionResponse } from "@nexusflow/gen";
import {
  enqueueShare,
  type FairKey,
  type FairPath,
  FairShareState,
  headRank,
  peekShare,
  PLAIN_PATH,
  takeShare,
} from "../core/fair-shares.js";
import type { AskedLeases } from "../core/sessions.js";
import { DEFAULT_PRIORITY_AGEING_MS } from "../model/ready-queue.js";

export { DEFAULT_PRIORITY_AGEING_MS };
import type { TaskState } from "../model/run-state.js";
import { holdOf, sameHold, type Hold, type QueueHold } from "./pending.js";

/** An attached executor session as the engine sees it. */
export interface SessionHandle {
  readonly id: string;
  readonly executorId: string;
  readonly types: ReadonlySet<string>;
  /**
   * The session protocol version agreed in the attach (absent: 1); 2 and later take LeaseBatch
   * frames; from 3 a map element's reports name keys in the element's own folder (core/reports.ts).
   */
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
  /**
   * Leases granted on this session and not written to its stream yet (lease-pump.ts), task run id
   * -> fencing token: its executor cannot list them as held.
   */
  unsent?: Map<string, number>;
  /**
   * The last Ping that asked the executor to list its held leases (session-liveness.ts), and what
   * it asked about.
   */
  heldAsk?: HeldAsk;
}

/** A Ping that asked for the executor's held leases (Ping.list_held). */
export interface HeldAsk {
  readonly nonce: bigint;
  /** The session's leases the executor was sent before the Ping, by fencing token. */
  readonly asked: AskedLeases;
  /** When it was sent (ms, monotonic). */
  readonly at: number;
  /** Whether its Pong came. */
  answered: boolean;
}

/** Queues of ready tasks by type and fair share, and the sessions that take them. */
export class Dispatcher {
  /**
   * The ready tasks: per type, a tree of tenants and keys, each key with its PriorityQueue
   * (core/fair-shares.ts); shared with the core (Core.fairShares), which charges and releases leases.
   */
  readonly shares: FairShareState;
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
    ageingMs: number = DEFAULT_PRIORITY_AGEING_MS,
    private readonly admit: (task: TaskState, now: Date) => boolean = () => true,
  ) {
    this.shares = new FairShareState(ageingMs);
  }

  /**
   * Adds a ready task to the queue of its fair-share key (`path`: its run's tenant and key,
   * core/fair-shares.ts sharePath), placed by `priority` and its queue time.
   */
  enqueue(task: TaskState, priority = 0, path: FairPath = PLAIN_PATH): void {
    task.hold = this.holdRecord(task.type);
    enqueueShare(this.shares, task, path, (q) => q.push(task, priority));
  }

  /**
   * Puts a task back at the front of its key's queue (a released lease keeps its place). A task
   * with concurrency keys (one a freed slot let out of its key's queue) goes behind those already
   * in front, so that several let out at once keep their order.
   */
  requeue(task: TaskState, path: FairPath = PLAIN_PATH): void {
    task.hold = this.holdRecord(task.type);
    // A task with rate limits too (a bucket's tokens let it out of the bucket's waiters).
    const front = task.claim === undefined && task.rate === undefined;
    enqueueShare(this.shares, task, path, (q) => (front ? q.unshift(task) : q.pushFront(task)));
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

  /**
   * Records, for each type with ready tasks left after the pass made at `now`, why no session
   * takes them (see holdOf), and clears the holds of types with none left. Returns the types
   * whose hold changed.
   */
  recordHolds(now: Date): { type: string; hold: Hold | null }[] {
    const changed: { type: string; hold: Hold | null }[] = [];
    for (const [type, record] of this.holds) {
      const tree = this.shares.trees.get(type);
      const hold =
        tree !== undefined && peekShare(tree) !== undefined ? holdOf(type, this.sessions.values()) : null;
      if (sameHold(record.hold, hold)) continue;
      record.hold = hold;
      record.since = now;
      changed.push({ type, hold });
    }
    return changed;
  }

  /**
   * How many tasks are QUEUED ahead of `task` in its fair-share key's queue (walks it): with no
   * fairness, every task of its type; the other keys' tasks are interleaved by their shares.
   */
  ahead(task: TaskState): number {
    const waiting = task.fairKey?.queue.queued() ?? [];
    const i = waiting.indexOf(task);
    return i < 0 ? waiting.length : i;
  }

  /**
   * The tasks of `type` still QUEUED: with one fair-share key (no fairness), in its order (by
   * priority with ageing); with several, oldest first (the keys take turns by their shares).
   */
  waiting(type: string): TaskState[] {
    const tree = this.shares.trees.get(type);
    if (tree === undefined) return [];
    const out: TaskState[] = [];
    let keys = 0;
    for (const tenant of tree.tenants.values())
      for (const key of tenant.keys.values()) {
        keys++;
        for (const t of key.queue.queued()) out.push(t);
      }
    if (keys > 1) out.sort((a, b) => (a.queuedAt?.getTime() ?? 0) - (b.queuedAt?.getTime() ?? 0));
    return out;
  }

  /** Ready tasks waiting per type (approximate: includes entries cancelled meanwhile). */
  depth(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const type of this.holds.keys()) out[type] = this.shares.trees.get(type)?.ready ?? 0;
    return out;
  }

  /**
   * Takes as many fair (session, task) pairs as credit and queues allow, consuming credit and
   * charging each lease to its fair share. Among a session's types, the first task of each by
   * fair share competes: one whose group is under its minimum first, at its maximum last, then
   * by priority with ageing. `now`: the time of the leases (what `admit` decides rate limits at,
   * so the lease times recorded are the times the tokens were taken at).
   */
  take(limit = 5000, now: Date = new Date()): { session: SessionHandle; task: TaskState }[] {
    const out: { session: SessionHandle; task: TaskState }[] = [];
    const sessions = [...this.sessions.values()];
    if (sessions.length === 0) return out;
    const picked = new Set<string>();
    const trees = this.shares.trees;
    let progress = true;
    while (progress && out.length < limit) {
      progress = false;
      for (let i = 0; i < sessions.length && out.length < limit; i++) {
        const session = sessions[(this.cursor + i) % sessions.length] as SessionHandle;
        if (session.credit <= 0 || session.draining) continue;
        let bestTask: TaskState | undefined;
        for (;;) {
          let key: FairKey | undefined;
          let head: TaskState | undefined;
          let rank = 0;
          let place = 0;
          for (const type of session.types) {
            const tree = trees.get(type);
            const h = tree === undefined ? undefined : peekShare(tree);
            if (tree === undefined || h === undefined || tree.head === undefined) continue;
            const r = headRank(tree);
            const p = tree.head.queue.headKey;
            if (head === undefined || r < rank || (r === rank && p < place)) {
              key = tree.head;
              head = h;
              rank = r;
              place = p;
            }
          }
          if (key === undefined || head === undefined) break;
          // Each key's queue remembers its own latest peek: shifting it removes `head`.
          key.queue.shift();
          // No concurrency keys (the usual case): one check. A task whose key is full now waits in
          // the key's queue, out of this one: the pass goes on to the next, never blocked by it.
          const twice = picked.has(head.id);
          const admitted =
            (head.claim === undefined && head.rate === undefined) || twice || this.admit(head, now);
          // A lease is charged to its fair share as it is taken: the next pick of the pass sees it.
          takeShare(key, head, admitted && !twice);
          if (admitted) {
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
