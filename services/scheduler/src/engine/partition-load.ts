/**
 * The engine's runs by partition (issue #22, docs/replicas.md): which runs it holds in memory
 * follows the partitions this replica owns.
 *
 * - **Loading** (start-up, and each partition a heartbeat takes): the active runs of those
 *   partitions are read (`loadActive` filtered by `nexusflow_partition_of`) and recovered as at
 *   start-up (core/recovery.ts): queued tasks offered, timers re-armed, held leases given a grace
 *   for their executors. Start-up recovery is the load of every partition held then, after the
 *   rate limits' buckets. A load whose reads fail is made again (backing off up to 2 s) until it
 *   succeeds, the partitions are lost or the engine stops; it waits between tries outside the
 *   order below. A partition being handed over is loaded once the hand-over ends, if still held.
 *   A partition whose epoch changed while its runs were read (lost, or lost and taken again) is
 *   not loaded by that read; runs already in memory are left as they are.
 * - **Unloading** a lost partition (another replica took it, the fence refused a commit, or this
 *   replica's own hold ended and was taken again at a new epoch): its runs leave memory at once
 *   (core/unload.ts), their executors are told to stop their leases, and what was marked for them
 *   is dropped (PendingChanges.retire), never committed under a later hold.
 * - **Releasing** (rebalancing hands a partition over): its runs leave memory the same way, then
 *   what was marked for them is committed while the partition is still held.
 *
 * Loads (each try of one) and releases run one after another, in the order asked; an unload is
 * immediate. Without partitions (no leases: tests of the engine alone) every run is the engine's.
 */
import { randomUUID } from "node:crypto";
import { UnavailableError, type Logger } from "@nexusflow/common";
import type { LeaseKey } from "@nexusflow/gen";
import type { CompiledWorkflow } from "../dag/index.js";
import * as core from "../core/index.js";
import type { Core, Moment, Rejection } from "../core/index.js";
import { detachRuns, disarmRuns, type DetachedRuns } from "../core/unload.js";
import {
  PartitionFencedError,
  isPartitionFencedError,
  keyPartition,
  partitionOf,
  type OwnedPartition,
} from "../cluster/partitioning.js";
import type { EngineStore, PartitionScope } from "../persistence/engine-store.js";
import type { RunState } from "../model/run-state.js";
import { StoredDefinitionInvalidError, type Definitions } from "./definitions.js";
import type { EngineTimers } from "./engine-timers.js";
import type { KeyedStarts } from "./keyed-starts.js";
import type { Parking } from "./parking.js";
import type { UnservedTypes } from "./pending.js";

/** The first wait before a failed load of partitions taken is tried again (doubling each time). */
const LOAD_RETRY_FIRST_MS = 100;
/** The longest wait between two tries of a load. */
const LOAD_RETRY_MAX_MS = 2_000;

/** The partitions this replica holds (the partition leases, cluster/partition-leases.ts). */
export interface HeldPartitions {
  readonly partitionCount: number;
  epochOf(partition: number): number | undefined;
  held(): OwnedPartition[];
  /**
   * Whether a held partition is being handed over (rebalancing): its runs are leaving, so no new
   * run is created in it. @default never
   */
  handingOver?(partition: number): boolean;
  /**
   * Whether the replica knows it still holds the partition (its last heartbeat is less than a
   * lease old): a paused replica's belief is not enough to judge an executor's leases. @default
   * whenever held
   */
  sure?(partition: number): boolean;
}

/** What {@link PartitionRuns} needs of the engine. */
export interface PartitionRunsHost {
  readonly core: Core;
  readonly store: Pick<
    EngineStore,
    "loadActive" | "loadRateLimits" | "keysOfRuns" | "flush" | "released" | "retire" | "failRefusedRun"
  >;
  readonly definitions: Pick<Definitions, "compiledById">;
  readonly log: Logger;
  readonly keyed: Pick<KeyedStarts, "remember" | "forget">;
  readonly timers: Pick<EngineTimers, "runLeft">;
  /** Runs with reports not yet evaluated. */
  readonly dirty: Set<RunState>;
  readonly parking: Pick<Parking, "recovered" | "wakeDue"> | undefined;
  readonly unserved: Pick<UnservedTypes, "quietFor">;
  readonly sessionTimeoutMs: number;
  readonly heartbeatIntervalMs: number;
  /** Longest wait of a call for a run for the load of its partition, just taken ({@link PartitionRuns.settled}). */
  readonly loadWaitMs: number;
  /** The partitions held; undefined: every run is this engine's. */
  readonly partitions: HeldPartitions | undefined;
  moment(): Moment;
  /** Hand out leases soon. */
  pump(): void;
  /** Whether the engine is RUNNING or RECOVERING (a partition taken while it stops is not loaded). */
  live(): boolean;
}

