/**
 * Starting the runs of STARTING fires, exactly once each. A fire's run is a StartRun with the
 * idempotency key `schedule:<uid>:<fire key>`: a fire left STARTING by a crash is first looked up
 * by that key in the key table (whatever its age), and only a fire whose key names no run is
 * started; racing drivers of one fire (the loop and a TriggerSchedule call) share the engine's
 * keyed start. A fire the engine refuses for good (the workflow is gone, the input no longer fits
 * it) is FAILED with the reason; one it could not start for now (the database is unavailable)
 * stays STARTING for the next pass.
 */
import { Code, isApiError, type Logger } from "@nexusflow/common";
import type { StartRunInput } from "../model/start-run.js";
import { FIRE_LABEL, SCHEDULE_LABEL } from "../dag/schedule-spec.js";
import type { FireRow, FireStore, PendingFire } from "./fire-store.js";
import { keyOfRun } from "../persistence/idempotency-keys.js";

/** What fires need of the engine. */
export interface RunStarter {
  startRun(req: StartRunInput): Promise<{ runId: string; created: boolean }>;
  cancelRun(runId: string, reason: string, compensate: boolean): Promise<void>;
  isActive(runId: string): boolean;
  /** Loads a parked run back into memory (engine/parking.ts); absent: no run is parked. */
  load?(runId: string): Promise<unknown>;
}

/** The StartRun idempotency key of a fire. */
export function fireIdempotencyKey(uid: string, fireKey: string): string {
  return `schedule:${uid}:${fireKey}`;
}

/** Engine errors that retrying the same StartRun would meet again. */
const PERMANENT: ReadonlySet<number> = new Set([
  Code.INVALID_ARGUMENT,
  Code.NOT_FOUND,
  Code.FAILED_PRECONDITION,
  Code.ALREADY_EXISTS,
]);

/** A fire once driven: its run, or why it has none (`retry`: it is still STARTING). */
export type FireOutcome =
  | { fire: PendingFire; runId: string; created: boolean }
  | { fire: PendingFire; error: string; retry: boolean; cause?: unknown };

/** Drives STARTING fires to their runs. */
export class FireStarter {
  /** A fire could not start for now and none has started since (its warning was logged). */
  private retrying = false;

  constructor(
    private readonly store: FireStore,
    private readonly engine: RunStarter,
    private readonly log: Logger,
  ) {}

  /** Starts (or finds) the run of each fire and records the outcomes. */
  async drive(fires: readonly PendingFire[]): Promise<FireOutcome[]> {
    if (fires.length === 0) return [];
    const keyOf = (f: PendingFire): string => fireIdempotencyKey(f.scheduleUid, f.fireKey);
    const found = await this.store.runsOfKeys(
      fires.map((f) => ({ workflowName: f.spec.workflowName, key: keyOf(f) })),
    );
    const outcomes = await Promise.all(
      fires.map(async (fire): Promise<FireOutcome> => {
        if (fire.status === "STARTED" && fire.runId !== null)
          return { fire, runId: fire.runId, created: false };
        if (fire.status === "FAILED") return { fire, error: fire.error ?? "failed", retry: false };
        const known = found.get(keyOfRun(fire.spec.workflowName, keyOf(fire)));
        if (known !== undefined) return { fire, runId: known, created: false };
        try {
          const { runId, created } = await this.engine.startRun({
            workflowName: fire.spec.workflowName,
            workflowVersion: fire.spec.workflowVersion,
            input: fire.spec.input,
            idempotencyKey: keyOf(fire),
            labels: { ...fire.spec.labels, [SCHEDULE_LABEL]: fire.scheduleId, [FIRE_LABEL]: fireLabel(fire) },
          });
          return { fire, runId, created };
        } catch (e) {
          const retry = !(isApiError(e) && PERMANENT.has(e.code));
          const error = e instanceof Error ? e.message : String(e);
          const fields = { schedule_id: fire.scheduleId, fire: fire.fireKey, err: e, retry };
          // A refusal for good is the fire's end: always said. One for now (the engine or its
          // database away) is tried again on every pass: said once until a fire starts again.
          if (!retry) this.log.warn(fields, "a schedule's fire could not start its run");
          else if (!this.retrying) {
            this.retrying = true;
            this.log.warn(
              fields,
              "a schedule's fire could not start its run; retrying (said once until one starts)",
            );
          } else this.log.debug(fields, "a schedule's fire could not start its run; retrying");
          return { fire, error, retry, cause: e };
        }
      }),
    );
    if (this.retrying && outcomes.some((o) => "runId" in o)) {
      this.retrying = false;
      this.log.info("schedules' fires start runs again");
    }
    await this.store.settle(
      outcomes.flatMap((o): { uid: string; fireKey: string; runId: string | null; error: string | null }[] =>
        "runId" in o
          ? [{ uid: o.fire.scheduleUid, fireKey: o.fire.fireKey, runId: o.runId, error: null }]
          : o.retry
            ? []
            : [{ uid: o.fire.scheduleUid, fireKey: o.fire.fireKey, runId: null, error: o.error }],
      ),
    );
    return outcomes;
  }
}

/** A fire's label value: its key, which fits a label (at most 255 characters). */
function fireLabel(fire: FireRow): string {
  return fire.fireKey.slice(0, 255);
}
