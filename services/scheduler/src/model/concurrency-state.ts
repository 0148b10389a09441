/**
 * The state of keyed concurrency limits (core/concurrency.ts has the rules): what one task or run
 * claims, and each key value's holders and queue. In memory only, derived from the active runs.
 */
import type { CompiledConcurrencyLimit } from "../dag/index.js";
import type { RunState, TaskState } from "./run-state.js";

/** One key of a claim: its limit and the key value. */
export interface Slot {
  readonly limit: CompiledConcurrencyLimit;
  /** The key value (a number as its decimal text). */
  readonly value: string;
  /** The key space and value: what holders share. */
  readonly id: string;
}

/** What a task (or a run, `task` null) wants of the concurrency limits that apply to it. */
export interface Claim {
  readonly keys: ConcurrencyState;
  readonly run: RunState;
  readonly task: TaskState | null;
  readonly slots: readonly Slot[];
  /** Arrival order (the order of the keys' queues): smaller came first. */
  readonly seq: number;
  /**
   * free: neither holding nor waiting; held: holds a slot of every key; parked: in the queue of a
   * full key; unread: its keys read an offloaded output not read back yet (after a restart), so
   * they are not known (`slots` empty): neither holding nor waiting, and not leased meanwhile
   * (core/unread-keys.ts).
   */
  state: "free" | "held" | "parked" | "unread";
}

/** One key value: who holds its slots (in the order they took them) and who waits, in arrival order. */
export interface KeySpace {
  readonly holders: Set<Claim>;
  readonly waiters: Claim[];
}

/** The holders and queues of every key in use (empty ones are dropped). */
export class ConcurrencyState {
  readonly spaces = new Map<string, KeySpace>();
  seq = 0;
  /**
   * Claims in state "unread" by the key spaces of their limits (after a restart, until an
   * offloaded output is read back; core/unread-keys.ts): while one is leased, or queued before a
   * task, that task does not take a slot of the space. Empty but for a moment after a restart.
   */
  readonly unread = new Map<string, Set<Claim>>();
  /** Claims refused because of an unread one: offered again when an unread one leaves. */
  readonly blocked = new Set<Claim>();

  /** The key space `id`, made when missing. */
  space(id: string): KeySpace {
    let s = this.spaces.get(id);
    if (s === undefined) {
      s = { holders: new Set(), waiters: [] };
      this.spaces.set(id, s);
    }
    return s;
  }

  /** How many hold `id`. */
  holding(id: string): number {
    return this.spaces.get(id)?.holders.size ?? 0;
  }

  /** Drops `id` when nobody holds or waits for it. */
  tidy(id: string): void {
    const s = this.spaces.get(id);
    if (s !== undefined && s.holders.size === 0 && s.waiters.length === 0) this.spaces.delete(id);
  }
}