/** whenCommitted's `failed` when none is given. */
const ignoreFailure = (): undefined => undefined;

/** See the module comment. */
export class PartitionRuns {
  private chain: Promise<void> = Promise.resolve();
  private recovering = false;
  /** Counters (tests, logs). */
  readonly stats = { loadedRuns: 0, unloadedRuns: 0, revokedLeases: 0 };
  private lossCount = 0;
  /** Partitions taken whose runs are not loaded yet (a load() queued or running). */
  private readonly loadingCount = new Map<number, number>();
  /** What calls wait on for a partition's loads to end (settled), resolved once none is left. */
  private readonly loadsEnded = new Map<number, { promise: Promise<void>; resolve: () => void }>();
  /**
   * The epoch at which each partition's runs were last loaded (until they leave memory): a load of
   * a partition already loaded at the epoch it is held at reads nothing. Read again, a run that
   * finished meanwhile and left memory would come back from a read made before its last commit
   * landed, stale, and run again (a completion accepted twice, events numbered twice).
   */
  private readonly loadedAt = new Map<number, number>();

  constructor(private readonly host: PartitionRunsHost) {}

  /**
   * How many times partitions were lost: a session acknowledges no report that came before a
   * loss (what was marked for their runs may have been dropped uncommitted).
   */
  get losses(): number {
    return this.lossCount;
  }

  /**
   * Whether the run's partition is held and its runs are in memory (not waiting for the load of a
   * partition just taken); always, without partitions. An executor's Attach lists leases of
   * partitions being loaded: they are not judged before their runs are here (api/executor-session.ts).
   */
  loaded(runId: string): boolean {
    const p = this.host.partitions;
    if (p === undefined) return true;
    const partition = partitionOf(runId, p.partitionCount);
    return p.epochOf(partition) !== undefined && !this.loadingCount.has(partition);
  }

  /**
   * Whether this replica may judge an executor's lease of the run (revoke it, expire it, call a
   * report on it stale): its partition is loaded and known to be still held (HeldPartitions.sure: not a belief left from before a pause or a
   * database outage, when another replica may own the run and its leases now). Always, without
   * partitions.
   */
  judges(runId: string): boolean {
    const p = this.host.partitions;
    if (p === undefined) return true;
    return this.loaded(runId) && (p.sure?.(partitionOf(runId, p.partitionCount)) ?? true);
  }

  /**
   * A report's rejection as this replica may give it: a lease of a run it does not judge
   * ({@link PartitionRuns.judges}) is not called stale or decided here, since the replica that may
   * own the run now may hold that very lease; it is NOT_FOUND, which an executor with sessions to
   * several replicas takes as "ask the replica map where the run is" (the task goes on), not as a
   * lost lease. A report this replica accepts is accepted as always: its commit is fenced.
   */
  judged(key: LeaseKey | undefined, rejection: Rejection | null): Rejection | null {
    if (rejection?.code !== "FAILED_PRECONDITION" || key === undefined) return rejection;
    const runId = this.host.core.tasks.get(key.taskRunId)?.runId;
    if (runId === undefined || this.judges(runId)) return rejection;
    return {
      code: "NOT_FOUND",
      message: `task run ${key.taskRunId}: this replica cannot confirm it still owns its run's partition (its last heartbeat is older than its lease); the run's owner decides`,
    };
  }

  /**
   * Resolves once no load of the run's partition is queued or running (at once when none is): a
   * call for a run of a partition just taken waits for its runs to be in memory rather than find
   * the run missing (a cancel would cancel nothing). Throws UNAVAILABLE when the load is still
   * pending `loadWaitMs` later (retrying through a database outage). The calls waiting on one
   * partition share one promise, resolved when its last load ends.
   */
  async settled(runId: string): Promise<void> {
    const p = this.host.partitions;
    if (p === undefined) return;
    const partition = partitionOf(runId, p.partitionCount);
    if (!this.loadingCount.has(partition)) return;
    let ended = this.loadsEnded.get(partition);
    if (ended === undefined) {
      let resolve = (): void => undefined;
      const promise = new Promise<void>((r) => (resolve = r));
      ended = { promise, resolve };
      this.loadsEnded.set(partition, ended);
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        ended.promise,
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, this.host.loadWaitMs);
          // A call waiting here does not keep a stopping process alive.
          timer.unref();
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    if (this.loadingCount.has(partition))
      throw new UnavailableError(
        `run ${runId} is in a partition this scheduler just took, whose runs are still being loaded; retry`,
      );
  }

