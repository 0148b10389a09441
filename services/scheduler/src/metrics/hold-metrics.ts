/**
 * Metrics of the tasks held back by a gate the scheduler decides when it would lease them (a full
 * concurrency key, a rate limit's tokens or its paused key), derived like lifecycle-metrics.ts from
 * the lifecycle events the batch writer committed: a task is held from its `task_held` event
 * (core/hold-events.ts) until its `task_leased`, another `task_held` (its gate changed) or an event
 * that ends its wait otherwise (cancelled, failed, skipped, its run completed). A run waiting for
 * its workflow's keys counts once, from its `run_held` event until its first task event (leased or
 * waiting: its keys let it go), its cancel or its end. So nothing is added to the engine's path,
 * and the counts are those the events report.
 *
 * - `nexusflow_scheduler_tasks_held{gate}`: tasks held now, by gate kind;
 * - `nexusflow_task_held_seconds{gate}`: how long a gate held a task, observed when it let the
 *   task go: to be leased, or to be held by another gate (a wait that ends otherwise is not);
 * - `nexusflow_scheduler_held_key_tasks{gate,limit,key}` and
 *   `nexusflow_scheduler_held_key_oldest_age_seconds{gate,limit,key}`: the depth of each key's
 *   queue of held tasks and the age of its oldest, for the keys with the most held tasks (20 by
 *   default), the rest summed (and their oldest) as limit="(other)", key="(other)" per gate: the
 *   label values stay bounded whatever the number of keys.
 *
 * Per event: a switch and map operations; per scrape: one pass over the held tasks.
 */
import { Children1, DURATION_BUCKETS, Gauge, Histogram, type Registry } from "@nexusflow/common/metrics";
import { HoldGate, type LifecycleEvent } from "@nexusflow/gen";
import type { CommitObservation } from "../persistence/batch-writer.js";

/** The gate label of each HoldGate. */
const GATE_LABELS: Readonly<Record<HoldGate, string>> = {
  [HoldGate.UNSPECIFIED]: "unspecified",
  [HoldGate.CONCURRENCY_KEY]: "concurrency_key",
  [HoldGate.RATE_LIMIT]: "rate_limit",
  [HoldGate.RATE_LIMIT_PAUSED]: "rate_limit_paused",
};

/** The gates always shown by the held-tasks gauge (0 when none holds a task). */
const GATES = [HoldGate.CONCURRENCY_KEY, HoldGate.RATE_LIMIT, HoldGate.RATE_LIMIT_PAUSED].map(
  (g) => GATE_LABELS[g],
);

/** The limit and key labels of the keys past the most named. */
export const OTHER_KEYS = "(other)";

/** The key of a run waiting for its workflow's keys among the held tasks (task ids are UUIDs). */
function runHoldId(runId: string): string {
  return `run:${runId}`;
}

/** Above this many held tasks tracked the map is cleared: a bound against leaks, never hit in practice. */
const MAX_TRACKED = 1_000_000;

/** A task held now, as its latest task_held event said. */
export interface HeldTask {
  readonly runId: string;
  readonly gate: string;
  readonly limit: string;
  readonly key: string;
  /** When it was held by this gate (ms since the epoch, the event's time). */
  readonly since: number;
}

/** One key's held tasks (see {@link heldKeyStats}). */
export interface HeldKeyStat {
  readonly gate: string;
  /** The concurrency key's expression or the rate limit's name; {@link OTHER_KEYS} for the rest. */
  readonly limit: string;
  /** The key value; {@link OTHER_KEYS} for the rest. */
  readonly key: string;
  readonly tasks: number;
  /** When its oldest held task was held (ms since the epoch). */
  readonly oldest: number;
}

function millis(event: LifecycleEvent): number {
  const t = event.time;
  return t === undefined ? Date.now() : Number(t.seconds) * 1000 + t.nanos / 1e6;
}

