/**
 * What operators see and do of rate limits (RateLimitService): each bucket's state, pausing and
 * resuming a key (stored before the call answers), and per-limit counts for metrics. The rules
 * that take and refill tokens are the core's (core/rate-limits.ts).
 */
import type { Logger } from "@nexusflow/common";
import * as core from "../core/index.js";
import type { Core } from "../core/index.js";
import { bucketId } from "../model/rate-limit-state.js";
import {
  afterInPage,
  bucketOrder,
  type EngineStore,
  type RateLimitPage,
  type RateLimitPause as StoredPause,
} from "../persistence/engine-store.js";

/** A rate limit bucket as RateLimitService shows it (tokens as of `refilledAt`). */
export interface RateLimitView {
  readonly name: string;
  readonly key: string;
  readonly tokens: number;
  readonly refilledAt: number;
  readonly pausedUntil: number | null;
  readonly pausedBy: string;
  readonly pauseNote: string;
  /** Tasks waiting in this scheduler for its tokens or the end of its pause. */
  readonly waiting: number;
}

function rateLimitView(b: core.Bucket): RateLimitView {
  return {
    name: b.name,
    key: b.key,
    tokens: b.tokens,
    refilledAt: b.refilledAt,
    pausedUntil: b.pausedUntil,
    pausedBy: b.pausedBy,
    pauseNote: b.pauseNote,
    waiting: b.waiters.length,
  };
}

/** A pause of one key of a limit: until when (ms since the epoch; null resumes), by whom, why. */
export interface RateLimitPause {
  name: string;
  key: string;
  until: number | null;
  by: string;
  note: string;
}

/** Per rate limit name: tasks waiting for its buckets and keys paused now. */
export interface RateLimitStats {
  name: string;
  waiting: number;
  paused: number;
}

/**
 * Pauses a bucket until `until` (ms since the epoch; null resumes it) and stores the pause; a
 * bucket not in memory is made full (as a key no task used). Its waiting tasks are woken when the
 * pause ends.
 */
export async function pauseRateLimit(
  c: Core,
  store: Pick<EngineStore, "pauseRateLimit">,
  pauses: RateLimitPauses,
  p: RateLimitPause,
): Promise<RateLimitView> {
  const now = new Date();
  // A bucket not in memory (no task used the key, or it was forgotten, full) is full: its limit's
  // burst is not known here, so +Infinity tokens, which a task's first refill brings down to it.
  const bucket = core.rateLimitsOf(c).bucket(p.name, p.key, Number.POSITIVE_INFINITY, now.getTime());
  core.pauseBucket(c, bucket, p.until, p.by, p.note, now);
  await pauses.store(bucket, () => store.pauseRateLimit(pauseRow(bucket)));
  return rateLimitView(bucket);
}

/**
 * The pauses of a cluster's replicas kept alike (docs/replicas.md): a pause or resume stored by one
 * replica (an operator's call, a handler's pause) is taken by every other one when it is told
 * (NOTIFY) and reads the stored pauses ({@link RateLimitPauses.sync}). A bucket paused or resumed
 * here while a read is under way, or whose pause is still being stored, keeps this replica's
 * pause: the row read may predate it, and this replica's own notification reads it again once it
 * is stored.
 */
export class RateLimitPauses {
  /** Pauses and resumes made here, counted. */
  #changes = 0;
  /** By bucket id: the count of its latest pause or resume made here. */
  readonly #madeAt = new Map<string, number>();
  /** By bucket id: its pauses made here still being stored. */
  readonly #storing = new Map<string, number>();
  /** The read under way, if any: one at a time, so that an older read never lands last. */
  #reading: Promise<number> | undefined;
  /** Asked again while a read was under way: read once more after it. */
  #again = false;

  /** @param stored called once a pause made here is stored (a cluster tells its replicas). */
  constructor(private readonly stored?: () => void) {}

  /** Stores a pause (or resume) made here by `write`, then tells `stored`. */
  async store(bucket: core.Bucket, write: () => Promise<void>): Promise<void> {
    this.#madeAt.set(bucket.id, ++this.#changes);
    this.#storing.set(bucket.id, (this.#storing.get(bucket.id) ?? 0) + 1);
    try {
      await write();
      this.stored?.();
    } finally {
      const n = (this.#storing.get(bucket.id) ?? 1) - 1;
      if (n === 0) this.#storing.delete(bucket.id);
      else this.#storing.set(bucket.id, n);
    }
  }

  /**
   * Takes the stored pauses: a key paused there and not here is paused (its bucket made, full,
   * if not in memory), one paused here and not there resumed, one paused differently changed.
   * One read at a time: asked while one is under way, it reads once more after it (a burst of
   * notifications costs two reads). Returns how many buckets changed.
   */
  sync(c: Core, store: Pick<EngineStore, "loadRateLimitPauses">): Promise<number> {
    if (this.#reading !== undefined) {
      this.#again = true;
      return this.#reading;
    }
    const rounds = async (): Promise<number> => {
      let changed = 0;
      do {
        this.#again = false;
        changed += await this.#read(c, store);
      } while (this.#again);
      return changed;
    };
    this.#reading = rounds().finally(() => {
      this.#reading = undefined;
    });
    return this.#reading;
  }

