/**
 * The token buckets of named rate limits (core/rate-limits.ts): one per limit name and key value,
 * shared by every step that names the limit. Stored in PostgreSQL: a lease that takes tokens carries
 * the bucket as it left it ({@link BucketSnapshot}) and is written with it in one commit (table
 * rate_limit_grants, a row per writer shard; pauses in rate_limit_buckets), so a restarted
 * scheduler reads back (the highest seq) at most what was granted.
 *
 * Forgotten once full: a bucket whose tokens are back at its burst (`fullAt` passed), with no
 * waiter, no timer and no pause, is the same as a bucket never used, so a sweep drops it from
 * memory (keyed limits make one bucket per key value: without it, one per customer for ever), and
 * the coordinator's purge deletes its rows (persistence/rate-limit-purge.ts). Two rules keep that
 * exact: a task's want that still points at a dropped bucket puts it back, or moves to the bucket
 * made since ({@link RateLimitState.live}); and a bucket made again starts at a `seq` above every
 * dropped one's, so its grants replace any row still stored.
 */
import type { CompiledRateLimit } from "../dag/index.js";

/** One bucket: its tokens as of `refilledAt`, and a pause of its key. */
export interface Bucket {
  /** The state that made it (where {@link liveBucket} looks for the one in its place). */
  readonly home: RateLimitState;
  readonly id: string;
  readonly name: string;
  /** The key value ("" for a limit without a key). */
  readonly key: string;
  tokens: number;
  /** When `tokens` was last brought up to date (ms since the epoch). */
  refilledAt: number;
  /** Bumped at each grant: a stored bucket is only ever replaced by a later grant's. */
  seq: number;
  /** The key is paused until this time (ms since the epoch); null: not paused. */
  pausedUntil: number | null;
  pausedBy: string;
  pauseNote: string;
  /**
   * When its tokens are back at the burst (ms since the epoch), as of its last refill or grant;
   * +Infinity while not known (a row stored before this was).
   */
  fullAt: number;
  /** Tasks skipped for this bucket, in the order they were, offered again when it has tokens. */
  readonly waiters: TaskRef[];
  /** A timer is set for the waiters (at this time, ms since the epoch). */
  wakeAt: number | null;
}

/** A waiting task, as a bucket keeps it (the task's state is read when it is woken). */
export interface TaskRef {
  readonly id: string;
}

/**
 * What a task wants of one bucket. `bucket` may be one the state has since dropped (it was full):
 * read it through {@link RateLimitState.live}.
 */
export interface RateWant {
  readonly limit: CompiledRateLimit;
  bucket: Bucket;
}

/** A bucket as a grant left it: the row written with the lease that took the tokens. */
export interface BucketSnapshot {
  /** The bucket's id (its name and key: one bucket's snapshots share it). */
  readonly id: string;
  readonly name: string;
  readonly key: string;
  readonly tokens: number;
  readonly refilledAt: number;
  readonly seq: number;
  /** When its tokens are back at the burst (ms since the epoch): its row may go after that. */
  readonly fullAt: number;
}

/** A bucket row as stored. */
export interface StoredBucket {
  readonly name: string;
  readonly key: string;
  readonly tokens: number;
  readonly refilledAt: number;
  readonly seq: number;
  /** When its tokens are back at the burst (ms since the epoch); null: not known (older rows). */
  readonly fullAt: number | null;
  readonly pausedUntil: number | null;
  readonly pausedBy: string;
  readonly pauseNote: string;
}

/** A bucket's id: its limit's name and key value (the key of RateLimitState.buckets). */
export function bucketId(name: string, key: string): string {
  return `${name}\u0000${key}`;
}

/** Whether a bucket full again at `fullAt` and paused until `pausedUntil` is as a new one at `now`. */
function fullAndFree(fullAt: number, pausedUntil: number | null, now: number): boolean {
  return fullAt <= now && (pausedUntil === null || pausedUntil <= now);
}

/** The bucket `want` takes from now (RateLimitState.live): read a want's bucket only through this. */
export function liveBucket(want: RateWant): Bucket {
  return want.bucket.home.live(want);
}

/** The fewest buckets kept before a sweep looks for full ones. */
const SWEEP_FLOOR = 1024;