/**
 * Per gate, the `most` keys with the most held tasks (then the oldest), each with its count and
 * oldest hold, and the rest of the gate's keys summed as {@link OTHER_KEYS}.
 */
export function heldKeyStats(held: Iterable<HeldTask>, most: number): HeldKeyStat[] {
  const byKey = new Map<
    string,
    { gate: string; limit: string; key: string; tasks: number; oldest: number }
  >();
  for (const h of held) {
    const id = `${h.gate}\u0000${h.limit}\u0000${h.key}`;
    const s = byKey.get(id);
    if (s === undefined)
      byKey.set(id, { gate: h.gate, limit: h.limit, key: h.key, tasks: 1, oldest: h.since });
    else {
      s.tasks++;
      if (h.since < s.oldest) s.oldest = h.since;
    }
  }
  const byGate = new Map<string, HeldKeyStat[]>();
  for (const s of byKey.values()) {
    const rows = byGate.get(s.gate);
    if (rows === undefined) byGate.set(s.gate, [s]);
    else rows.push(s);
  }
  const out: HeldKeyStat[] = [];
  for (const [gate, rows] of byGate) {
    rows.sort((a, b) => b.tasks - a.tasks || a.oldest - b.oldest);
    out.push(...rows.slice(0, most));
    if (rows.length <= most) continue;
    let tasks = 0;
    let oldest = Number.POSITIVE_INFINITY;
    for (const r of rows.slice(most)) {
      tasks += r.tasks;
      oldest = Math.min(oldest, r.oldest);
    }
    out.push({ gate, limit: OTHER_KEYS, key: OTHER_KEYS, tasks, oldest });
  }
  return out;
}

/** The metrics of held tasks (see the module comment). */
export class HoldMetrics {
  readonly #heldSeconds: Children1<ReturnType<Histogram<"gate">["labels"]>>;
  /** Held tasks by task run id. */
  readonly #held = new Map<string, HeldTask>();
  /** The held tasks of each run (what its runCompleted ends). */
  readonly #byRun = new Map<string, Set<string>>();
  /** Held tasks by gate label. */
  readonly #counts = new Map<string, number>();

