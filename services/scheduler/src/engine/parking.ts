/**
 * The engine's side of parking (core/parking.ts has the rule): a run that only waits leaves
 * memory once it has been quiet (no commit touching it) for `parkAfterMs`, and is loaded back,
 * one run through the same recovery as start-up (core/recovery.ts), when something happens to it.
 *
 * - Parking: quiet runs that are parkable leave the model at once (their timers cleared), then
 *   everything marked so far is committed (their last changes included: the writer holds them),
 *   then their parked rows are stored (persistence/parked-runs.ts). A load in between waits for it.
 *   A crash in between leaves a run not parked: start-up recovery loads it as any active run.
 * - Loading: a run's rows are read, its parked rows deleted (before it can change again: a run
 *   changed while still marked parked would be skipped by the next start-up), and it is recovered.
 *   Loads of one run share one read.
 * - Waking: parked runs whose `wake_at` (nearest wait timeout, sleep or deadline) has come are
 *   found by a query on that indexed column, on one timer set to the nearest of them (and at least
 *   every `wakePollMs`); recovery re-arms their timers, which fire at once.
 * - Events: before an event is matched, the runs whose parked waits for an event listen to its
 *   key (or a pattern matching it) are loaded, and no run parks until the match is over, so that
 *   an event meets every wait either in memory or in the database.
 *
 * States: CREATED -> RUNNING -> STOPPED.
 */
import { UnavailableError, type Logger } from "@nexusflow/common";
import { isPartitionFencedError } from "../cluster/partitioning.js";
import type { CompiledWorkflow } from "../dag/index.js";
import * as core from "../core/index.js";
import type { Core, Moment } from "../core/index.js";
import { parkable, parkRun, waitingChildren, type ParkedEntry } from "../core/parking.js";
import type { EngineStore, StoredRunRows } from "../persistence/engine-store.js";
import type { ParkedRunStore } from "../persistence/parked-runs.js";
import { TERMINAL_RUN_STATUSES, type RunState } from "../model/run-state.js";
import type { ChildRuns } from "./children.js";
import { StoredDefinitionInvalidError, type Definitions } from "./definitions.js";
import type { EngineTimers } from "./engine-timers.js";
import type { KeyedStarts } from "./keyed-starts.js";

/** Options of parking. */
export interface ParkingOptions {
  /** How long a parkable run stays in memory after its last commit. @default 1000 */
  parkAfterMs?: number | undefined;
  /** Most runs parked at once (one commit, one insert). @default 1000 */
  batchSize?: number | undefined;
  /** Longest time between two looks for parked runs due to wake. @default 60000 */
  wakePollMs?: number | undefined;
}

/** What parking needs of the engine. */
export interface ParkingHost {
  readonly core: Core;
  readonly store: Pick<
    EngineStore,
    "flush" | "released" | "loadRun" | "runOutcome" | "keysOfRuns" | "failRefusedRun"
  >;
  /** The parked rows. */
  readonly parking: { readonly store: ParkedRunStore };
  readonly definitions: Pick<Definitions, "compiledById">;
  readonly log: Logger;
  /** StartRun idempotency keys of the runs in memory. */
  readonly keyed: Pick<KeyedStarts, "remember" | "forget">;
  /** The rules' timers: a parked run's go. */
  readonly timers: Pick<EngineTimers, "runLeft">;
  /** Child runs: a parked parent loaded back reads its ended child's row. */
  readonly children: Pick<ChildRuns, "start">;
  /** Runs with reports not yet evaluated: they stay. */
  readonly dirty: ReadonlySet<RunState>;
  /** Whether the engine is RUNNING (or RECOVERING: a child ending then loads its parked parent). */
  live(): boolean;
  /** Whether the run's partition is held by this replica (partition-load.ts): only then is it loaded. */
  owns(runId: string): boolean;
  /**
   * The epoch at which the run's partition is held (0 without partitions), undefined when it is
   * not: a run is loaded from rows read under the epoch it is recovered under, or not at all.
   */
  heldAt(runId: string): number | undefined;
  moment(): Moment;
}

type ParkingState = "CREATED" | "RUNNING" | "STOPPED";

const WAKE_BATCH = 500;
const LOAD_PARALLELISM = 16;

/** A run whose partition another replica holds (docs/replicas.md): a call for it may be retried. */
function notHeld(runId: string): UnavailableError {
  return new UnavailableError(`run ${runId} belongs to a partition another scheduler replica holds now`);
}

