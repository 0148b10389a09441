/**
 * A fault in the scheduler's rules (a bug: a throw out of the core while it applies an input to a
 * run) confined to the run it was applying, instead of escaping from a timer or an event-loop turn
 * and ending the process with every other run in it.
 */
import { ApiError, boundedText, Code, type Logger } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import * as core from "../core/index.js";
import type { Core } from "../core/index.js";
import { TERMINAL_RUN_STATUSES, type ErrorInfo, type RunState } from "../model/run-state.js";

/** What {@link faultConfinement} needs of its engine. */
export interface FaultHost {
  readonly log: Logger;
  core(): Core;
  /** Takes the run out of memory and ends it in storage with `error` (the writer's refused runs' way). */
  drop(runId: string, cause: Error, error: ErrorInfo): void;
}

/**
 * Applies rules to a run by `fn`, returning what `fn` returns, or undefined after a fault. The run
 * may be given as a function, asked once a fault is caught: a run that `fn` itself puts in memory
 * (a new run's start) is known only then.
 */
export type Confine = <T>(
  run: RunState | undefined | (() => RunState | undefined),
  fn: () => T,
) => T | undefined;

/** A fault of a run's rules reached from another run's, taken up by {@link faultSoon}. */
class ReachedFault extends Error {
  constructor(readonly fault: unknown) {
    super(fault instanceof Error ? fault.message : String(fault));
  }
}

/**
 * A throw out of `fn` is logged at error level with the run's id, and the run ends FAILED with
 * SCHEDULER_ERROR (core.failBrokenRun: its tasks cancelled, leased ones told to stop, its event
 * written); if even that throws, the run leaves memory and is ended so in storage. The scheduler's
 * other runs go on. Without a run (a rate limit's timer) the fault is only logged.
 */
export function faultConfinement(host: FaultHost): Confine {
  return <T>(which: RunState | undefined | (() => RunState | undefined), fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (thrown) {
      const run = typeof which === "function" ? which() : which;
      // A fault reached from another run's rules comes back here logged already (faultSoon).
      const reached = thrown instanceof ReachedFault;
      const e = reached ? thrown.fault : thrown;
      if (!reached)
        host.log.error(
          { err: e, run_id: run?.id },
          "a fault in the scheduler's rules; the run fails SCHEDULER_ERROR",
        );
      if (run === undefined) return undefined;
      const cause = e instanceof Error ? e.message : String(e);
      const message = `the scheduler could not advance the run: ${boundedText(cause, 1024)}`;
      try {
        core.failBrokenRun(host.core(), run, message, new Date());
      } catch (again) {
        host.log.error({ err: again, run_id: run.id }, "the run could not be failed; it leaves memory");
        const error: ErrorInfo = { type: TaskErrorType.SCHEDULER_ERROR, message, retryable: false };
        try {
          host.drop(run.id, again instanceof Error ? again : new Error(String(again)), error);
        } catch (third) {
          // Dropping runs the parent's rules (a child's end): a fault there too is logged, never
          // let out of here.
          host.log.error({ err: third, run_id: run.id }, "the run could not be dropped either");
        }
      }
      return undefined;
    }
  };
}

/**
 * An API call's rules applied to a run through `confine` (StartRun's, CancelRun's): a fault fails
 * the run SCHEDULER_ERROR as anywhere else, and the call is answered INTERNAL naming it (`what`
 * did not happen), not as if it had gone through. `run` as for {@link Confine}.
 */
export function confineCall<T>(
  confine: Confine,
  run: RunState | undefined | (() => RunState | undefined),
  what: string,
  fn: () => T,
): T {
  const caught: { fault?: { error: unknown; run: RunState | undefined } } = {};
  const out = confine(
    () => caught.fault?.run,
    () => {
      try {
        return fn();
      } catch (error) {
        caught.fault = { error, run: typeof run === "function" ? run() : run };
        throw error;
      }
    },
  );
  const fault = caught.fault;
  if (fault === undefined) return out as T;
  const cause = boundedText(fault.error instanceof Error ? fault.error.message : String(fault.error), 1024);
  const r = fault.run;
  const state =
    r === undefined
      ? ""
      : `; run ${r.id} ${TERMINAL_RUN_STATUSES.has(r.status) ? "ended" : "is"} ${r.status}`;
  throw new ApiError(
    Code.INTERNAL,
    `${what}: ${TaskErrorType.SCHEDULER_ERROR}: a fault in the scheduler's rules: ${cause}${state}`,
  );
}

/**
 * A fault in `run`'s rules where another run's rules reached them (core Effects.fault, context.ts
 * crossInto): logged now at error level with `run`'s id, and `run` fails SCHEDULER_ERROR on a
 * later turn through `confine`, as a fault of its own rules does: not in the middle of the rules
 * that reached it, which go on. A run that ended or left memory by then is left as it is.
 */
export function faultSoon(log: Logger, core: Core, confine: Confine, run: RunState, error: unknown): void {
  log.error(
    { err: error, run_id: run.id },
    "a fault in a run's rules, reached from another run's; the run fails SCHEDULER_ERROR",
  );
  setImmediate(() => {
    if (core.runs.get(run.id) !== run) return;
    confine(run, () => {
      throw new ReachedFault(error);
    });
  });
}