  async #read(c: Core, store: Pick<EngineStore, "loadRateLimitPauses">): Promise<number> {
    const since = this.#changes;
    const rows = await store.loadRateLimitPauses();
    const now = new Date();
    const t = now.getTime();
    const keep = (id: string): boolean => this.#storing.has(id) || (this.#madeAt.get(id) ?? 0) > since;
    const state = core.rateLimitsOf(c);
    const stored = new Set<string>();
    let changed = 0;
    for (const row of rows) {
      const id = bucketId(row.name, row.key);
      stored.add(id);
      if (keep(id)) continue;
      const b = state.bucket(row.name, row.key, Number.POSITIVE_INFINITY, t);
      if (b.pausedUntil === row.pausedUntil && b.pausedBy === row.pausedBy && b.pauseNote === row.pauseNote)
        continue;
      core.pauseBucket(c, b, row.pausedUntil, row.pausedBy, row.pauseNote, now);
      changed++;
    }
    for (const b of state.buckets.values())
      if (b.pausedUntil !== null && b.pausedUntil > t && !stored.has(b.id) && !keep(b.id)) {
        core.pauseBucket(c, b, null, "", "", now);
        changed++;
      }
    // What was made here before this read is in the rows read (or still being stored).
    for (const [id, at] of this.#madeAt) if (at <= since) this.#madeAt.delete(id);
    return changed;
  }
}

/** What the store writes of a bucket's pause (or resume): the pause, and the bucket as it is. */
function pauseRow(bucket: core.Bucket): StoredPause {
  return {
    name: bucket.name,
    key: bucket.key,
    until: bucket.pausedUntil,
    by: bucket.pausedBy,
    note: bucket.pauseNote,
    tokens: bucket.tokens,
    refilledAt: bucket.refilledAt,
    fullAt: Number.isFinite(bucket.fullAt) ? bucket.fullAt : null,
  };
}

/**
 * Stores a pause a handler asked for (core/rate-limits.ts pauseTaskKeys). A failure is logged: the
 * pause then holds in this process only.
 */
export function storeHandlerPause(
  store: Pick<EngineStore, "pauseRateLimit">,
  pauses: RateLimitPauses,
  log: Logger,
  bucket: core.Bucket,
): void {
  void pauses
    .store(bucket, () => store.pauseRateLimit(pauseRow(bucket)))
    .catch((e: unknown) =>
      log.error(
        { err: e, rate_limit: bucket.name, key: bucket.key },
        "a rate limit pause was not stored: it holds in this process only, until the stored pauses are read again",
      ),
    );
}

/**
 * One page of the buckets in use here (as they are now) and the stored ones not in memory here,
 * by name then key (code point order); `more`: a next page may hold some. Each source is read up
 * to one past the page, so the page's first `limit` of the two merged are the right ones.
 */
export async function listRateLimits(
  c: Core,
  store: Pick<EngineStore, "loadRateLimits">,
  page: RateLimitPage,
): Promise<{ buckets: RateLimitView[]; more: boolean }> {
  const known = core.rateLimitsOf(c).buckets;
  const out: RateLimitView[] = [];
  for (const b of known.values()) if (afterInPage(b, page)) out.push(rateLimitView(b));
  for (const row of await store.loadRateLimits({ ...page, limit: page.limit + 1 }))
    if (!known.has(bucketId(row.name, row.key))) out.push({ ...row, waiting: 0 });
  out.sort(bucketOrder);
  return { buckets: out.slice(0, page.limit), more: out.length > page.limit };
}

/** Per rate limit name: the tasks waiting for its buckets and its keys paused now. */
export function rateLimitStats(c: Core): RateLimitStats[] {
  const now = Date.now();
  const by = new Map<string, RateLimitStats>();
  for (const b of core.rateLimitsOf(c).buckets.values()) {
    let s = by.get(b.name);
    if (s === undefined) {
      s = { name: b.name, waiting: 0, paused: 0 };
      by.set(b.name, s);
    }
    s.waiting += b.waiters.length;
    if (b.pausedUntil !== null && b.pausedUntil > now) s.paused++;
  }
  return [...by.values()];
}

/** What {@link RateLimitAdmin} needs of its engine. */
export interface RateLimitAdminHost {
  readonly core: Core;
  readonly store: Pick<EngineStore, "pauseRateLimit" | "loadRateLimitPauses" | "loadRateLimits">;
  readonly pauses: RateLimitPauses;
  /** Throws (UNAVAILABLE) unless the engine takes calls. */
  assertRunning(): void;
  /** Whether the engine is running (a read of the stored pauses is moot otherwise). */
  running(): boolean;
}

/** An engine's rate limits as operators, a cluster's notifications and the metrics see them. */
export class RateLimitAdmin {
  constructor(private readonly host: RateLimitAdminHost) {}

  /**
   * Pauses a bucket until `until` (ms since the epoch; null resumes it) and stores the pause before
   * answering ({@link pauseRateLimit}).
   */
  pause(pause: RateLimitPause): Promise<RateLimitView> {
    this.host.assertRunning();
    return pauseRateLimit(this.host.core, this.host.store, this.host.pauses, pause);
  }

  /**
   * Takes the pauses and resumes stored by other replicas (a cluster's replicas are told through
   * NOTIFY, see EngineOptions.rateLimitPaused). Returns how many buckets changed.
   */
  sync(): Promise<number> {
    if (!this.host.running()) return Promise.resolve(0);
    return this.host.pauses.sync(this.host.core, this.host.store);
  }

  /** A page of the buckets: this scheduler's (current) and the stored ones it has not used. */
  list(page: RateLimitPage): Promise<{ buckets: RateLimitView[]; more: boolean }> {
    return listRateLimits(this.host.core, this.host.store, page);
  }

  /** Per rate limit name: the tasks waiting for its buckets and its keys paused now (metrics). */
  stats(): RateLimitStats[] {
    return rateLimitStats(this.host.core);
  }
}