/** See the module comment. */
export class Parking {
  private readonly parkAfterMs: number;
  private readonly batchSize: number;
  private readonly wakePollMs: number;
  private stateValue: ParkingState = "CREATED";
  /** Runs in memory by the time (performance.now()) a commit last touched them. */
  private readonly quiet = new Map<string, number>();
  /** Runs out of memory whose parked rows are being stored. */
  private readonly parking = new Map<string, Promise<void>>();
  private readonly loading = new Map<string, Promise<RunState | undefined>>();
  /** Runs that must not park now (children of a parent being loaded), with how many hold each. */
  private readonly pinned = new Map<string, number>();
  /** Event matches in progress: no run parks meanwhile. */
  private matching = 0;
  private sweepTimer: NodeJS.Timeout | undefined;
  private wakeTimer: NodeJS.Timeout | undefined;
  /** When the wake timer fires (Date.now() ms). */
  private wakeTimerAt = Infinity;
  private waking = false;
  private wakeAgain = false;
  /** Counters (metrics, tests). */
  readonly stats = { parked: 0, loaded: 0 };

  constructor(
    private readonly host: ParkingHost,
    options: ParkingOptions = {},
  ) {
    this.parkAfterMs = options.parkAfterMs ?? 1000;
    this.batchSize = options.batchSize ?? 1000;
    this.wakePollMs = options.wakePollMs ?? 60_000;
  }

  get state(): ParkingState {
    return this.stateValue;
  }

  /** Starts sweeping and waking (after start-up recovery); the first look for due runs is at once. */
  start(): void {
    if (this.stateValue !== "CREATED") return;
    this.stateValue = "RUNNING";
    const every = Math.max(20, Math.min(1000, Math.floor(this.parkAfterMs / 2)));
    this.sweepTimer = setInterval(() => this.sweep(), every);
    this.sweepTimer.unref();
    this.wakeSoon(Date.now());
  }

  /** Stops the timers (parkings in flight finish or are left to the next start-up). */
  stop(): void {
    this.stateValue = "STOPPED";
    clearInterval(this.sweepTimer);
    clearTimeout(this.wakeTimer);
  }

  /** Runs touched by a commit: each stays at least `parkAfterMs` longer. */
  touched(runIds: Iterable<string>): void {
    const now = performance.now();
    for (const id of runIds) if (this.host.core.runs.has(id)) this.quiet.set(id, now);
  }

  /**
   * Runs recovered at start-up: candidates to park, and their parked children are loaded (a parent
   * in memory has its children there).
   */
  async recovered(runs: readonly RunState[]): Promise<void> {
    this.touched(runs.map((r) => r.id));
    await this.loadAll(runs.flatMap((r) => waitingChildren(r, r.tasks.values())));
  }

  /**
   * A child run ends while its parent is out of memory (parked, or being loaded): returns what to
   * do once its end is committed, load the parent back and have it read its child's row
   * (children.ts childFoundEnded). Undefined when its parent is in memory (it ended the step).
   */
  childEnding(run: RunState): (() => void) | undefined {
    const parent = run.parent;
    if (parent === null || this.host.core.runs.has(parent.runId)) return undefined;
    return () =>
      void this.load(parent.runId).then(
        (p) => (p === undefined ? undefined : this.host.children.start(p.id, parent.stepId)),
        (e: unknown) =>
          this.host.log.warn({ err: e, run_id: parent.runId }, "could not load a parked parent back"),
      );
  }

  /**
   * The run in memory, loaded back when parked; undefined when it is not active here. Throws
   * UNAVAILABLE when its partition is held by another replica.
   */
  async load(runId: string): Promise<RunState | undefined> {
    for (;;) {
      const run = this.host.core.runs.get(runId);
      if (run !== undefined) return run;
      if (!this.host.owns(runId)) throw notHeld(runId);
      const parking = this.parking.get(runId);
      if (parking === undefined) break;
      await parking;
    }
    let loading = this.loading.get(runId);
    if (loading === undefined) {
      loading = this.loadParked(runId).finally(() => this.loading.delete(runId));
      this.loading.set(runId, loading);
    }
    return loading;
  }

  /**
   * Loads the parked runs whose waits for an event may match `key`, and holds parking until
   * `release` is called (once the event is matched against the waits in memory).
   */
  async eventCandidates(key: string): Promise<{ release: () => void }> {
    const release = this.hold();
    try {
      await Promise.all(this.parking.values());
      await this.loadAll(await this.host.parking.store.eventCandidates(key));
    } catch (e) {
      release();
      throw e;
    }
    return { release };
  }

