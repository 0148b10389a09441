/**
 * What one pass of the fire loop does for one schedule, as a pure function of its state, its due
 * fire times, the runs of it still active and the clock: which fire times start runs, which wait
 * (buffered), which are skipped by the overlap policy or missed during downtime, and whether the
 * active runs are cancelled. The shell (fire-loop.ts) carries the result out.
 *
 * Downtime is exact, not guessed from lateness: a fire time before `loopStartedAt` (when this
 * scheduler's loop began) fell while no loop was running; the catch-up policy decides about those
 * (OFF: none, LAST: the latest within the window, ALL: all within the window). A fire time after
 * it is the loop's own and always goes to the overlap policy, however late the loop gets to it.
 */
import type { CatchUpPolicy, OverlapPolicy } from "../dag/schedule-spec.js";

/** The part of a schedule a plan reads. */
export interface PlanInput {
  overlapPolicy: OverlapPolicy;
  maxConcurrentRuns: number;
  catchUpPolicy: CatchUpPolicy;
  catchUpWindowMs: number;
  /** A fire waiting for the active runs to end, if any. */
  buffered: Date | null;
  /** How many runs of the schedule are active now. */
  activeRuns: number;
  /** Due fire times, in order (after the schedule's cursor, not after `now`). */
  due: readonly Date[];
  now: Date;
  /** When this scheduler's fire loop began: earlier fire times fell during downtime. */
  loopStartedAt: Date;
  /**
   * `due` was cut short (a long downtime is walked over several passes) and the fire time after
   * its last still fell during downtime: a later pass has a later one, so LAST keeps none of these.
   * @default false
   */
  moreDowntime?: boolean;
}

/** What to do, in order. */
export interface Plan {
  /** Fire times that start runs now, in order (a released buffered fire first). */
  start: Date[];
  /** What happens to the active runs before the starts. */
  activeRuns: "keep" | "cancel" | "terminate";
  /** The fire left waiting (null: none). */
  buffered: Date | null;
  /** Fire times the overlap policy dropped. */
  skipped: number;
  /** Fire times missed during downtime and not caught up. */
  missed: number;
}

/** The due fire times the catch-up policy keeps, and how many it drops as missed. */
export function catchUp(
  input: Pick<
    PlanInput,
    "catchUpPolicy" | "catchUpWindowMs" | "due" | "now" | "loopStartedAt" | "moreDowntime"
  >,
): { kept: Date[]; missed: number } {
  const start = input.loopStartedAt.getTime();
  const oldest = input.now.getTime() - input.catchUpWindowMs;
  const downtime = input.due.filter((t) => t.getTime() < start);
  const live = input.due.filter((t) => t.getTime() >= start);
  let caught: Date[];
  if (input.catchUpPolicy === "OFF") caught = [];
  else {
    const inWindow = downtime.filter((t) => t.getTime() >= oldest);
    caught = input.catchUpPolicy === "ALL" ? inWindow : input.moreDowntime === true ? [] : inWindow.slice(-1);
  }
  return { kept: [...caught, ...live], missed: downtime.length - caught.length };
}

/** The plan for one schedule (see the module comment). */
export function planFires(input: PlanInput): Plan {
  const { kept, missed } = catchUp(input);
  const plan: Plan = { start: [], activeRuns: "keep", buffered: input.buffered, skipped: 0, missed };
  let active = input.activeRuns;
  const policy = input.overlapPolicy;
  const ending = policy === "TERMINATE_OTHER" || policy === "CANCEL_OTHER";
  if (ending && plan.buffered !== null && kept.length > 0) {
    // A newer fire supersedes the one waiting: it would only be cancelled by it.
    plan.buffered = null;
    plan.skipped++;
  }
  // A buffered fire goes first, once nothing it waited for is active.
  if (plan.buffered !== null && active === 0) {
    plan.start.push(plan.buffered);
    plan.buffered = null;
    active = 1;
  }
  if (ending) {
    // Each fire would end the one before it: only the latest of this pass counts.
    const latest = kept.at(-1);
    if (latest === undefined) return plan;
    plan.skipped += kept.length - 1;
    if (active === 0) plan.start.push(latest);
    else if (policy === "TERMINATE_OTHER") {
      plan.activeRuns = "terminate";
      plan.start.push(latest);
    } else {
      plan.activeRuns = "cancel";
      plan.buffered = latest;
    }
    return plan;
  }
  for (const t of kept) {
    if (policy === "ALLOW_ALL") {
      if (active < input.maxConcurrentRuns) {
        plan.start.push(t);
        active++;
      } else plan.skipped++;
    } else if (active === 0 && plan.buffered === null) {
      plan.start.push(t);
      active++;
    } else if (policy === "BUFFER_ONE" && plan.buffered === null) plan.buffered = t;
    else plan.skipped++;
  }
  return plan;
}