  /** Counts the loads of `partitions` queued (+1) or done (-1). */
  private loadingOf(partitions: readonly number[], change: 1 | -1): void {
    for (const p of partitions) {
      const n = (this.loadingCount.get(p) ?? 0) + change;
      if (n > 0) {
        this.loadingCount.set(p, n);
        continue;
      }
      this.loadingCount.delete(p);
      const ended = this.loadsEnded.get(p);
      if (ended === undefined) continue;
      this.loadsEnded.delete(p);
      ended.resolve();
    }
  }

  /**
   * Resolves once everything marked so far for `runIds` is committed. A commit the fence refused
   * for partitions lost rejects every one of its waiters, though the writer commits the changes of
   * the partitions still held on its next try: while each run's partition is still held at the
   * epoch it had, the flush is awaited again. Rejects with the fence's error once one of them is
   * lost (its changes were dropped), when one's partition is not held at that epoch once the
   * commit is made (it moved meanwhile: its changes may have been dropped), or with any other failure.
   */
  flushFor(runIds: readonly string[]): Promise<void> {
    return new Promise((resolve, reject) => this.whenCommitted(runIds, resolve, reject));
  }

  /**
   * {@link flushFor} as callbacks: `done` runs in the same turn as the commit's waiters (no
   * promise in between), `failed` with the error that ends the wait.
   */
  whenCommitted(
    runIds: readonly string[],
    done: () => void,
    failed: (e: unknown) => void = ignoreFailure,
  ): void {
    const p = this.host.partitions;
    // Without partitions nothing can move: the next commit is all.
    if (p === undefined) {
      void this.host.store.flush().then(done, failed);
      return;
    }
    new CommitWait(p, this.host.store, runIds, done, failed).wait();
  }

  /**
   * Refuses (UNAVAILABLE, retryable) a keyed start whose key's partition (keyPartition) is being
   * handed over from here: its new owner answers that key, reading the runs committed by then, so
   * a run started here now could be a second one for the key. Called right before the run is
   * marked, with no await in between: a release that began earlier commits that run first.
   */
  assertKeyStays(workflowName: string, key: string): void {
    const p = this.host.partitions;
    if (key !== "" && p?.handingOver?.(keyPartition(workflowName, key, p.partitionCount)) === true)
      throw new UnavailableError(
        "the partition of this idempotency key is moving to another scheduler replica; retry with the same key",
      );
  }

  /** Whether the run's partition is held (always, without partitions). */
  owns(runId: string): boolean {
    return this.heldAt(runId) !== undefined;
  }

  /** The epoch at which the run's partition is held: 0 without partitions, undefined when not held. */
  heldAt(runId: string): number | undefined {
    const p = this.host.partitions;
    return p === undefined ? 0 : p.epochOf(partitionOf(runId, p.partitionCount));
  }

  /**
   * A new id (runs, task runs): for a run, one whose partition this replica holds, so that its
   * commits are not refused (a random one when it holds none: the commit says UNAVAILABLE). One
   * random UUID per id, whatever the share held: when its partition is not held, its last 8 hex
   * digits (the partition's, partitionOf; random bits of a v4 UUID) are moved to the same value
   * modulo the partition count as a held partition picked at random.
   */
  newId(): string {
    const p = this.host.partitions;
    const id = randomUUID();
    if (p === undefined) return id;
    const drawn = partitionOf(id, p.partitionCount);
    if (p.epochOf(drawn) !== undefined && p.handingOver?.(drawn) !== true) return id;
    // Not one being handed over: a run created there now would be left behind in memory.
    const held = p.held().filter((x) => p.handingOver?.(x.partition) !== true);
    const target = held[Math.floor(Math.random() * held.length)];
    if (target === undefined) return id;
    const count = p.partitionCount;
    const low = Number.parseInt(id.slice(-8), 16);
    let moved = low - (low % count) + target.partition;
    if (moved > 0xffffffff) moved -= count;
    return `${id.slice(0, -8)}${moved.toString(16).padStart(8, "0")}`;
  }

