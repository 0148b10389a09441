/**
 * Publishing an event, whoever publishes it (EventService's PublishEvent, the Kafka event source):
 * the event is matched against the triggers of every workflow's latest version and the steps
 * waiting for an event (wait-matches.ts), stored with its matches in one statement, then the
 * waits end with it and its matches start their runs (match-loop.ts). An idempotency
 * key already stored returns the stored event instead (and drives its matches still STARTING); a
 * match that cannot start its run now is left STARTING for the match loop.
 */
import { randomUUID } from "node:crypto";
import { ApiError, Code } from "@nexusflow/common";
import type { EventRow, EventStore, MatchRow } from "./event-store.js";
import type { MatchStarter } from "./match-loop.js";
import type { TriggerIndex } from "./trigger-index.js";
import { applyEventWaits, type EventWaitDeps } from "./wait-matches.js";
import type { StoredWaitEvent } from "../core/index.js";

/** Largest event payload, as JSON. */
export const MAX_EVENT_PAYLOAD_BYTES = 256 * 1024;

/** What publishing needs. */
export interface EventPublishDeps {
  store: EventStore;
  triggers: Pick<TriggerIndex, "match">;
  starter: Pick<MatchStarter, "drive">;
  /** Makes the match loop look again (a match could not start its run now). */
  wake(): void;
  /** The steps waiting for an event (wait-matches.ts); absent: an event ends no wait. */
  waits?: EventWaitDeps | undefined;
  /**
   * Told once a new event is stored (and its waits here applied): in a cluster, the other
   * replicas match it against their runs' waits (wait-scan.ts). @default none
   */
  announce?: (() => void) | undefined;
}

/** An event to publish, already checked (key, payload size, no NUL character). */
export interface EventDraft {
  key: string;
  payload: unknown;
  /** Null: every publish stores a new event. */
  idempotencyKey: string | null;
}

/**
 * Stores `draft` with its matches, or finds the event its idempotency key already stored
 * (`created` false). Once this resolves, the event is durable, and the steps that were waiting
 * for it when it was stored (matched in its statement) have ended with it, or are left to the
 * wait match loop.
 */
export async function storeEvent(
  deps: EventPublishDeps,
  draft: EventDraft,
): Promise<{ event: EventRow; created: boolean }> {
  const { store } = deps;
  const { idempotencyKey } = draft;
  const earlier = idempotencyKey === null ? undefined : await store.byIdempotencyKey(idempotencyKey);
  if (earlier !== undefined) {
    if (deps.waits !== undefined) await applyEventWaits(deps.waits, waitEvent(earlier), undefined);
    return { event: earlier, created: false };
  }
  const matches = await deps.triggers.match({ key: draft.key, payload: draft.payload });
  // The waits it satisfies are those waiting now: a step that starts waiting later does not see it.
  const now = new Date();
  const waits = (await deps.waits?.engine.matchEvent({ key: draft.key, payload: draft.payload })) ?? [];
  const stored = await store.insert(
    { eventId: randomUUID(), key: draft.key, payload: draft.payload, idempotencyKey, now },
    matches,
    waits,
  );
  if (stored !== undefined) {
    if (deps.waits !== undefined) await applyEventWaits(deps.waits, waitEvent(stored), waits);
    deps.announce?.();
    return { event: stored, created: true };
  }
  // A concurrent publish with the same key stored it first.
  const event = idempotencyKey === null ? undefined : await store.byIdempotencyKey(idempotencyKey);
  if (event === undefined) throw new ApiError(Code.UNAVAILABLE, "the event could not be stored; retry");
  return { event, created: false };
}

/** A stored event as a wait's output carries it. */
function waitEvent(row: EventRow): StoredWaitEvent {
  return { eventId: row.eventId, key: row.key, payload: row.payload, publishTime: row.createdAt };
}

/**
 * Starts the stored event's STARTING matches; resolves with its matches as they then are. On a
 * failure the loop is woken (it starts what is left) and the error is passed on.
 */
export async function startEventMatches(deps: EventPublishDeps, event: EventRow): Promise<MatchRow[]> {
  const { store } = deps;
  try {
    const matches = await store.matches(event.eventId);
    const starting = matches.filter((m) => m.status === "STARTING");
    if (starting.length === 0) return matches;
    const outcomes = await deps.starter.drive(
      starting.map((m) => ({ ...m, key: event.key, payload: event.payload })),
    );
    if (outcomes.some((o) => "retry" in o && o.retry)) deps.wake();
    return await store.matches(event.eventId);
  } catch (e) {
    deps.wake();
    throw e;
  }
}
