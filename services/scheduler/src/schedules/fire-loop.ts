/**
 * The fire loop: one component of the scheduler that sleeps until the next fire time of any
 * schedule (or until woken by the API), then makes one pass: it finishes fires left STARTING
 * (a crash, an unavailable database), plans each due schedule (plan.ts), commits every plan in one
 * transaction (cursors, counters, buffered fires, the new fires as STARTING rows), ends the runs
 * an overlap policy ends, and starts the new fires' runs (fires.ts). States: IDLE -> RUNNING ->
 * STOPPING -> STOPPED; stop() aborts the sleep and waits for the pass in progress.
 */
import type { Logger } from "@nexusflow/common";
import { BatchLoop } from "../background/batch-loop.js";
import type { PassLoopState } from "../background/pass-loop.js";
import { cronOf } from "../dag/schedule-spec.js";
import { fireTimesBetween, type CronSchedule } from "../dag/cron.js";
import { FireStarter, type RunStarter } from "./fires.js";
import { planFires } from "./plan.js";
import { type FireStore, type PendingFire, timeFireKey } from "./fire-store.js";
import type { PassUpdate, ScheduleRow, ScheduleStore } from "./store.js";
import type { CoordinatorFence } from "../cluster/coordinator.js";

/** Options of {@link FireLoop}. */
export interface FireLoopOptions {
  store: ScheduleStore;
  /** The fires of the schedules. */
  fireStore: FireStore;
  engine: RunStarter;
  log: Logger;
  /**
   * How often the loop looks again while a fire waits for runs to end (buffered) or a fire could
   * not start for now; also the pause after a failed pass. @default 500
   */
  pollMs?: number | undefined;
  /** Most schedules one pass plans. @default 1000 */
  batchSize?: number | undefined;
  /** Most fire times of one schedule one pass walks through (a long downtime takes several). @default 10000 */
  maxFiresPerPass?: number | undefined;
  /** The fires' run starter (shared with the API's triggers). @default one of its own */
  starter?: FireStarter | undefined;
  /**
   * The coordinator's fencing token of this term (cluster/coordinator.ts): each pass's plan commits
   * only while this replica holds partition 0 at that epoch. @default undefined (a sole replica)
   */
  fence?: CoordinatorFence | undefined;
  /** Told of every failed plan commit (e.g. to recognise the fence's refusal, NF001). @default none */
  refused?: ((e: unknown) => void) | undefined;
  /**
   * Whether a run is held by this replica (its partition) with its runs loaded: the state of any
   * other (held elsewhere, or of a partition still loading) is read from its committed row.
   * @default every run is held here
   */
  ownsRun?: ((runId: string) => boolean) | undefined;
  /**
   * Ends a run held by another replica, as an overlap policy asks (CANCEL_OTHER compensates).
   * Absent, a fire that must end such a run is left pending and retried (logged once per schedule).
   * @default undefined
   */
  cancelElsewhere?: ((runId: string, reason: string, compensate: boolean) => Promise<void>) | undefined;
  /**
   * How old a STARTING fire must be before a pass drives it as a leftover. In a cluster, a
   * TriggerSchedule or backfill on another replica drives its fires itself, and the engines'
   * keyed starts share no memory across replicas: a pass must not start the same fire meanwhile.
   * @default 0 (a sole replica: the engine's keyed start joins racing drivers)
   */
  leftoverGraceMs?: number | undefined;
}

/** The loop's state (background/pass-loop.ts). */
export type FireLoopState = PassLoopState;

const MAX_SLEEP_MS = 60_000;
/** The longest pause between tries of fires that could not start for now, and after failed passes. */
const MAX_RETRY_MS = 5_000;
/** Cron evaluations between two turns of the event loop (see FireLoop.walk). */
export const WALK_CHUNK = 256;

/**
 * See the module comment; state, passCount, wake (a schedule was created, resumed or deleted) and
 * stop are background/batch-loop.ts's (a pass stuck on an unreachable database must not hold the
 * scheduler's stop; what it did not commit is done by the next scheduler).
 */
export class FireLoop extends BatchLoop {
  private readonly starter: FireStarter;
  private readonly maxFiresPerPass: number;
  private loopStartedAt = new Date(0);
  /** Cron evaluations since the last turn of the event loop. */
  private walked = 0;
  /** Passes in a row in which a fire could not start for now (the poll backs off over them). */
  private stalls = 0;
  /** Schedules whose fire waits for a run held elsewhere to be ended (logged once each). */
  private readonly waitingElsewhere = new Set<string>();