  /**
   * Start-up recovery: the rate limits' buckets (before any lease), then the active runs of the
   * partitions held now; executors' leases expire a session timeout after `restartedAt`.
   */
  recoverAll(restartedAt: number): Promise<void> {
    this.recovering = true;
    return this.enqueue(async () => {
      const buckets = core.rateLimitsOf(this.host.core);
      const now = Date.now();
      for (const row of await this.host.store.loadRateLimits()) buckets.restore(row, now);
      const runs = await this.loadRuns(
        this.host.partitions?.held().map((x) => x.partition),
        restartedAt,
      );
      if (runs.runs.length > 0)
        this.host.log.info(
          { runs: this.host.core.runs.size, queued: runs.queued, orphaned_leases: runs.orphaned },
          "recovered active runs",
        );
    });
  }

  /** Loads the active runs of partitions just taken (after start-up recovery began; else it does). */
  load(partitions: readonly number[]): Promise<void> {
    if (!this.recovering || partitions.length === 0) return Promise.resolve();
    this.loadingOf(partitions, 1);
    return this.loadUntilDone(partitions).finally(() => this.loadingOf(partitions, -1));
  }

  /**
   * A read that fails (the database restarting, a connection broken, a row it cannot read) is made
   * again until it succeeds, the partitions are lost or the engine stops: a partition held without
   * its runs in memory would leave them waiting for as long as it stays here. A partition being
   * handed over is loaded once the hand-over ends, if it is still held then (lost and taken back
   * meanwhile, it is not handed over): its runs must not come back while they leave. Each try takes
   * its turn among the loads and releases; the wait between tries does not, so a load that keeps
   * failing holds up neither a hand-over (which would keep its partitions refusing keyed starts for
   * as long) nor the loads of other partitions.
   */
  private async loadUntilDone(partitions: readonly number[]): Promise<void> {
    let pending = partitions;
    for (let tries = 0, failures = 0; ; tries++) {
      const left = await this.enqueue(async () => {
        const held = this.host.partitions;
        const still = pending.filter((x) => held?.epochOf(x) !== undefined);
        if (!this.host.live() || still.length === 0) return undefined;
        const moving = still.filter((x) => held?.handingOver?.(x) === true);
        const now = moving.length === 0 ? still : still.filter((x) => !moving.includes(x));
        if (now.length === 0) return { partitions: moving };
        try {
          const { runs, queued, orphaned } = await this.loadRuns(now, performance.now());
          this.host.pump();
          // Their parked runs stay parked: those due are woken now, the others when due.
          this.host.parking?.wakeDue();
          this.host.log.info(
            { partitions: now, runs: runs.length, queued, orphaned_leases: orphaned, failures },
            "loaded the runs of partitions taken",
          );
          return moving.length === 0 ? undefined : { partitions: moving };
        } catch (e) {
          return { partitions: still, error: e };
        }
      });
      if (left === undefined) return;
      pending = left.partitions;
      const retryInMs = Math.min(LOAD_RETRY_MAX_MS, LOAD_RETRY_FIRST_MS * 2 ** Math.min(tries, 10));
      if ("error" in left)
        this.host.log.warn(
          { err: left.error, partitions: pending, failures: ++failures, retry_in_ms: retryInMs },
          "could not load the runs of partitions taken; trying again",
        );
      await new Promise<void>((resolve) => setTimeout(resolve, retryInMs).unref());
    }
  }

  /**
   * Partitions lost (taken by another replica, or refused by the fence): their runs leave memory
   * now and their executors are told to stop (see the module comment).
   */
  unload(partitions: readonly number[], reason: string): void {
    this.lossCount++;
    const detached = this.detach(partitions, reason);
    if (detached === undefined) return;
    // Marked under the hold that ended: never committed (the fence refuses it, unless the
    // partition is taken again first, when it would overwrite what the reload reads).
    this.host.store.retire?.(detached.runs, detached.tasks);
    disarmRuns(detached);
    this.host.log.warn(
      { partitions, runs: detached.runs.length, leases_revoked: detached.leases },
      "unloaded the runs of partitions lost",
    );
  }

  /**
   * Partitions about to be handed over (rebalancing): their runs leave memory, then what was
   * marked for them is committed, while they are still held.
   */
  release(partitions: readonly number[]): Promise<void> {
    return this.enqueue(async () => {
      const detached = this.detach(partitions, "its partition moves to another scheduler replica");
      // Committed (or refused, when another replica took them meanwhile) before they go.
      await this.host.store.flush().catch(() => undefined);
      if (detached === undefined) return;
      disarmRuns(detached);
      // Whatever a late callback marked for them during that commit; anything later is not theirs.
      await this.host.store.flush().catch(() => undefined);
      this.host.store.retire?.(detached.runs, detached.tasks);
      this.host.log.info(
        { partitions, runs: detached.runs.length, leases_revoked: detached.leases },
        "released the runs of partitions handed over",
      );
    });
  }

