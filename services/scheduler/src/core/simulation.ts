/**
 * A whole engine core driven by hand, for tests without a server (test code): effects are recorded
 * and carried out in memory (offers queue up, timers wait in a list until fired, rows and events
 * are kept), time moves only when the test says so, and ids and jitter are deterministic.
 */
import { create } from "@bufbuild/protobuf";
import { LeaseKeySchema, type LeaseKey } from "@nexusflow/gen";
import { compileWorkflow, type CompiledWorkflow } from "../dag/index.js";
import {
  storedStepId,
  type AttemptState,
  type ParentLink,
  type RunState,
  type TaskState,
} from "../model/run-state.js";
import type { StoredActiveState, StoredTask } from "../persistence/engine-store.js";
import type { Core, Effects, EventInit, Moment, SessionLeases, Timer } from "./context.js";
import { leaseKey } from "./fencing.js";
import { grantLease } from "./leasing.js";
import { admitQueued, advance, forgetRun, startRun } from "./runs.js";
import { timerFired } from "./timeouts.js";

/** Compiles a workflow spec or throws. */
export function workflowOf(spec: unknown): CompiledWorkflow {
  const r = compileWorkflow(spec);
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("; "));
  return r.workflow;
}

/** Starts a run of `workflow` (definition 1, no key, no labels) at the simulation's now. */
export function beginRun(
  sim: Simulation,
  workflow: CompiledWorkflow,
  input: unknown = {},
  parent: ParentLink | null = null,
): RunState {
  return startRun(
    sim.core,
    { definitionId: 1, workflow, input, idempotencyKey: null, requestHash: null, labels: {}, parent },
    sim.at().now,
  );
}

/** Advances every run the last steps touched until none moves (Simulation.settle with core advance). */
export function settleRuns(sim: Simulation): void {
  sim.settle((r) => advance(sim.core, r, sim.at().now));
}

/**
 * What the dispatcher does with the offered tasks: a task with keys or rate limits is admitted
 * first (a refused one leaves the queue: it is offered again when its gate lets it go); the first
 * admitted is leased on `session`.
 */
export function leaseAdmitted(sim: Simulation, session: SessionLeases): TaskState | undefined {
  while (sim.offered.length > 0) {
    const task = sim.offered.shift() as TaskState;
    if (task.status !== "QUEUED") continue;
    const run = sim.core.runs.get(task.runId);
    if (run === undefined) continue;
    // The engine marks a step with rate limits so when it offers it.
    if (task.rate === undefined && (run.workflow.stepsById.get(task.stepId)?.rateLimits.length ?? 0) > 0)
      task.rate = null;
    if ((task.claim !== undefined || task.rate !== undefined) && !admitQueued(sim.core, task, sim.at().now))
      continue;
    grantLease(sim.core, run, task, session, sim.at().now);
    return task;
  }
  return undefined;
}

/** {@link leaseAdmitted} until nothing more is admitted. */
export function leaseAllAdmitted(sim: Simulation, session: SessionLeases): TaskState[] {
  const out: TaskState[] = [];
  for (let t = leaseAdmitted(sim, session); t !== undefined; t = leaseAdmitted(sim, session)) out.push(t);
  return out;
}

/** `run`'s rows as recovery reads them (`tasks`: its task rows, by default those in memory). */
export function storedOf(run: RunState, tasks: Iterable<TaskState> = run.tasks.values()): StoredActiveState {
  return {
    runs: [
      {
        id: run.id,
        definitionId: run.definitionId,
        workflowName: run.workflow.name,
        status: run.status,
        input: run.input,
        idempotencyKey: run.idempotencyKey,
        labels: run.labels,
        cancelRequested: run.cancelRequested,
        compensateOnCancel: run.compensateOnCancel,
        error: run.error,
        lastEventSeq: run.eventSeq,
        deadline: run.deadline,
        createdAt: run.createdAt,
        signals: run.signals,
        parent: run.parent,
        ...(run.rerun === undefined ? {} : { rerun: run.rerun }),
      },
    ],
    tasks: [...tasks].map((t): StoredTask => ({
      ...t,
      current: t.current === null ? null : { ...t.current },
    })),
  };
}

/**
 * What storage holds of every run of `sim` (as loadActive reads them): each run's rows as
 * {@link storedOf} gives them, without what a task keeps in memory only (its session, heartbeat,
 * resolved offloaded output, concurrency claim, queue hold and rate limit buckets).
 * `definitionOf`: a run's definition id, by default the one it was started with.
 */
export function storedState(
  sim: Simulation,
  definitionOf: (run: RunState) => number = (run) => run.definitionId,
): StoredActiveState {
  const runs: StoredActiveState["runs"][number][] = [];
  const tasks: StoredTask[] = [];
  for (const run of sim.core.runs.values()) {
    const rows = storedOf(run, []);
    for (const r of rows.runs) runs.push({ ...r, definitionId: definitionOf(run) });
  }
  for (const t of sim.core.tasks.values()) {
    const { sessionId: _s, lastHeartbeat: _h, resolvedOutput: _o, claim: _c, hold: _q, rate: _r, ...row } = t;
    tasks.push({ ...row, current: t.current === null ? null : { ...t.current } });
  }
  return { runs, tasks };
}

