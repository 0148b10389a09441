/**
 * A run taken out of memory because it cannot go on: PostgreSQL refused its changes for their data
 * (the writer dropped them and their events; retrying would fail forever), or the scheduler's rules
 * faulted and even failing the run threw (faults.ts). Executors holding its leases are told to stop
 * (their reports no longer match a task), and a run that was stored before is ended FAILED in the
 * database (STORAGE_REFUSED, or the fault's SCHEDULER_ERROR), with its event. A new run was never
 * stored: its StartRun call, which holds the run, sees the error and answers it.
 */
import type { Logger } from "@nexusflow/common";
import * as core from "../core/index.js";
import type { Core } from "../core/index.js";
import type { EngineStore } from "../persistence/engine-store.js";
import { tasksOfRun, type ErrorInfo, type RunState } from "../model/run-state.js";
import type { KeyedStarts } from "./keyed-starts.js";
import type { Watchers } from "./watchers.js";

/** What {@link dropRun} needs of the engine. */
export interface DropHost {
  readonly core: Core;
  readonly store: EngineStore;
  readonly log: Logger;
  readonly keyed: KeyedStarts;
  readonly watchers: Watchers;
  /** Runs waiting for their next evaluation (the engine's advanceSoon). */
  readonly dirtyRuns: Set<RunState>;
}

const ignore = (): void => undefined;

/** Drops run `runId` (see the module comment); `error` is the fault's, undefined for a refusal. */
export function dropRun(host: DropHost, runId: string, cause: Error, error?: ErrorInfo): void {
  const run = core.dropRefusedRun(host.core, runId, cause.message, error);
  if (run === undefined) return;
  // What is marked for it and not committed goes (a failure cut short: its own runCompleted,
  // half a step's rows), never committed after or beside the end below (two runCompleted, or a
  // gap in its sequence).
  host.store.retire?.([run], [...tasksOfRun(run)]);
  host.dirtyRuns.delete(run);
  host.keyed.forget(run);
  // A child's parent step fails with it (CHILD_FAILED, the run's error in details).
  if (run.parent !== null) core.childEnded(host.core, run, new Date());
  const what = error === undefined ? "whose changes PostgreSQL refused" : "the scheduler could not advance";
  const end = (): void => {
    if (!host.store.isStored(run)) return;
    host.store.failRefusedRun(runId, run.error as ErrorInfo).then(
      (outcome) => {
        host.log.error({ run_id: runId, outcome }, `ended a run ${what}`);
        host.watchers.notify(runId);
        host.watchers.eventsCommitted();
      },
      (e: unknown) => host.log.error({ err: e, run_id: runId }, `could not end a run ${what}`),
    );
  };
  // A run the rules could not advance may have a commit of its own in flight: it ends after it.
  if (error === undefined) end();
  else void host.store.flush().catch(ignore).then(end);
}