  constructor(private readonly options: FireLoopOptions) {
    super({ name: "schedule fire loop", pollMs: 500, batchSize: 1000, retryMaxMs: MAX_RETRY_MS }, options);
    this.starter = options.starter ?? new FireStarter(options.fireStore, options.engine, options.log);
    this.maxFiresPerPass = options.maxFiresPerPass ?? 10_000;
  }

  /** When the loop began: fire times before it fell during downtime (the catch-up policy's). */
  get startedAt(): Date {
    return this.loopStartedAt;
  }

  /** The fires' run starter (the API drives triggers and backfills through it). */
  get fires(): FireStarter {
    return this.starter;
  }

  /** Starts the loop; fire times before now count as downtime. */
  override start(): void {
    if (this.state === "IDLE") this.loopStartedAt = new Date();
    super.start();
  }

  /**
   * The fire times in (`after`, `until`], at most maxFiresPerPass, evaluated {@link WALK_CHUNK} at a
   * time with a turn of the event loop between chunks: a time costs tens of microseconds, and a
   * long downtime of per-second schedules is hundreds of thousands of them, which in one go would
   * hold sessions, heartbeats and every call for seconds.
   */
  private async walk(cron: CronSchedule, after: Date, until: Date): Promise<Date[]> {
    const times: Date[] = [];
    let at = after;
    for (;;) {
      if (this.walked >= WALK_CHUNK) {
        this.walked = 0;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      const room = Math.min(WALK_CHUNK - this.walked, this.maxFiresPerPass - times.length);
      const chunk = fireTimesBetween(cron, at, until, room);
      // Each time evaluated, and the one evaluation past the end.
      this.walked += chunk.length + 1;
      times.push(...chunk);
      const last = chunk.at(-1);
      if (chunk.length < room || last === undefined || times.length >= this.maxFiresPerPass) return times;
      at = last;
    }
  }

  /** One pass; resolves with how long to sleep before the next. */
  protected async pass(): Promise<number> {
    const { store, fireStore, engine, log } = this.options;
    // Fires a crash or an outage left STARTING first: they are older than anything due now.
    const grace = this.options.leftoverGraceMs ?? 0;
    const leftover = await fireStore.startingFires(
      this.batchSize,
      grace > 0 ? new Date(Date.now() - grace) : undefined,
    );
    const retried = await this.starter.drive(leftover);
    // `again`: more is due than one pass takes; `poll`: a fire could not start for now.
    let again = false;
    let poll = retried.some((o) => "retry" in o && o.retry);
    const now = new Date();
    const due = await store.due(now, this.batchSize);
    // A full batch may leave more due behind it, unless nothing in it moved: a batch of buffered
    // fires that all wait for their runs would be found again at once, and the loop would spin.
    let moved = false;
    const unended = await fireStore.unendedRuns(due.map((s) => s.uid));
    const owns = this.options.ownsRun ?? ((): boolean => true);
    const unendedIds = [...unended.values()].flat();
    // A parked run (waiting, out of memory: engine/parking.ts) is active: back in memory first.
    for (const id of unendedIds) if (owns(id)) await engine.load?.(id);
    // Runs held by another replica: what they committed tells whether they ended.
    const activeElsewhere = await fireStore.activeRuns(unendedIds.filter((id) => !owns(id)));
    const isActive = (id: string): boolean => (owns(id) ? engine.isActive(id) : activeElsewhere.has(id));
    const ended: string[] = [];
    const updates: (PassUpdate & { expected: Date })[] = [];
    const toEnd = new Map<string, { runIds: string[]; compensate: boolean; scheduleId: string }>();
    for (const schedule of due) {
      const runIds = unended.get(schedule.uid) ?? [];
      const active = runIds.filter(isActive);
      ended.push(...runIds.filter((id) => !isActive(id)));
      let cron: CronSchedule;
      try {
        cron = cronOf(schedule.spec);
      } catch (e) {
        // Valid when created; a runtime whose time zone data lacks the zone cannot evaluate it.
        // It is parked (no next fire time, no buffered fire), said once: left due, every pass
        // would find it again at once, and the loop would spin on it.
        log.error(
          { err: e, schedule_id: schedule.scheduleId },
          "cannot evaluate a schedule's cron expression; it does not fire until it is created again",
        );
        moved = true;
        updates.push({
          uid: schedule.uid,
          expected: schedule.cursorAt,
          cursorAt: schedule.cursorAt,
          lastFireAt: null,
          nextFireAt: null,
          bufferedFireAt: null,
          skipped: 0,
          missed: 0,
          starts: [],
        });
        continue;
      }
      const times = await this.walk(cron, schedule.cursorAt, now);
      if (times.length > 0) moved = true;
      const last = times.at(-1);
      const cut = times.length === this.maxFiresPerPass;
      if (cut) again = true;
      // The next pass goes on from `last`: does it still have a fire time of the downtime?
      const following = cut && last !== undefined ? cron.next(last) : undefined;
      const plan = planFires({
        overlapPolicy: schedule.spec.overlapPolicy,
        maxConcurrentRuns: schedule.spec.maxConcurrentRuns,
        catchUpPolicy: schedule.spec.catchUpPolicy,
        catchUpWindowMs: schedule.spec.catchUpWindowMs,
        buffered: schedule.bufferedFireAt,
        activeRuns: active.length,
        due: times,
        now,
        loopStartedAt: this.loopStartedAt,
        moreDowntime: following !== undefined && following.getTime() < this.loopStartedAt.getTime(),
      });
      if (
        plan.activeRuns !== "keep" &&
        this.options.cancelElsewhere === undefined &&
        active.some((id) => !owns(id))
      ) {
        // Ending a run held by another replica needs its owner: the fire waits (nothing moves).
        poll = true;
        if (!this.waitingElsewhere.has(schedule.uid)) {
          this.waitingElsewhere.add(schedule.uid);
          log.warn(
            { schedule_id: schedule.scheduleId, run_ids: active.filter((id) => !owns(id)) },
            "a schedule's fire must end runs held by another scheduler replica; it waits and is retried (said once)",
          );
        }
        continue;
      }
      this.waitingElsewhere.delete(schedule.uid);
      if (plan.start.length > 0 || plan.buffered?.getTime() !== schedule.bufferedFireAt?.getTime())
        moved = true;
      const cursor = last ?? schedule.cursorAt;
      updates.push({
        uid: schedule.uid,
        expected: schedule.cursorAt,
        cursorAt: cursor,
        lastFireAt: last ?? null,
        nextFireAt: cron.next(cursor) ?? null,
        bufferedFireAt: plan.buffered,
        skipped: plan.skipped,
        missed: plan.missed,
        starts: plan.start,
      });
      if (plan.activeRuns !== "keep")
        toEnd.set(schedule.uid, {
          runIds: active,
          compensate: plan.activeRuns === "cancel",
          scheduleId: schedule.scheduleId,
        });
    }
    if (due.length === this.batchSize && moved) again = true;
    await fireStore.markEnded(ended);
    let applied: Set<string>;
    try {
      applied = await store.applyPass(updates, now, this.options.fence);
    } catch (e) {
      this.options.refused?.(e);
      throw e;
    }
    await Promise.all(
      [...toEnd].flatMap(([uid, end]) =>
        applied.has(uid)
          ? end.runIds.map((runId) => {
              const reason = `a new fire of schedule ${end.scheduleId} (overlap policy ${end.compensate ? "CANCEL_OTHER" : "TERMINATE_OTHER"})`;
              const elsewhere = this.options.cancelElsewhere;
              if (owns(runId) || elsewhere === undefined)
                return engine.cancelRun(runId, reason, end.compensate);
              // The fire is committed: it starts even if its owner cannot be told now (said).
              return elsewhere(runId, reason, end.compensate).catch((e: unknown) =>
                log.warn(
                  { err: e, run_id: runId, schedule_id: end.scheduleId },
                  "could not end a run held by another scheduler replica for a schedule's overlap policy",
                ),
              );
            })
          : [],
      ),
    );
    const byUid = new Map<string, ScheduleRow>(due.map((s) => [s.uid, s]));
    const fires: PendingFire[] = updates
      .filter((u) => applied.has(u.uid))
      .flatMap((u) => {
        const schedule = byUid.get(u.uid) as ScheduleRow;
        return u.starts.map((t) => ({
          scheduleUid: u.uid,
          scheduleId: schedule.scheduleId,
          spec: schedule.spec,
          fireKey: timeFireKey(t),
          fireAt: t,
          origin: "SCHEDULED" as const,
          status: "STARTING" as const,
          runId: null,
          error: null,
        }));
      });
    const outcomes = await this.starter.drive(fires);
    if (outcomes.some((o) => "retry" in o && o.retry)) poll = true;
    // A fire that keeps failing for now is tried again ever more slowly (up to 5 s), not every poll.
    this.stalls = poll ? this.stalls + 1 : 0;
    if (again) return 0;
    const wake = await store.nextWake();
    let delay = poll ? Math.min(this.pollMs * 2 ** (this.stalls - 1), MAX_RETRY_MS) : MAX_SLEEP_MS;
    if (wake.nextFireAt !== null) delay = Math.min(delay, wake.nextFireAt.getTime() - Date.now());
    if (wake.buffered) delay = Math.min(delay, this.pollMs);
    return Math.max(0, delay);
  }
}
