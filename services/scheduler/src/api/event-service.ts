/**
 * EventService over gRPC: validates a published event, matches it against the triggers of the
 * latest version of every workflow, stores it with its matches in one statement, then starts the
 * matches' runs (triggers/match-loop.ts); a match it could not start for now is left to the loop.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ApiError, jsonToValue, nulCharacterPath, unary, valueToJsonChecked } from "@nexusflow/common";
import {
  EventMatchSchema,
  EventMatchStatus,
  EventWaitMatchSchema,
  EventWaitMatchStatus,
  GetEventResponseSchema,
  ListEventsResponseSchema,
  PublishEventResponseSchema,
  PublishedEventSchema,
  type GetEventRequest,
  type ListEventsRequest,
  type PublishEventRequest,
  type PublishedEvent,
} from "@nexusflow/gen";
import { eventKeyProblem, MAX_EVENT_KEY_LENGTH } from "../dag/index.js";
import { type Listing, decodeToken, encodeToken, pageSizeOf } from "../persistence/page-token.js";
import { EVENT_PAYLOAD_DEPTH, refuseTooDeep } from "../model/answer-depth.js";
import type { EventRow, MatchRow } from "../triggers/event-store.js";
import type { WaitMatchRow, WaitMatchStatus } from "../triggers/wait-matches.js";
import {
  MAX_EVENT_PAYLOAD_BYTES,
  startEventMatches,
  storeEvent,
  type EventPublishDeps,
} from "../triggers/publish.js";

export { MAX_EVENT_PAYLOAD_BYTES } from "../triggers/publish.js";
/** Longest idempotency key of a publish. */
export const MAX_EVENT_IDEMPOTENCY_KEY_LENGTH = 200;
/** Most payload bytes one ListEvents page carries (a page ends early rather than exceed it). */
export const LIST_EVENTS_PAGE_BYTES = 3 * 1024 * 1024;

/** What the service needs (what publishing needs: triggers/publish.ts). */
export type EventServiceDeps = EventPublishDeps;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const STATUS: Record<MatchRow["status"], EventMatchStatus> = {
  STARTING: EventMatchStatus.PENDING,
  STARTED: EventMatchStatus.STARTED,
  FAILED: EventMatchStatus.FAILED,
};

const WAIT_STATUS: Record<WaitMatchStatus, EventWaitMatchStatus> = {
  PENDING: EventWaitMatchStatus.PENDING,
  SATISFIED: EventWaitMatchStatus.SATISFIED,
  WAIT_ENDED: EventWaitMatchStatus.WAIT_ENDED,
};

function eventView(
  row: EventRow,
  matches: readonly MatchRow[],
  waits: readonly WaitMatchRow[] = [],
): PublishedEvent {
  return create(PublishedEventSchema, {
    eventId: row.eventId,
    key: row.key,
    payload: jsonToValue(row.payload),
    idempotencyKey: row.idempotencyKey ?? "",
    publishTime: timestampFromDate(row.createdAt),
    matches: matches.map((m) =>
      create(EventMatchSchema, {
        workflowName: m.workflowName,
        workflowVersion: m.workflowVersion,
        triggerIndex: m.triggerIndex,
        status: STATUS[m.status],
        runId: m.runId ?? "",
        error: m.error ?? "",
      }),
    ),
    waits: waits.map((w) =>
      create(EventWaitMatchSchema, { runId: w.runId, stepId: w.stepId, status: WAIT_STATUS[w.status] }),
    ),
  });
}

/** The event's wait matches (none when no wait is served). */
function waitsOf(deps: EventServiceDeps, eventId: string): Promise<WaitMatchRow[]> {
  return deps.waits?.store.ofEvent(eventId) ?? Promise.resolve([]);
}

function refuseNul(value: unknown, field: string): void {
  const at = nulCharacterPath(value, field);
  if (at !== undefined)
    throw ApiError.invalid(at, "contains a NUL character (U+0000), which cannot be stored");
}

/** Largest value of a PostgreSQL bigint (an event's `seq`). */
const MAX_BIGINT = 9_223_372_036_854_775_807n;