  /** Takes the runs of `partitions` out of memory (undefined when there are none). */
  private detach(partitions: readonly number[], reason: string): DetachedRuns | undefined {
    const p = this.host.partitions;
    if (p === undefined || partitions.length === 0) return undefined;
    for (const x of partitions) this.loadedAt.delete(x);
    const set = new Set(partitions);
    const detached = detachRuns(this.host.core, (id) => set.has(partitionOf(id, p.partitionCount)), reason);
    for (const run of detached.runs) {
      this.host.timers.runLeft(run);
      this.host.keyed.forget(run);
      this.host.dirty.delete(run);
    }
    this.host.store.released?.([...detached.runs.map((r) => r.id), ...detached.tasks.map((t) => t.id)]);
    this.stats.unloadedRuns += detached.runs.length;
    this.stats.revokedLeases += detached.leases;
    this.host.pump();
    return detached;
  }

  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    const next = this.chain.then(work);
    this.chain = next.then(
      () => undefined,
      () => undefined,
    );
    return next;
  }

  /**
   * Ends FAILED (DEFINITION_INVALID, with their event and their tasks cancelled, in the database)
   * the runs whose stored definition this version cannot compile: they could never run, and one of
   * them must not keep every other run of the partition (or the scheduler's start-up) from loading.
   */
  private async failInvalid(
    runs: readonly { id: string; definitionId: number }[],
    invalid: ReadonlyMap<number, StoredDefinitionInvalidError>,
    mine: (id: string) => boolean,
  ): Promise<void> {
    const failed = new Map<number, number>();
    for (const r of runs) {
      const error = invalid.get(r.definitionId);
      if (error === undefined || !mine(r.id)) continue;
      const outcome = await this.host.store.failRefusedRun(r.id, error.runError);
      if (outcome === "failed") failed.set(r.definitionId, (failed.get(r.definitionId) ?? 0) + 1);
    }
    for (const [id, n] of failed)
      this.host.log.error(
        { definition_id: id, runs: n, error: invalid.get(id)?.message },
        "runs failed: their workflow definition, as stored, no longer passes validation",
      );
  }

  /**
   * Reads and recovers the active runs of `partitions` (undefined: all), as held now: a run whose
   * partition's epoch changed while it was read, or that is in memory already, is left out.
   */
  private async loadRuns(
    partitions: readonly number[] | undefined,
    restartedAt: number,
  ): Promise<core.Recovered> {
    const { host } = this;
    const held = host.partitions;
    const epochs = new Map<number, number | undefined>();
    for (const p of partitions ?? []) epochs.set(p, held?.epochOf(p));
    const scope: PartitionScope | undefined =
      held === undefined || partitions === undefined
        ? undefined
        : {
            count: held.partitionCount,
            partitions: [...epochs]
              .filter(([p, e]) => e !== undefined && this.loadedAt.get(p) !== e)
              .map(([p]) => p),
          };
    if (scope?.partitions.length === 0) return { runs: [], queued: 0, orphaned: 0 };
    const stored = await host.store.loadActive(scope);
    // Loaded, unless lost (or lost and taken again) meanwhile: its unload forgot the mark.
    const markLoaded = (): void => {
      if (held === undefined || scope === undefined) return;
      for (const p of scope.partitions) {
        const epoch = epochs.get(p);
        if (epoch !== undefined && held.epochOf(p) === epoch) this.loadedAt.set(p, epoch);
      }
    };
    if (stored.runs.length === 0) {
      markLoaded();
      return { runs: [], queued: 0, orphaned: 0 };
    }
    const keys = await host.store.keysOfRuns(
      stored.runs.flatMap((r) =>
        r.idempotencyKey === null ? [] : [{ id: r.id, workflowName: r.workflowName, key: r.idempotencyKey }],
      ),
    );
    const workflows = new Map<number, CompiledWorkflow>();
    const invalid = new Map<number, StoredDefinitionInvalidError>();
    for (const r of stored.runs) {
      if (workflows.has(r.definitionId) || invalid.has(r.definitionId)) continue;
      try {
        workflows.set(r.definitionId, await host.definitions.compiledById(r.definitionId));
      } catch (e) {
        if (!(e instanceof StoredDefinitionInvalidError)) throw e;
        invalid.set(r.definitionId, e);
      }
    }
    const mine = (id: string): boolean =>
      !host.core.runs.has(id) &&
      (held === undefined ||
        scope === undefined ||
        held.epochOf(partitionOf(id, held.partitionCount)) ===
          epochs.get(partitionOf(id, held.partitionCount)));
    if (invalid.size > 0) await this.failInvalid(stored.runs, invalid, mine);
    // From here on, no await until recovered: what is held now is what the runs are recovered under.
    const runs = stored.runs.filter((r) => mine(r.id) && workflows.has(r.definitionId));
    const ids = new Set(runs.map((r) => r.id));
    // Rows read and left out, but not those of runs in memory (recovered by an earlier try of this
    // load): the writer must go on taking their rows for stored (their next write an update).
    const away = (runId: string): boolean => !ids.has(runId) && !host.core.runs.has(runId);
    const left = stored.runs.filter((r) => away(r.id)).map((r) => r.id);
    if (left.length > 0)
      host.store.released?.([...left, ...stored.tasks.filter((t) => away(t.runId)).map((t) => t.id)]);
    const hashes = new Map([...keys].map(([runId, k]) => [runId, k.requestHash]));
    // Leases whose executor does not come back expire a session timeout less a heartbeat after the
    // restart: their tasks run elsewhere within the timeout (live executors re-attach within 5 s).
    const at = host.moment();
    const graceMs = Math.max(0, host.sessionTimeoutMs - host.heartbeatIntervalMs - (at.mono - restartedAt));
    const recovered = core.recover(
      host.core,
      { runs, tasks: stored.tasks.filter((t) => ids.has(t.runId)) },
      workflows,
      hashes,
      at,
      graceMs,
    );
    for (const run of recovered.runs) host.keyed.remember(run);
    this.stats.loadedRuns += recovered.runs.length;
    await host.parking?.recovered(recovered.runs);
    await host.store.flush();
    markLoaded();
    // Executors that held leases of these runs are reconnecting (or being told): no warning about
    // types they advertise until they have had the time to.
    if (recovered.queued > 0 || recovered.orphaned > 0) host.unserved.quietFor(host.sessionTimeoutMs);
    return recovered;
  }
}

