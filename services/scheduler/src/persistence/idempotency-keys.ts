/**
 * The read side of StartRun's idempotency keys (table `idempotency_keys`, one row per workflow
 * name and key, written by the batch writer in the same commit as the run it names). Lookups made
 * in the same event-loop turn share one query, so a burst of keyed StartRun calls costs one round
 * trip, not one each. Keys older than the retention are treated as absent here; their rows go when
 * their run is purged (see retention.ts), or are taken over by the next run started with the key.
 */
import type pg from "pg";
import { requestHash } from "../model/idempotency.js";

/** A stored key. */
export interface KeyRecord {
  runId: string;
  /** Hash of the run's input and labels (requestHash). */
  requestHash: string;
  createdAt: Date;
}

interface Lookup {
  workflowName: string;
  key: string;
  notBefore: number;
  resolve: (r: KeyRecord | undefined) => void;
  reject: (e: unknown) => void;
}

const LOOKUP_SQL = `SELECT k.workflow_name, k.idempotency_key, k.run_id, k.request_hash, k.created_at
  FROM unnest($1::text[], $2::text[]) AS x(workflow_name, idempotency_key)
  JOIN idempotency_keys k ON k.workflow_name = x.workflow_name AND k.idempotency_key = x.idempotency_key`;

// Keys carried over from before the key table (migration IdempotencyKeys) have no hash yet: it is
// computed from their run, as the engine computes it for a new one.
const LEGACY_SQL = `SELECT id, input, labels FROM workflow_runs WHERE id = ANY($1::uuid[])`;

/** Batched lookups of idempotency keys. */
export class IdempotencyKeyStore {
  private pending: Lookup[] = [];

  constructor(private readonly pool: pg.Pool) {}

  /** The key's record unless it is missing or older than `notBefore` (expired). */
  lookup(workflowName: string, key: string, notBefore: Date): Promise<KeyRecord | undefined> {
    return new Promise((resolve, reject) => {
      if (this.pending.length === 0) setImmediate(() => void this.run());
      this.pending.push({ workflowName, key, notBefore: notBefore.getTime(), resolve, reject });
    });
  }

  private async run(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    try {
      const found = await this.query(batch);
      for (const l of batch) {
        const r = found.get(`${l.workflowName}\u0000${l.key}`);
        l.resolve(r !== undefined && r.createdAt.getTime() >= l.notBefore ? r : undefined);
      }
    } catch (e) {
      for (const l of batch) l.reject(e);
    }
  }

  private async query(
    batch: readonly { workflowName: string; key: string }[],
  ): Promise<Map<string, KeyRecord>> {
    const { rows } = await this.pool.query<{
      workflow_name: string;
      idempotency_key: string;
      run_id: string;
      request_hash: string | null;
      created_at: Date;
    }>(LOOKUP_SQL, [batch.map((l) => l.workflowName), batch.map((l) => l.key)]);
    const legacy = rows.filter((r) => r.request_hash === null).map((r) => r.run_id);
    const hashes = new Map<string, string>();
    if (legacy.length > 0) {
      const runs = await this.pool.query<{ id: string; input: unknown; labels: Record<string, string> }>(
        LEGACY_SQL,
        [legacy],
      );
      for (const r of runs.rows) hashes.set(r.id, requestHash(r.input, r.labels));
    }
    const found = new Map<string, KeyRecord>();
    for (const r of rows) {
      const hash = r.request_hash ?? hashes.get(r.run_id);
      // A legacy key whose run is gone names nothing.
      if (hash === undefined) continue;
      found.set(`${r.workflow_name}\u0000${r.idempotency_key}`, {
        runId: r.run_id,
        requestHash: hash,
        createdAt: r.created_at,
      });
    }
    return found;
  }

  /**
   * The keys of recovered active runs, by run id: only those whose key still names them (a key
   * may have been taken over by a newer run after it expired).
   */
  async ofRuns(
    runs: readonly { id: string; workflowName: string; key: string }[],
  ): Promise<Map<string, KeyRecord>> {
    const byRun = new Map<string, KeyRecord>();
    if (runs.length === 0) return byRun;
    const ids = new Set(runs.map((r) => r.id));
    const found = await this.query(runs.map((r) => ({ workflowName: r.workflowName, key: r.key })));
    for (const record of found.values()) if (ids.has(record.runId)) byRun.set(record.runId, record);
    return byRun;
  }
}

/** The key of {@link runsOfKeys}'s answer for a workflow's idempotency key. */
export function keyOfRun(workflowName: string, key: string): string {
  return `${workflowName}\u0000${key}`;
}

/**
 * The runs that idempotency keys name, whatever their age (the engine's lookup forgets keys after
 * its retention; a schedule's fire or an event's match left STARTING by a crash must find its run
 * however long ago), by {@link keyOfRun}.
 */
export async function runsOfKeys(
  pool: Pick<pg.Pool, "query">,
  keys: readonly { workflowName: string; key: string }[],
): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (keys.length === 0) return out;
  const { rows } = await pool.query<{ workflow_name: string; idempotency_key: string; run_id: string }>(
    `SELECT k.workflow_name, k.idempotency_key, k.run_id
     FROM unnest($1::text[], $2::text[]) AS x(workflow_name, idempotency_key)
     JOIN idempotency_keys k ON k.workflow_name = x.workflow_name AND k.idempotency_key = x.idempotency_key`,
    [keys.map((k) => k.workflowName), keys.map((k) => k.key)],
  );
  for (const r of rows) out.set(keyOfRun(r.workflow_name, r.idempotency_key), r.run_id);
  return out;
}
