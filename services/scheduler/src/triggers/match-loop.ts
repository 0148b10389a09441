/**
 * Starting the runs of STARTING matches, exactly once each, and the loop that finishes matches a
 * crash or an outage left STARTING. A match's run is a StartRun of the matched workflow version
 * with the event's payload as input and the idempotency key `event:<event_id>` (keys are per
 * workflow, so the pair (event, workflow) names one run): a match is first looked up by that key in
 * the key table (whatever its age), and only a match whose key names no run is started; racing
 * drivers of one match (PublishEvent and the loop) share the engine's keyed start. A match the
 * engine refuses for good (the workflow version is gone, the payload does not fit its input
 * schema) is FAILED with the reason; one it could not start for now stays STARTING for the loop.
 *
 * The loop: IDLE -> RUNNING -> STOPPING -> STOPPED. It makes a pass at once when started (the
 * recovery after a restart), then whenever woken (a publish could not start a run for now), every
 * `pollMs` while a match could not start, and every `idleMs` otherwise.
 */
import { Code, isApiError, type Logger } from "@nexusflow/common";
import type { StartRunInput } from "../model/start-run.js";
import { BatchLoop } from "../background/batch-loop.js";
import type { PassLoopState } from "../background/pass-loop.js";
import type { EventStore, PendingMatch } from "./event-store.js";
import { keyOfRun } from "../persistence/idempotency-keys.js";
import { EVENT_MATCH_KEY_PREFIX } from "../engine/keyed-starts.js";

/** What matches need of the engine. */
export interface MatchRunStarter {
  startRun(req: StartRunInput): Promise<{ runId: string; created: boolean }>;
}

/** Label of a run started by an event: the event's id. */
export const EVENT_ID_LABEL = "event-id";
/** Label of a run started by an event: the event's key. */
export const EVENT_KEY_LABEL = "event-key";

/** The StartRun idempotency key of a match (per workflow, so per (event, workflow)). */
export function matchIdempotencyKey(eventId: string): string {
  return `${EVENT_MATCH_KEY_PREFIX}${eventId}`;
}

/** Engine errors that retrying the same StartRun would meet again. */
const PERMANENT: ReadonlySet<number> = new Set([
  Code.INVALID_ARGUMENT,
  Code.NOT_FOUND,
  Code.FAILED_PRECONDITION,
  Code.ALREADY_EXISTS,
]);

/** A match once driven: its run, or why it has none (`retry`: it is still STARTING). */
export type MatchOutcome =
  | { match: PendingMatch; runId: string; created: boolean }
  | { match: PendingMatch; error: string; retry: boolean };

/** Drives STARTING matches to their runs. */
export class MatchStarter {
  constructor(
    private readonly store: EventStore,
    private readonly engine: MatchRunStarter,
    private readonly log: Logger,
  ) {}

  /** Starts (or finds) the run of each match and records the outcomes. */
  async drive(matches: readonly PendingMatch[]): Promise<MatchOutcome[]> {
    if (matches.length === 0) return [];
    const found = await this.store.runsOfKeys(
      matches.map((m) => ({ workflowName: m.workflowName, key: matchIdempotencyKey(m.eventId) })),
    );
    const outcomes = await Promise.all(
      matches.map(async (match): Promise<MatchOutcome> => {
        const key = matchIdempotencyKey(match.eventId);
        const known = found.get(keyOfRun(match.workflowName, key));
        if (known !== undefined) return { match, runId: known, created: false };
        try {
          const { runId, created } = await this.engine.startRun({
            workflowName: match.workflowName,
            workflowVersion: match.workflowVersion,
            input: match.payload,
            idempotencyKey: key,
            labels: { [EVENT_ID_LABEL]: match.eventId, [EVENT_KEY_LABEL]: match.key },
          });
          return { match, runId, created };
        } catch (e) {
          const retry = !(isApiError(e) && PERMANENT.has(e.code));
          const error = e instanceof Error ? e.message : String(e);
          this.log.warn(
            { event_id: match.eventId, workflow: match.workflowName, err: e, retry },
            "an event's match could not start its run",
          );
          return { match, error, retry };
        }
      }),
    );
    await this.store.settle(
      outcomes.flatMap(
        (o): { eventId: string; workflowName: string; runId: string | null; error: string | null }[] =>
          "runId" in o
            ? [{ eventId: o.match.eventId, workflowName: o.match.workflowName, runId: o.runId, error: null }]
            : o.retry
              ? []
              : [
                  {
                    eventId: o.match.eventId,
                    workflowName: o.match.workflowName,
                    runId: null,
                    error: o.error,
                  },
                ],
      ),
    );
    return outcomes;
  }
}

/** Options of {@link MatchLoop}. */
export interface MatchLoopOptions {
  store: EventStore;
  starter: MatchStarter;
  log: Logger;
  /** How often the loop looks again while matches remain STARTING; also the pause after a failed pass. @default 1000 */
  pollMs?: number | undefined;
  /** Most matches one pass drives. @default 500 */
  batchSize?: number | undefined;
  /**
   * How long the loop sleeps when nothing is STARTING, unless woken: the bound on how long a match
   * left STARTING without a wake (a publish that lost the database after storing its event) waits.
   * @default 30000
   */
  idleMs?: number | undefined;
  /**
   * How old a STARTING match must be before a pass drives it. In a cluster, the replica that
   * stored the event drives its matches itself, and the engines' keyed starts share no memory
   * across replicas: the coordinator's pass must not start the same match meanwhile.
   * @default 0 (a sole replica: the engine's keyed start joins racing drivers)
   */
  leftoverGraceMs?: number | undefined;
}

/** The loop's state (background/pass-loop.ts). */
export type MatchLoopState = PassLoopState;

/**
 * See the module comment; state, passCount, start, stop and wake (a publish left a match STARTING)
 * are background/batch-loop.ts's.
 */
export class MatchLoop extends BatchLoop {
  constructor(private readonly options: MatchLoopOptions) {
    super({ name: "event match loop" }, options);
  }

  /** One pass; resolves with how long to sleep before the next. */
  protected async pass(): Promise<number> {
    const grace = this.options.leftoverGraceMs ?? 0;
    const pending = await this.options.store.startingMatches(
      this.batchSize,
      grace > 0 ? new Date(Date.now() - grace) : undefined,
    );
    const outcomes = await this.options.starter.drive(pending);
    if (pending.length === this.batchSize) return 0;
    return outcomes.some((o) => "retry" in o && o.retry) ? this.pollMs : this.idleMs;
  }
}
