/**
 * The token buckets of named rate limits (core/rate-limits.ts): one per limit name and key value,
 * shared by every step that names the limit. Stored in PostgreSQL: a lease that takes tokens carries
 * the bucket as it left it ({@link BucketSnapshot}) and is written with it in one commit (table
 * rate_limit_grants, a row per writer shard; pauses in rate_limit_buckets), so a restarted
 * scheduler reads back (the highest seq) at most what was granted.
 */
import type { CompiledRateLimit } from "../dag/index.js";

/** One bucket: its tokens as of `refilledAt`, and a pause of its key. */
export interface Bucket {
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
  /** Tasks skipped for this bucket, in the order they were, offered again when it has tokens. */
  readonly waiters: TaskRef[];
  /** A timer is set for the waiters (at this time, ms since the epoch). */
  wakeAt: number | null;
}

/** A waiting task, as a bucket keeps it (the task's state is read when it is woken). */
export interface TaskRef {
  readonly id: string;
}

/** What a task wants of one bucket. */
export interface RateWant {
  readonly limit: CompiledRateLimit;
  readonly bucket: Bucket;
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
}

/** A bucket row as stored. */
export interface StoredBucket {
  readonly name: string;
  readonly key: string;
  readonly tokens: number;
  readonly refilledAt: number;
  readonly seq: number;
  readonly pausedUntil: number | null;
  readonly pausedBy: string;
  readonly pauseNote: string;
}

/** The buckets known to this scheduler, by id (name NUL key). */
export class RateLimitState {
  readonly buckets = new Map<string, Bucket>();

  /** The bucket of `name` and `key`, made full (`burst` tokens) when new. */
  bucket(name: string, key: string, burst: number, now: number): Bucket {
    const id = `${name}\u0000${key}`;
    let b = this.buckets.get(id);
    if (b === undefined) {
      b = {
        id,
        name,
        key,
        tokens: burst,
        refilledAt: now,
        seq: 0,
        pausedUntil: null,
        pausedBy: "",
        pauseNote: "",
        waiters: [],
        wakeAt: null,
      };
      this.buckets.set(id, b);
    }
    return b;
  }

  /**
   * Puts a stored bucket back (recovery). A bucket this scheduler already holds in memory as recent
   * as the row (a partition loaded after start-up reads every bucket again) is left as it is: the
   * row could only give back tokens granted since it was written.
   */
  restore(row: StoredBucket): void {
    const known = this.buckets.get(`${row.name}\u0000${row.key}`);
    if (known !== undefined && known.seq >= row.seq) return;
    const b = this.bucket(row.name, row.key, row.tokens, row.refilledAt);
    b.tokens = row.tokens;
    b.refilledAt = row.refilledAt;
    b.seq = row.seq;
    b.pausedUntil = row.pausedUntil;
    b.pausedBy = row.pausedBy;
    b.pauseNote = row.pauseNote;
  }
}