/**
 * Whether `text` is an event's `seq` as a page token carries it: decimal digits of a bigint (a
 * larger number would reach PostgreSQL and fail the call with INTERNAL, not INVALID_ARGUMENT).
 */
function isEventSeq(text: string): boolean {
  return /^[0-9]{1,19}$/.test(text) && BigInt(text) <= MAX_BIGINT;
}

/** The EventService implementation for grpc-js. */
export function eventService(deps: EventServiceDeps): grpc.UntypedServiceImplementation {
  const { store } = deps;

  return {
    publishEvent: unary(async (req: PublishEventRequest) => {
      const keyProblem = eventKeyProblem(req.key);
      if (keyProblem !== undefined) throw ApiError.invalid("key", keyProblem);
      if (req.idempotencyKey.length > MAX_EVENT_IDEMPOTENCY_KEY_LENGTH)
        throw ApiError.invalid("idempotency_key", `at most ${MAX_EVENT_IDEMPOTENCY_KEY_LENGTH} characters`);
      refuseNul(req.idempotencyKey, "idempotency_key");
      const payload = valueToJsonChecked(req.payload, "payload");
      refuseNul(payload, "payload");
      refuseTooDeep(payload, EVENT_PAYLOAD_DEPTH, "payload");
      const bytes = Buffer.byteLength(JSON.stringify(payload));
      if (bytes > MAX_EVENT_PAYLOAD_BYTES)
        throw ApiError.invalid(
          "payload",
          `is ${bytes} bytes as JSON; an event's payload is at most ${MAX_EVENT_PAYLOAD_BYTES}`,
        );
      const idempotencyKey = req.idempotencyKey === "" ? null : req.idempotencyKey;
      // After a failure once stored, the loop starts what is left; the caller sees the error
      // (UNAVAILABLE from the database) and publishing again with its idempotency key is safe.
      const { event, created } = await storeEvent(deps, { key: req.key, payload, idempotencyKey });
      return create(PublishEventResponseSchema, {
        event: eventView(event, await startEventMatches(deps, event), await waitsOf(deps, event.eventId)),
        created,
      });
    }),

    getEvent: unary(async (req: GetEventRequest) => {
      if (!UUID.test(req.eventId))
        throw ApiError.invalid(
          "event_id",
          req.eventId === ""
            ? "an event id is required"
            : `not an event id: ${JSON.stringify(req.eventId.slice(0, 100))}`,
        );
      const event = await store.get(req.eventId);
      if (event === undefined) throw ApiError.notFound(`event ${req.eventId} does not exist`);
      return create(GetEventResponseSchema, {
        event: eventView(event, await store.matches(event.eventId), await waitsOf(deps, event.eventId)),
      });
    }),

    listEvents: unary(async (req: ListEventsRequest) => {
      if (req.keyPrefix.length > MAX_EVENT_KEY_LENGTH)
        throw ApiError.invalid("key_prefix", `at most ${MAX_EVENT_KEY_LENGTH} characters`);
      refuseNul(req.keyPrefix, "key_prefix");
      const size = pageSizeOf(req.pageSize);
      const listing: Listing = { filters: [req.keyPrefix], names: "key_prefix" };
      const after =
        req.pageToken === ""
          ? undefined
          : decodeToken(
              req.pageToken,
              (v): v is { seq: string } =>
                typeof v === "object" &&
                v !== null &&
                typeof (v as { seq?: unknown }).seq === "string" &&
                isEventSeq((v as { seq: string }).seq),
              listing,
            );
      const rows = await store.list({ keyPrefix: req.keyPrefix, beforeSeq: after?.seq, limit: size + 1 });
      const page: EventRow[] = [];
      let total = 0;
      for (const row of rows.slice(0, size)) {
        // At least one event per page, however large.
        if (page.length > 0 && total + row.bytes > LIST_EVENTS_PAGE_BYTES) break;
        total += row.bytes;
        page.push(row);
      }
      const last = page.at(-1);
      const more = rows.length > page.length;
      return create(ListEventsResponseSchema, {
        events: page.map((row) => eventView(row, [])),
        nextPageToken: more && last !== undefined ? encodeToken({ seq: last.seq }, listing) : "",
      });
    }),
  };
}
