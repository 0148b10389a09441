/**
 * The engine's side of durable waits (core/waits.ts, core/event-waits.ts): a signal sent to an
 * active run, and a published event matched against the WAITING waits for an event and then
 * applied to them. Each answers once what it changed is committed. A parked run (parking.ts) is
 * loaded back first: the run a signal names, the runs whose parked waits may match an event.
 * A fault (a throw) in a run's rules fails that run SCHEDULER_ERROR (faults.ts): a signal's call
 * answers INTERNAL naming it; an event's other runs take it all the same.
 */
import { ApiError, Code, type Logger } from "@nexusflow/common";
import * as core from "../core/index.js";
import type { Core } from "../core/index.js";
import type { RunState } from "../model/run-state.js";
import { confineCall, type Confine } from "./faults.js";
import type { Parking } from "./parking.js";

/** What the waits need of the engine. */
export interface DurableWaitsHost {
  readonly core: Core;
  readonly log: Logger;
  /** Throws UNAVAILABLE unless the engine is running with a healthy store. */
  assertRunning(): void;
  /**
   * Resolves once everything changed so far is committed (UNAVAILABLE after the commit timeout);
   * given `runIds`, a fence refusal for other partitions does not fail it (Engine.committed).
   */
  committed(runIds?: readonly string[]): Promise<void>;
  /** Parked runs, loaded back when a signal or an event reaches them; absent: none are parked. */
  readonly parking?: Parking | undefined;
  /** Applies rules to a run, a fault (a throw) confined to that run (faults.ts). */
  readonly confine: Confine;
  /**
   * The active run, loaded back when parked or once its partition, just taken, has loaded
   * (Engine.load); undefined when it is not active here.
   */
  load(runId: string): Promise<RunState | undefined>;
}

/** Signals and events for the waits of the runs active here. */
export class DurableWaits {
  constructor(private readonly host: DurableWaitsHost) {}

  /**
   * SignalRun for a run active here (core/waits.ts): answers once the signal (and the wait step it
   * completed) is committed; undefined when the run is not active here.
   */
  async signal(runId: string, input: core.SignalInput): Promise<core.SignalOutcome | undefined> {
    this.host.assertRunning();
    const run = await this.host.load(runId);
    if (run === undefined) return undefined;
    this.host.assertRunning();
    const outcome = confineCall(this.host.confine, run, `run ${runId} did not take the signal`, () =>
      core.signalReceived(this.host.core, run, input, new Date()),
    );
    if ("code" in outcome) throw new ApiError(Code[outcome.code], outcome.message);
    await this.host.committed([runId]);
    return outcome;
  }

  /**
   * The waits an event about to be stored satisfies now (core/event-waits.ts matchEvent): they are
   * stored with it. A filter failing on it is logged once per wait. Throws UNAVAILABLE unless the
   * engine is running: an event is stored only with the waits of the runs it could see. Parked
   * runs it may match are loaded back first.
   */
  async matchEvent(event: core.WaitEvent): Promise<core.WaitMatch[]> {
    this.host.assertRunning();
    const held = await this.host.parking?.eventCandidates(event.key);
    this.host.assertRunning();
    let found: ReturnType<typeof core.matchEvent>;
    try {
      found = core.matchEvent(this.host.core, event);
    } finally {
      held?.release();
    }
    const { matches, failures } = found;
    for (const f of failures)
      this.host.log.warn(
        { run_id: f.runId, step_id: f.stepId, event_key: event.key, err: f.message },
        "a wait's filter failed on an event: not a match (logged once per wait)",
      );
    return matches;
  }

  /**
   * Ends the waits a stored event matched that still wait (core/event-waits.ts applyEvent), and
   * resolves once everything changed so far is committed (also what ended a wait otherwise, so
   * that the matches can be settled from the rows), with each match's outcome.
   */
  async applyEvent(
    event: core.StoredWaitEvent,
    matches: readonly Pick<core.WaitMatch, "taskRunId" | "runId">[],
  ): Promise<core.WaitApplyOutcome[]> {
    this.host.assertRunning();
    // A run parked since the event was matched is loaded back (its wait still WAITING in its rows).
    const parking = this.host.parking;
    const release = parking?.hold();
    let outcomes: core.WaitApplyOutcome[];
    try {
      const parked = [...new Set(matches.map((m) => m.runId))].filter((id) => !this.host.core.runs.has(id));
      if (parked.length > 0) await parking?.loadAll(parked);
      this.host.assertRunning();
      outcomes = applyByRun(this.host, event, matches, new Date());
    } finally {
      release?.();
    }
    await this.host.committed();
    return outcomes;
  }
}

/**
 * core/event-waits.ts applyEvent a run at a time, each run's matches applied through the host's
 * confinement: a fault in one run's rules fails that run, and the event's other runs take it all
 * the same. The outcomes are in the order of `matches`; a faulted run's match is "applied" when
 * its wait took the event before the fault, "ended" otherwise.
 */
function applyByRun(
  host: DurableWaitsHost,
  event: core.StoredWaitEvent,
  matches: readonly Pick<core.WaitMatch, "taskRunId" | "runId">[],
  now: Date,
): core.WaitApplyOutcome[] {
  const byRun = new Map<string, number[]>();
  matches.forEach((m, i) => {
    const runId = host.core.tasks.get(m.taskRunId)?.runId ?? m.runId;
    const indexes = byRun.get(runId);
    if (indexes === undefined) byRun.set(runId, [i]);
    else indexes.push(i);
  });
  const outcomes: core.WaitApplyOutcome[] = [];
  for (const [runId, indexes] of byRun) {
    const own = indexes.map((i) => matches[i] as (typeof matches)[number]);
    const applied = host.confine(host.core.runs.get(runId), () =>
      core.applyEvent(host.core, event, own, now),
    );
    indexes.forEach((i, j) => (outcomes[i] = applied?.[j] ?? tookEvent(host.core, own[j], event)));
  }
  return outcomes;
}

/** Whether the match's wait succeeded with `event` (its run's rules faulted since). */
function tookEvent(
  c: Core,
  match: Pick<core.WaitMatch, "taskRunId"> | undefined,
  event: core.StoredWaitEvent,
): core.WaitApplyOutcome {
  const task = match === undefined ? undefined : c.tasks.get(match.taskRunId);
  const output = task?.output as { eventId?: unknown } | null | undefined;
  return task?.status === "SUCCEEDED" && output?.eventId === event.eventId ? "applied" : "ended";
}
