/**
 * `nexusflow dev --schedulers N`: the replicas start at once, one of them takes every partition
 * and hands the others their share after the stable period (docs/replicas.md). The dev stack goes
 * on once every replica holds partitions, so that its first runs spread over all of them.
 */
import { setTimeout as delay } from "node:timers/promises";
import pg from "pg";

/** How often the partition table is read while waiting. */
const POLL_MS = 250;

/**
 * Waits until `replicas` live replicas each hold at least one partition; false when `timeoutMs`
 * passed first (the stack goes on: the replicas keep sharing). Rejects when `signal` aborts.
 */
export async function waitForBalancedReplicas(
  databaseUrl: string,
  replicas: number,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<boolean> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      signal.throwIfAborted();
      const { rows } = await client.query<{ owners: number }>(
        `SELECT count(DISTINCT owner)::int AS owners FROM partitions
          WHERE owner IS NOT NULL AND lease_expires_at > now()`,
      );
      if ((rows[0]?.owners ?? 0) >= replicas) return true;
      if (performance.now() >= deadline) return false;
      await delay(POLL_MS, undefined, { signal });
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}