  /** `mostKeys`: the keys per gate the per-key gauges name, the rest summed; @default 20 */
  constructor(
    registry: Registry,
    readonly mostKeys = 20,
    private readonly clock: () => number = Date.now,
  ) {
    const registers = [registry];
    const tasksHeld = new Gauge({
      name: "nexusflow_scheduler_tasks_held",
      help: "Queued tasks held back now by a gate the scheduler decides when it would lease them, by gate (concurrency_key, rate_limit, rate_limit_paused), as the task_held events report; a run waiting for its workflow's keys (run_held) counts once.",
      labelNames: ["gate"] as const,
      registers,
      collect: () => {
        for (const gate of GATES) tasksHeld.set({ gate }, this.#counts.get(gate) ?? 0);
      },
    });
    this.#heldSeconds = new Children1(
      new Histogram({
        name: "nexusflow_task_held_seconds",
        help: "How long a gate held a queued task back, observed when it let the task go (to be leased, or held by another gate), by gate.",
        labelNames: ["gate"] as const,
        buckets: [...DURATION_BUCKETS],
        registers,
      }),
    );
    // One pass over the held tasks sets both, in the collect of the first (registration order).
    const keyTasks = new Gauge({
      name: "nexusflow_scheduler_held_key_tasks",
      help: `Queued tasks held back by one key (its queue's depth), by gate, limit (a concurrency key's expression or a rate limit's name) and key: the ${mostKeys} keys with the most per gate, the rest summed as limit="(other)", key="(other)".`,
      labelNames: ["gate", "limit", "key"] as const,
      registers,
      collect: () => {
        keyTasks.reset();
        keyOldest.reset();
        const now = this.clock();
        for (const s of heldKeyStats(this.#held.values(), this.mostKeys)) {
          const labels = { gate: s.gate, limit: s.limit, key: s.key };
          keyTasks.set(labels, s.tasks);
          keyOldest.set(labels, Math.max(0, now - s.oldest) / 1000);
        }
      },
    });
    const keyOldest = new Gauge({
      name: "nexusflow_scheduler_held_key_oldest_age_seconds",
      help: "How long the oldest task held back by a key has been held by it, for the keys of nexusflow_scheduler_held_key_tasks.",
      labelNames: ["gate", "limit", "key"] as const,
      registers,
    });
  }

  /** Records the held tasks' events of one committed statement. */
  observe(commit: CommitObservation): void {
    for (const row of commit.events) {
      // With nothing held (the common case), only a taskHeld or runHeld event changes anything.
      const c = row.message.event.case;
      if (this.#held.size === 0 && c !== "taskHeld" && c !== "runHeld") continue;
      this.#event(row.message);
    }
  }

  #event(e: LifecycleEvent): void {
    const ev = e.event;
    switch (ev.case) {
      case "taskHeld":
        this.#hold(ev.value.taskRunId, e, ev.value.gate, ev.value.limit, ev.value.key);
        return;
      case "runHeld":
        this.#hold(runHoldId(e.runId), e, ev.value.gate, ev.value.limit, ev.value.key);
        return;
      case "taskLeased":
      case "taskWaiting":
        // A run's first task leased (or waiting) ends its wait for its workflow's keys.
        this.#releaseRun(e.runId, e);
        this.#release(ev.value.taskRunId, ev.case === "taskLeased" ? e : null);
        return;
      case "taskCancelled":
      case "taskFailed":
      case "taskSkipped":
      case "taskSucceeded":
      case "taskRetryScheduled":
        this.#releaseRun(e.runId, null);
        this.#release(ev.value.taskRunId, null);
        return;
      case "runCancelRequested":
      case "runCompensating":
        this.#releaseRun(e.runId, null);
        return;
      case "runCompleted": {
        const run = this.#byRun.get(e.runId);
        if (run !== undefined) for (const id of [...run]) this.#release(id, null);
        return;
      }
      default:
        return;
    }
  }

  /**
   * The run no longer waits for its workflow's keys (see {@link #release}). Looked up by the run
   * id first: a run with nothing held (most, on every task event) builds no hold key.
   */
  #releaseRun(runId: string, at: LifecycleEvent | null): void {
    if (this.#byRun.has(runId)) this.#release(runHoldId(runId), at);
  }

  /** `id` (a task, or a run waiting for its workflow's keys) is held by a gate from `e`'s time. */
  #hold(id: string, e: LifecycleEvent, g: HoldGate, limit: string, key: string): void {
    const now = millis(e);
    this.#release(id, now);
    if (this.#held.size >= MAX_TRACKED) this.#clear();
    const gate = GATE_LABELS[g] ?? "unspecified";
    this.#held.set(id, { runId: e.runId, gate, limit, key, since: now });
    this.#counts.set(gate, (this.#counts.get(gate) ?? 0) + 1);
    const run = this.#byRun.get(e.runId);
    if (run === undefined) this.#byRun.set(e.runId, new Set([id]));
    else run.add(id);
  }

  /**
   * The task is no longer held by its gate: observed when `at` is given (its gate let it go), a
   * time or the event whose time it is (read only for a held task).
   */
  #release(id: string, at: number | LifecycleEvent | null): void {
    const h = this.#held.get(id);
    if (h === undefined) return;
    this.#held.delete(id);
    this.#counts.set(h.gate, (this.#counts.get(h.gate) ?? 1) - 1);
    const run = this.#byRun.get(h.runId);
    run?.delete(id);
    if (run?.size === 0) this.#byRun.delete(h.runId);
    if (at === null) return;
    const ms = typeof at === "number" ? at : millis(at);
    this.#heldSeconds.get(h.gate).observe(Math.max(0, ms - h.since) / 1000);
  }

  #clear(): void {
    this.#held.clear();
    this.#byRun.clear();
    this.#counts.clear();
  }
}