/** The buckets known to this scheduler, by id (name NUL key). */
export class RateLimitState {
  readonly buckets = new Map<string, Bucket>();
  /** At least the `seq` of every bucket dropped or not restored: where a bucket made again starts. */
  private seqFloor = 0;
  /** The next sweep runs when a bucket is made with this many in memory. */
  private sweepAt = SWEEP_FLOOR;
  /** Buckets dropped since start (tests, logs). */
  dropped = 0;

  /**
   * The bucket of `name` and `key`, made full (`burst` tokens) at `now` when new (a sweep may run
   * first, at `now`: the current time). A caller that does not know the limit's burst passes
   * +Infinity: the first refill by a task's limit brings it down to that burst.
   */
  bucket(name: string, key: string, burst: number, now: number): Bucket {
    const b = this.buckets.get(bucketId(name, key));
    if (b !== undefined) return b;
    if (this.buckets.size >= this.sweepAt) this.sweep(now);
    return this.make(name, key, burst, now);
  }

  private make(name: string, key: string, tokens: number, refilledAt: number): Bucket {
    const b: Bucket = {
      home: this,
      id: bucketId(name, key),
      name,
      key,
      tokens,
      refilledAt,
      seq: this.seqFloor,
      fullAt: refilledAt,
      pausedUntil: null,
      pausedBy: "",
      pauseNote: "",
      waiters: [],
      wakeAt: null,
    };
    this.buckets.set(b.id, b);
    return b;
  }

  /**
   * The bucket `want` takes from, as this state holds it: the want's own bucket put back if it was
   * dropped meanwhile (it was full then, and still is; its `seq` raised to the floor), or the one
   * made since in its place (the want moves to it).
   */
  live(want: RateWant): Bucket {
    const b = want.bucket;
    const held = this.buckets.get(b.id);
    if (held === b) return b;
    if (held !== undefined) return (want.bucket = held);
    if (b.seq < this.seqFloor) b.seq = this.seqFloor;
    this.buckets.set(b.id, b);
    return b;
  }

  /** Whether `b` is as a bucket never used at `now`: full, nobody waiting, no timer, no pause. */
  static idle(b: Bucket, now: number): boolean {
    return b.waiters.length === 0 && b.wakeAt === null && fullAndFree(b.fullAt, b.pausedUntil, now);
  }

  /**
   * Drops every idle bucket; the next sweep waits until the map has doubled (at least
   * {@link SWEEP_FLOOR}), so that sweeps cost O(1) per bucket made. Returns how many went.
   */
  sweep(now: number): number {
    let n = 0;
    for (const [id, b] of this.buckets)
      if (RateLimitState.idle(b, now)) {
        if (b.seq > this.seqFloor) this.seqFloor = b.seq;
        this.buckets.delete(id);
        n++;
      }
    this.dropped += n;
    this.sweepAt = Math.max(SWEEP_FLOOR, 2 * this.buckets.size);
    return n;
  }

  /**
   * Puts a stored bucket back (start-up recovery, engine/partition-load.ts recoverAll; partitions
   * taken later read runs, not buckets). A bucket this scheduler already holds in memory as recent
   * as the row is left as it is: the row could only give back tokens granted since it was written.
   * Pauses other replicas store later are taken by engine/rate-limit-admin.ts RateLimitPauses.
   */
  restore(row: StoredBucket, now: number): void {
    const known = this.buckets.get(bucketId(row.name, row.key));
    if (known !== undefined && known.seq >= row.seq) return;
    if (known === undefined && row.fullAt !== null && fullAndFree(row.fullAt, row.pausedUntil, now)) {
      // Full by now and not paused: as a bucket never used; only its seq is kept (the floor).
      if (row.seq > this.seqFloor) this.seqFloor = row.seq;
      return;
    }
    // Made without a sweep: `refilledAt` is the row's time, not now.
    const b = known ?? this.make(row.name, row.key, row.tokens, row.refilledAt);
    b.tokens = row.tokens;
    b.refilledAt = row.refilledAt;
    b.seq = row.seq;
    b.fullAt = row.fullAt ?? Number.POSITIVE_INFINITY;
    b.pausedUntil = row.pausedUntil;
    b.pausedBy = row.pausedBy;
    b.pauseNote = row.pauseNote;
  }
}
