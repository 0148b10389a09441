/**
 * Events and their matches in PostgreSQL (tables `events`, `event_matches`). An event is stored
 * with its matches in one statement, so a crash leaves either nothing or the event with every
 * match it made; a match is STARTING until its run is known, then STARTED with it (or FAILED with
 * why).
 */
import type pg from "pg";
import type { EventMatchDraft } from "./trigger-index.js";
import { runsOfKeys } from "../persistence/idempotency-keys.js";
import type { WaitMatch } from "../core/index.js";

/** A stored event. */
export interface EventRow {
  eventId: string;
  seq: string;
  key: string;
  payload: unknown;
  idempotencyKey: string | null;
  createdAt: Date;
}

/** A workflow an event matched. */
export interface MatchRow {
  eventId: string;
  workflowName: string;
  workflowVersion: number;
  triggerIndex: number;
  status: "STARTING" | "STARTED" | "FAILED";
  runId: string | null;
  error: string | null;
}

/** A STARTING match with what starting its run needs. */
export interface PendingMatch extends MatchRow {
  key: string;
  payload: unknown;
}

interface EventDbRow {
  event_id: string;
  seq: string;
  key: string;
  payload: unknown;
  idempotency_key: string | null;
  created_at: Date;
}

interface MatchDbRow {
  event_id: string;
  workflow_name: string;
  workflow_version: number;
  trigger_index: number;
  status: MatchRow["status"];
  run_id: string | null;
  error: string | null;
}

function toEvent(r: EventDbRow): EventRow {
  return {
    eventId: r.event_id,
    seq: r.seq,
    key: r.key,
    payload: r.payload,
    idempotencyKey: r.idempotency_key,
    createdAt: r.created_at,
  };
}

function toMatch(r: MatchDbRow): MatchRow {
  return {
    eventId: r.event_id,
    workflowName: r.workflow_name,
    workflowVersion: r.workflow_version,
    triggerIndex: r.trigger_index,
    status: r.status,
    runId: r.run_id,
    error: r.error,
  };
}

/** LIKE pattern of a literal prefix. */
function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/** Events and matches in PostgreSQL. */
export class EventStore {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Stores an event, its matches and the waiting steps it matched (PENDING, wait-matches.ts) in
   * one statement. With an idempotency key already stored, stores nothing and returns undefined
   * (the caller reads the stored event).
   */
  async insert(
    event: { eventId: string; key: string; payload: unknown; idempotencyKey: string | null; now: Date },
    matches: readonly EventMatchDraft[],
    waits: readonly WaitMatch[] = [],
  ): Promise<EventRow | undefined> {
    const { rows } = await this.pool.query<EventDbRow>(
      `WITH ev AS (
         INSERT INTO events (event_id, key, payload, idempotency_key, created_at)
         VALUES ($1, $2, $3::jsonb, $4, $5)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING event_id, seq::text AS seq, key, payload, idempotency_key, created_at),
       m AS (
         INSERT INTO event_matches (event_id, workflow_name, workflow_version, trigger_index, status, error, created_at)
         SELECT ev.event_id, x.name, x.version, x.trigger, x.status, x.error, $5
         FROM ev, unnest($6::text[], $7::int[], $8::int[], $9::text[], $10::text[])
           AS x(name, version, trigger, status, error)
         RETURNING 1),
       w AS (
         INSERT INTO event_wait_matches (event_id, task_run_id, run_id, step_id, status, created_at)
         SELECT ev.event_id, x.task_run_id, x.run_id, x.step_id, 'PENDING', $5
         FROM ev, unnest($11::uuid[], $12::uuid[], $13::text[]) AS x(task_run_id, run_id, step_id)
         RETURNING 1)
       SELECT ev.*, (SELECT count(*) FROM m) AS matched, (SELECT count(*) FROM w) AS waits FROM ev`,
      [
        event.eventId,
        event.key,
        JSON.stringify(event.payload),
        event.idempotencyKey,
        event.now,
        matches.map((m) => m.workflowName),
        matches.map((m) => m.workflowVersion),
        matches.map((m) => m.triggerIndex),
        matches.map((m) => m.status),
        matches.map((m) => m.error),
        waits.map((w) => w.taskRunId),
        waits.map((w) => w.runId),
        waits.map((w) => w.stepId),
      ],
    );
    const row = rows[0];
    return row === undefined ? undefined : toEvent(row);
  }