/**
 * One {@link PartitionRuns.whenCommitted} wait (with partitions): the epochs its runs' partitions
 * were held at when it began, and the flush it waits for, made again after a commit the fence
 * refused for other partitions. Prototype methods, not closures: one is made per ended run.
 */
class CommitWait {
  private readonly epochs: (number | undefined)[];

  constructor(
    private readonly partitions: HeldPartitions,
    private readonly store: Pick<EngineStore, "flush">,
    private readonly runIds: readonly string[],
    private readonly done: () => void,
    private readonly failed: (e: unknown) => void,
  ) {
    this.epochs = runIds.map((id) => partitions.epochOf(partitionOf(id, partitions.partitionCount)));
  }

  wait(): void {
    void this.store.flush().then(
      () => this.committed(),
      (e: unknown) => (this.again(e) ? this.wait() : this.failed(e)),
    );
  }

  private committed(): void {
    const e = this.moved();
    if (e === undefined) this.done();
    else this.failed(e);
  }

  /** Whether the commit refused by `e` will be made again with the changes of the runs. */
  private again(e: unknown): boolean {
    if (!isPartitionFencedError(e)) return false;
    const p = this.partitions;
    const lost = new Set(e.partitions);
    return this.runIds.every((id, i) => {
      const partition = partitionOf(id, p.partitionCount);
      return this.epochs[i] !== undefined && !lost.has(partition) && p.epochOf(partition) === this.epochs[i];
    });
  }

  /**
   * A commit counts for the runs only while each one's partition is still held at the epoch it
   * had: else their changes may have been dropped (refused with others, or marked under an
   * earlier hold) in a commit this wait was not in, and "committed" would be a guess.
   */
  private moved(): PartitionFencedError | undefined {
    const p = this.partitions;
    let gone: number[] | undefined;
    for (let i = 0; i < this.runIds.length; i++) {
      const partition = partitionOf(this.runIds[i] as string, p.partitionCount);
      const epoch = this.epochs[i];
      if (epoch === undefined || p.epochOf(partition) !== epoch) (gone ??= []).push(partition);
    }
    return gone === undefined
      ? undefined
      : new PartitionFencedError(
          [...new Set(gone)].sort((a, b) => a - b),
          "the run's partition moved to another scheduler replica while its changes were committed",
        );
  }
}
