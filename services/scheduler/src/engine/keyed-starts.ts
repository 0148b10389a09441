/**
 * StartRun calls with an idempotency key: one job of the engine, kept out of it. A key (scoped to
 * its workflow name, valid for the retention) that names a run answers with that run when the
 * request is the same (input and labels, see idempotency.ts), ALREADY_EXISTS when it is not; racing
 * calls with one key wait for the first. Keys of active runs are answered from memory; the others
 * come from the key table (IdempotencyKeyStore, one query per event-loop turn).
 */
import { ApiError } from "@nexusflow/common";
import type { KeyRecord } from "../persistence/idempotency-keys.js";
import { idempotencyConflict, idempotencyScope, requestHash } from "../model/idempotency.js";

/** Prefix of the keys of runs started by events (triggers/match-loop.ts: `event:<event id>`). */
export const EVENT_MATCH_KEY_PREFIX = "event:";
/** Prefix of the keys of runs started by schedules (schedules/fires.ts: `schedule:<uid>:<fire key>`). */
export const SCHEDULE_FIRE_KEY_PREFIX = "schedule:";
/** Key prefixes the scheduler starts its own runs with, which callers may not send. */
export const RESERVED_KEY_PREFIXES: readonly string[] = [EVENT_MATCH_KEY_PREFIX, SCHEDULE_FIRE_KEY_PREFIX];

/**
 * Refuses a caller's idempotency key (StartRun, StartRuns, RerunRun) that starts with a prefix the
 * scheduler keys its own runs with: such a key, sent first, would name the run an event's match
 * or a schedule's fire then takes as its own (they look their key up before starting anything),
 * so that event or fire would start no run of its own. INVALID_ARGUMENT naming `field`.
 */
export function refuseReservedKey(key: string, field: string): void {
  const prefix = RESERVED_KEY_PREFIXES.find((p) => key.startsWith(p));
  if (prefix !== undefined)
    throw ApiError.invalid(
      field,
      `keys starting with ${JSON.stringify(prefix)} are the scheduler's own (runs started by events and schedules); use another key`,
    );
}

/** Where stored keys are looked up (EngineStore.lookupKey). */
export interface KeyLookup {
  lookup(workflowName: string, key: string, notBefore: Date): Promise<KeyRecord | undefined>;
}

/** What a keyed start needs of the request. */
export interface KeyedRequest {
  workflowName: string;
  idempotencyKey: string;
  input?: unknown;
  labels: Readonly<Record<string, string>>;
}

/** What it needs of an active run to index it. */
export interface KeyedRun {
  id: string;
  workflow: { name: string };
  idempotencyKey: string | null;
  requestHash: string | null;
  createdAt: Date;
}

interface Named {
  runId: string;
  requestHash: string;
}

/** The keyed StartRun calls of one engine (see the module comment). */
export class KeyedStarts {
  /** Keys of active runs by idempotencyScope: a repeated call for a run in progress needs no round trip. */
  private readonly active = new Map<string, Named & { createdAt: number }>();
  /** Calls in progress by idempotencyScope: a racing call with the same key waits for it. */
  private readonly pending = new Map<string, Promise<Named & { created: boolean }>>();

  constructor(
    private readonly store: KeyLookup,
    /** How long a key names its run. */
    private readonly retentionMs: number,
    /** Resolves once what was marked for the run is committed. @default at once */
    private readonly committed: (runId: string) => Promise<void> = () => Promise.resolve(),
  ) {}

  /**
   * Answers a keyed StartRun: the run its key names, ALREADY_EXISTS for another request, or the run
   * `start` starts (given the request's hash, to store with the key).
   */
  async start(
    req: KeyedRequest,
    start: (hash: string) => Promise<{ runId: string; created: boolean }>,
  ): Promise<{ runId: string; created: boolean }> {
    const scope = idempotencyScope(req.workflowName, req.idempotencyKey);
    const hash = requestHash(req.input, req.labels);
    for (;;) {
      const pending = this.pending.get(scope);
      if (pending === undefined) break;
      // A call with this key is in progress: its run is ours too, if it starts one.
      const first = await pending.catch(() => undefined);
      if (first !== undefined) return this.answer(req, first, hash);
      // It failed (its input was invalid, the database was down): try ours.
    }
    // Gone from `pending` before anyone waiting on it resumes.
    const p: Promise<Named & { created: boolean }> = this.startOnce(req, scope, hash, start).finally(() => {
      if (this.pending.get(scope) === p) this.pending.delete(scope);
    });
    this.pending.set(scope, p);
    const r = await p;
    return { runId: r.runId, created: r.created };
  }

  private async startOnce(
    req: KeyedRequest,
    scope: string,
    hash: string,
    start: (hash: string) => Promise<{ runId: string; created: boolean }>,
  ): Promise<Named & { created: boolean }> {
    const notBefore = Date.now() - this.retentionMs;
    const active = this.active.get(scope);
    if (active !== undefined && active.createdAt >= notBefore) {
      const answer = this.answer(req, active, hash);
      // Its start may not be committed yet (that call gave up waiting for the database and failed,
      // its run still in memory): answered once it is, so the run named can be read.
      await this.committed(active.runId);
      return { ...answer, requestHash: active.requestHash };
    }
    const found = await this.store.lookup(req.workflowName, req.idempotencyKey, new Date(notBefore));
    if (found !== undefined) return { ...this.answer(req, found, hash), requestHash: found.requestHash };
    return { ...(await start(hash)), requestHash: hash };
  }

  /** The answer for a key that names `found`: that run, or ALREADY_EXISTS for another request. */
  private answer(req: KeyedRequest, found: Named, hash: string): { runId: string; created: boolean } {
    if (found.requestHash !== hash)
      throw idempotencyConflict(req.workflowName, req.idempotencyKey, found.runId);
    return { runId: found.runId, created: false };
  }

  /** Indexes an active run by its key (when the key still names it). */
  remember(run: KeyedRun): void {
    if (run.idempotencyKey === null || run.requestHash === null) return;
    this.active.set(idempotencyScope(run.workflow.name, run.idempotencyKey), {
      runId: run.id,
      requestHash: run.requestHash,
      createdAt: run.createdAt.getTime(),
    });
  }

  /** Forgets a run's key, unless the key names a newer run by now. */
  forget(run: KeyedRun): void {
    if (run.idempotencyKey === null) return;
    const scope = idempotencyScope(run.workflow.name, run.idempotencyKey);
    if (this.active.get(scope)?.runId === run.id) this.active.delete(scope);
  }
}