  /** Holds parking (no run parks) until the returned function is called. */
  hold(): () => void {
    this.matching++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.matching--;
    };
  }

  /** Loads the runs of `ids` (a few at a time). */
  async loadAll(ids: readonly string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += LOAD_PARALLELISM)
      await Promise.all(ids.slice(i, i + LOAD_PARALLELISM).map((id) => this.load(id)));
  }

  private async loadParked(runId: string): Promise<RunState | undefined> {
    const { host } = this;
    // Rows read now are the run's as long as its partition stays held at this epoch (the fence).
    const epoch = host.heldAt(runId);
    if (epoch === undefined) throw notHeld(runId);
    // The status first: a run that ended (a late signal, a cancel) is not read whole.
    const outcome = await host.store.runOutcome(runId);
    const rows =
      outcome === undefined || TERMINAL_RUN_STATUSES.has(outcome.status)
        ? undefined
        : await host.store.loadRun(runId);
    if (rows === undefined || TERMINAL_RUN_STATUSES.has(rows.run.status)) {
      // Parked rows of a run that is not active (none should be): they would wake it forever.
      await host.parking.store.unpark(runId);
      return undefined;
    }
    const r = rows.run;
    let workflow: CompiledWorkflow;
    try {
      workflow = await host.definitions.compiledById(r.definitionId);
    } catch (e) {
      if (!(e instanceof StoredDefinitionInvalidError)) throw e;
      // It could never run (partition-load.ts failInvalid): it ends FAILED, and stays out.
      await host.store.failRefusedRun(runId, e.runError);
      await host.parking.store.unpark(runId);
      host.log.error(
        { run_id: runId, error: e.message },
        "run failed: its workflow definition, as stored, no longer passes validation",
      );
      return undefined;
    }
    const keys =
      r.idempotencyKey === null
        ? new Map<string, { requestHash: string }>()
        : await host.store.keysOfRuns([{ id: r.id, workflowName: r.workflowName, key: r.idempotencyKey }]);
    // Its children first (kept from parking until it is back): a parent in memory reaches them.
    const children = waitingChildren({ id: r.id, workflow }, rows.tasks);
    for (const id of children) this.pinned.set(id, (this.pinned.get(id) ?? 0) + 1);
    try {
      await this.loadAll(children);
      return await this.recoverParked(runId, epoch, rows, workflow, keys);
    } finally {
      for (const id of children) {
        const n = (this.pinned.get(id) ?? 1) - 1;
        if (n === 0) this.pinned.delete(id);
        else this.pinned.set(id, n);
      }
    }
  }

  /**
   * Recovers a parked run from its rows, read while its partition was held at `epoch`, once its
   * parked rows are deleted (fenced: only while that epoch holds). Not when the partition was lost
   * meanwhile, even if taken again: another replica may have changed the run since the rows were
   * read, and a copy left in memory would be taken for the run's state by the next load.
   */
  private async recoverParked(
    runId: string,
    epoch: number,
    rows: StoredRunRows,
    workflow: CompiledWorkflow,
    keys: ReadonlyMap<string, { requestHash: string }>,
  ): Promise<RunState | undefined> {
    const { host } = this;
    const r = rows.run;
    const present = host.core.runs.get(runId);
    if (present !== undefined) return present;
    if (!host.live()) throw new UnavailableError("the scheduler is stopping");
    if (host.heldAt(runId) !== epoch) throw notHeld(runId);
    // Not parked: not this scheduler's to load (recovering, or ended meanwhile).
    if (!(await host.parking.store.unpark(runId))) return host.core.runs.get(runId);
    // Lost while its parked rows were deleted: the replica that took the partition after that
    // delete loads the run as any active one.
    if (host.heldAt(runId) !== epoch) throw notHeld(runId);
    // Loaded meanwhile as an active run (a partition load that read it once no longer parked):
    // that one, never a second copy of the run in memory.
    const loaded = host.core.runs.get(runId);
    if (loaded !== undefined) return loaded;
    const hashes = new Map([...keys].map(([id, k]) => [id, k.requestHash]));
    const { runs } = core.recover(
      host.core,
      { runs: [r], tasks: rows.tasks },
      new Map([[r.definitionId, workflow]]),
      hashes,
      host.moment(),
    );
    const run = runs[0];
    if (run === undefined) return undefined;
    this.stats.loaded++;
    this.quiet.set(run.id, performance.now());
    host.keyed.remember(run);
    host.store.flush().catch(() => undefined);
    return run;
  }

  /** Parks the runs that have been quiet long enough (at most one batch in flight). */
  private sweep(): void {
    const { host } = this;
    if (this.stateValue !== "RUNNING" || !host.live() || this.matching > 0 || this.parking.size > 0) return;
    const now = performance.now();
    const runs: RunState[] = [];
    for (const [id, at] of this.quiet) {
      if (now - at < this.parkAfterMs) continue;
      this.quiet.delete(id);
      const run = host.core.runs.get(id);
      if (run === undefined || host.dirty.has(run) || this.pinned.has(id) || !parkable(host.core, run))
        continue;
      runs.push(run);
      if (runs.length >= this.batchSize) break;
    }
    if (runs.length === 0) return;
    const entries = runs.map((run) => {
      const entry = parkRun(host.core, run);
      host.timers.runLeft(run);
      host.keyed.forget(run);
      return entry;
    });
    const rowIds = runs.flatMap((run) => [run.id, ...[...run.tasks.values()].map((t) => t.id)]);
    // Their children in memory may park now.
    for (const run of runs)
      for (const id of waitingChildren(run, run.tasks.values()))
        if (host.core.runs.has(id)) this.quiet.set(id, now);
    const done = this.store(entries, rowIds).finally(() => {
      for (const e of entries) this.parking.delete(e.runId);
    });
    for (const e of entries) this.parking.set(e.runId, done);
  }

  /** Commits what the runs changed last, then stores them as parked (again after a failure). */
  private async store(all: readonly ParkedEntry[], rowIds: readonly string[]): Promise<void> {
    let entries = all;
    for (let delay = 200; ; delay = Math.min(delay * 2, 5000)) {
      try {
        await this.host.store.flush();
        // Committed: what the writer knows of their rows goes with them (read again on a load).
        this.host.store.released?.(rowIds);
        await this.host.parking.store.park(entries);
        break;
      } catch (e) {
        // Stopped: the runs were not stored as parked; the next start-up loads them as active.
        if (this.stateValue !== "RUNNING") return;
        // Partitions lost meanwhile (docs/replicas.md): their runs, not parked, are their new
        // owner's active runs; the others are parked at once.
        if (isPartitionFencedError(e)) {
          entries = entries.filter((x) => this.host.owns(x.runId));
          if (entries.length === 0) return;
          continue;
        }
        this.host.log.warn({ err: e, runs: entries.length }, "could not park runs; trying again");
        await new Promise((resolve) => setTimeout(resolve, delay).unref());
      }
    }
    this.stats.parked += entries.length;
    let wake = Infinity;
    for (const e of entries) if (e.wakeAt !== null) wake = Math.min(wake, e.wakeAt.getTime());
    if (wake !== Infinity) this.wakeSoon(wake);
  }

  /** Looks for due parked runs now (partitions were taken: their parked runs may be due). */
  wakeDue(): void {
    this.wakeSoon(Date.now());
  }

  /** Looks for due parked runs at `at` (Date.now() ms) unless a look is set earlier. */
  private wakeSoon(at: number): void {
    if (this.stateValue !== "RUNNING" || at >= this.wakeTimerAt) return;
    clearTimeout(this.wakeTimer);
    this.wakeTimerAt = at;
    this.wakeTimer = setTimeout(
      () => {
        this.wakeTimerAt = Infinity;
        void this.wake();
      },
      Math.max(0, Math.min(at - Date.now(), this.wakePollMs)),
    );
    this.wakeTimer.unref();
  }

  /** Loads the parked runs that are due, then sets the timer to the next one. */
  private async wake(): Promise<void> {
    if (this.waking) {
      this.wakeAgain = true;
      return;
    }
    this.waking = true;
    let next = Date.now() + this.wakePollMs;
    try {
      do {
        this.wakeAgain = false;
        for (;;) {
          if (this.stateValue !== "RUNNING" || !this.host.live()) return;
          const due = await this.host.parking.store.due(new Date(), WAKE_BATCH);
          await this.loadAll(due);
          if (due.length < WAKE_BATCH) break;
        }
      } while (this.wakeAgain);
      const nearest = await this.host.parking.store.nextWake();
      if (nearest !== null) next = Math.min(next, nearest.getTime());
    } catch (e) {
      this.host.log.warn({ err: e }, "could not wake parked runs; trying again in a second");
      next = Date.now() + 1000;
    } finally {
      this.waking = false;
    }
    this.wakeSoon(next);
  }
}