/** An event as recorded. */
export interface RecordedEvent {
  runId: string;
  case: EventInit["case"];
  value: EventInit["value"];
}

/** The simulated core (see the module comment). */
export class Simulation {
  readonly sessions = new Map<string, SessionLeases>();
  readonly offered: TaskState[] = [];
  readonly timers: { timer: Timer; due: number }[] = [];
  readonly events: RecordedEvent[] = [];
  readonly cancels: { taskRunId: string; reason: string }[] = [];
  readonly written = {
    runs: new Set<RunState>(),
    tasks: new Set<TaskState>(),
    attempts: new Set<AttemptState>(),
  };
  readonly ended: RunState[] = [];
  readonly soon = new Set<RunState>();
  /** Child workflow steps the shell was asked to start (children.ts), by stored step id, in order. */
  readonly childStarts: { runId: string; stepId: string }[] = [];
  /** Children the shell was asked to read for a rollback (child-rollback.ts), in order. */
  readonly rollbackReads: { runId: string; stepId: string; childRunId: string }[] = [];
  /** Rate limit pauses stored (core/rate-limits.ts), in order. */
  readonly pauses: { name: string; key: string; until: number | null }[] = [];
  /** Faults of a run's rules reached from another run's (context.ts crossInto), in order. */
  readonly faults: { run: RunState; error: unknown }[] = [];
  /**
   * Whether such a fault is only recorded in {@link faults}, and the rules that reached it go on
   * (as in the engine); by default it is thrown on too, so that a test sees its bug.
   */
  confineFaults = false;
  commits = 0;
  clock = 1_000_000;
  jitter = 0.5;
  private ids = 0;
  readonly core: Core;

  constructor(sessionTimeoutMs = 10_000) {
    const fx: Effects = {
      writeRun: (r) => this.written.runs.add(r),
      writeTask: (t) => this.written.tasks.add(t),
      writeAttempt: (a) => this.written.attempts.add(a),
      event: (run, e) => this.events.push({ runId: run.id, case: e.case, value: e.value }),
      offer: (t, front) => (front ? this.offered.unshift(t) : this.offered.push(t)),
      pump: () => undefined,
      cancelLease: (t, reason) => this.cancels.push({ taskRunId: t.id, reason }),
      leaseEnded: () => undefined,
      setTimer: (timer, ms) => this.timers.push({ timer, due: this.clock + Math.max(0, ms) }),
      resolveOutput: (t) => (t.resolvedOutput = t.outputRef),
      advanceSoon: (run) => this.soon.add(run),
      runEnded: (run) => this.ended.push(run),
      startChild: (run, task) => this.childStarts.push({ runId: run.id, stepId: storedStepId(task) }),
      rollbackChild: (run, task, childRunId) =>
        this.rollbackReads.push({ runId: run.id, stepId: task.stepId, childRunId }),
      pauseRateLimit: (bucket) =>
        this.pauses.push({ name: bucket.name, key: bucket.key, until: bucket.pausedUntil }),
      commit: () => this.commits++,
      commitSoon: () => this.commits++,
      fault: (run, error) => {
        this.faults.push({ run, error });
        if (!this.confineFaults) throw error;
      },
    };
    this.core = {
      runs: new Map(),
      tasks: new Map(),
      sessions: this.sessions,
      fx,
      sessionTimeoutMs,
      newId: () => `id-${++this.ids}`,
    };
  }

  /** The time of the next input. */
  at(): Moment {
    return { now: new Date(this.clock), mono: this.clock, jitter: this.jitter };
  }

  /** Attaches a session. */
  session(id: string, executorId = id): SessionLeases {
    const s = { id, executorId, leases: new Set<string>() };
    this.sessions.set(id, s);
    return s;
  }

  /** Leases the oldest offered task still QUEUED to `session`; undefined when none is. */
  lease(session: SessionLeases): TaskState | undefined {
    while (this.offered.length > 0) {
      const task = this.offered.shift() as TaskState;
      if (task.status !== "QUEUED") continue;
      const run = this.core.runs.get(task.runId);
      if (run === undefined) continue;
      grantLease(this.core, run, task, session, this.at().now);
      return task;
    }
    return undefined;
  }

  /** The lease key of the task's current lease, as an executor sends it. */
  key(task: TaskState): LeaseKey {
    return create(LeaseKeySchema, leaseKey(task));
  }

  /** Moves time on by `ms` and fires the timers then due, in order. */
  advanceTime(ms: number): void {
    this.clock += ms;
    for (;;) {
      this.timers.sort((a, b) => a.due - b.due);
      const next = this.timers[0];
      if (next === undefined || next.due > this.clock) return;
      this.timers.shift();
      timerFired(this.core, next.timer, this.at());
    }
  }

  /** Evaluates the runs marked to advance soon, and forgets ended runs (their commit happened). */
  settle(advance: (run: RunState) => void): void {
    const runs = [...this.soon];
    this.soon.clear();
    for (const r of runs) advance(r);
    for (const r of this.ended.splice(0)) forgetRun(this.core, r);
  }

  /** The event cases of a run, in order. */
  eventsOf(runId: string): string[] {
    return this.events.filter((e) => e.runId === runId).map((e) => e.case ?? "");
  }
}