  /** The event stored under an idempotency key. */
  async byIdempotencyKey(key: string): Promise<EventRow | undefined> {
    const { rows } = await this.pool.query<EventDbRow>(
      `SELECT event_id, seq::text AS seq, key, payload, idempotency_key, created_at FROM events
       WHERE idempotency_key = $1`,
      [key],
    );
    return rows[0] === undefined ? undefined : toEvent(rows[0]);
  }

  /** An event by id. */
  async get(eventId: string): Promise<EventRow | undefined> {
    const { rows } = await this.pool.query<EventDbRow>(
      `SELECT event_id, seq::text AS seq, key, payload, idempotency_key, created_at FROM events
       WHERE event_id = $1`,
      [eventId],
    );
    return rows[0] === undefined ? undefined : toEvent(rows[0]);
  }

  /** An event's matches, by workflow name. */
  async matches(eventId: string): Promise<MatchRow[]> {
    const { rows } = await this.pool.query<MatchDbRow>(
      `SELECT * FROM event_matches WHERE event_id = $1 ORDER BY workflow_name`,
      [eventId],
    );
    return rows.map(toMatch);
  }

  /**
   * Events newest first, those with a key starting with `keyPrefix`, before `beforeSeq` when
   * given; each with its payload's size as JSON text (for the caller's page bound).
   */
  async list(options: {
    keyPrefix: string;
    beforeSeq: string | undefined;
    limit: number;
  }): Promise<(EventRow & { bytes: number })[]> {
    const { rows } = await this.pool.query<EventDbRow & { bytes: number }>(
      `SELECT event_id, seq::text AS seq, key, payload, idempotency_key, created_at,
         octet_length(payload::text) AS bytes
       FROM events
       WHERE ($1 = '' OR key LIKE $2) AND ($3::bigint IS NULL OR seq < $3::bigint)
       ORDER BY seq DESC LIMIT $4`,
      [options.keyPrefix, likePrefix(options.keyPrefix), options.beforeSeq ?? null, options.limit],
    );
    return rows.map((r) => ({ ...toEvent(r), bytes: Number(r.bytes) }));
  }

  /** STARTING matches of every event, oldest first, at most `limit`. */
  async startingMatches(limit: number, before?: Date): Promise<PendingMatch[]> {
    const { rows } = await this.pool.query<MatchDbRow & { key: string; payload: unknown }>(
      `SELECT m.*, e.key, e.payload FROM event_matches m JOIN events e ON e.event_id = m.event_id
       WHERE m.status = 'STARTING' AND ($2::timestamptz IS NULL OR m.created_at <= $2)
       ORDER BY m.created_at LIMIT $1`,
      [limit, before ?? null],
    );
    return rows.map((r) => ({ ...toMatch(r), key: r.key, payload: r.payload }));
  }

  /** Records the outcome of matches: STARTED with their run, or FAILED with why. */
  async settle(
    outcomes: readonly {
      eventId: string;
      workflowName: string;
      runId: string | null;
      error: string | null;
    }[],
  ): Promise<void> {
    if (outcomes.length === 0) return;
    // Only a row still STARTING changes: racing drivers of one match write the same run.
    await this.pool.query(
      `UPDATE event_matches m SET status = CASE WHEN x.run_id IS NULL THEN 'FAILED' ELSE 'STARTED' END,
         run_id = x.run_id, error = x.error
       FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[]) AS x(event_id, workflow_name, run_id, error)
       WHERE m.event_id = x.event_id AND m.workflow_name = x.workflow_name AND m.status = 'STARTING'`,
      [
        outcomes.map((o) => o.eventId),
        outcomes.map((o) => o.workflowName),
        outcomes.map((o) => o.runId),
        outcomes.map((o) => o.error),
      ],
    );
  }

  /** The runs that idempotency keys name, whatever their age (persistence/idempotency-keys.ts). */
  runsOfKeys(keys: readonly { workflowName: string; key: string }[]): Promise<Map<string, string>> {
    return runsOfKeys(this.pool, keys);
  }
}
