/**
 * Executor churn under load (issue 4): 500 short runs in flight while executor processes are
 * SIGKILLed and restarted in a loop. Every run must finish, and the invariants must hold for all.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { startTestDatabase, waitFor, workflowClient } from "../support.js";
import { registerSpec } from "../e2e/harness.js";
import {
  killAll,
  startExecutorProcess,
  startSchedulerProcess,
  type ServiceProcess,
} from "../e2e/processes.js";
import { FaultTables } from "./invariants.js";
import { FAST_EXPIRY, executorEnv, startRun } from "./support.js";

const RUNS = 500;
const EXECUTORS = 3;
/** Kills in the loop, at most; the loop also ends once every run is terminal. */
const MAX_KILLS = 10;
/** Pace of the kills: a fault schedule, not something any assertion waits for. */
const KILL_EVERY_MS = 1_000;

describe("fault injection: executor churn under load", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let tables: FaultTables;

  before(async () => {
    db = await startTestDatabase();
    tables = new FaultTables(db.url);
  });

  after(async () => {
    await killAll();
    await tables?.close();
    await db?.close();
  });

  it(`finishes ${RUNS} runs while executors are SIGKILLed and restarted every second`, async (t) => {
    const { process: scheduler, address } = await startSchedulerProcess(
      "sched-churn",
      db.url,
      0,
      FAST_EXPIRY,
    );
    const client = workflowClient(address);
    const ids = Array.from({ length: EXECUTORS }, (_, i) => `churn-${i}`);
    const start = (id: string): Promise<ServiceProcess> => startExecutorProcess(id, address, executorEnv(8));
    const executors = new Map<string, Promise<ServiceProcess>>(ids.map((id) => [id, start(id)]));
    try {
      await Promise.all(executors.values());
      const retry = { maxAttempts: 10, initialInterval: "50ms", maxInterval: "500ms" };
      await registerSpec(client, {
        name: "churn",
        version: 1,
        defaults: { retry },
        steps: [
          { id: "a", type: "noop" },
          { id: "b", type: "sleep", dependsOn: ["a"], input: { duration: "150ms" } },
          { id: "c", type: "noop", dependsOn: ["b"] },
        ],
      });
      const t0 = Date.now();
      const runIds: string[] = [];
      for (let i = 0; i < RUNS; i += 50)
        runIds.push(...(await Promise.all(Array.from({ length: 50 }, () => startRun(client, "churn", {})))));
      t.diagnostic(`${RUNS} runs started in ${Date.now() - t0} ms`);

      // Kill the executor holding the most leases, restart it, repeat.
      const killed: { id: string; leases: number }[] = [];
      while (killed.length < MAX_KILLS && (await tables.terminalCount(runIds)) < RUNS) {
        const { rows } = await tables.pool.query<{ executor_id: string; n: number }>(
          `SELECT executor_id, count(*)::int AS n FROM task_runs
            WHERE run_id = ANY($1::uuid[]) AND status IN ('LEASED', 'RUNNING') GROUP BY executor_id`,
          [runIds],
        );
        const held = new Map(rows.map((r) => [r.executor_id, r.n]));
        const victim = [...ids].sort((x, y) => (held.get(y) ?? 0) - (held.get(x) ?? 0))[0] as string;
        const proc = await executors.get(victim);
        await proc?.kill();
        killed.push({ id: victim, leases: held.get(victim) ?? 0 });
        const next = start(victim);
        // A restart that fails is reported by the await below; do not leave it unhandled meanwhile.
        next.catch(() => undefined);
        executors.set(victim, next);
        await delay(KILL_EVERY_MS);
      }
      await Promise.all(executors.values());
      t.diagnostic(`kill loop over after ${Date.now() - t0} ms; kills: ${JSON.stringify(killed)}`);

      await waitFor(
        `all ${RUNS} runs to be terminal`,
        async () => ((await tables.terminalCount(runIds)) === RUNS ? true : undefined),
        120_000,
      );
      const { rows: statuses } = await tables.pool.query<{ status: string; n: number }>(
        "SELECT status, count(*)::int AS n FROM workflow_runs WHERE id = ANY($1::uuid[]) GROUP BY status",
        [runIds],
      );
      assert.deepEqual(
        statuses.map((r) => [r.status, r.n]),
        [["SUCCEEDED", RUNS]],
        `kills: ${JSON.stringify(killed)}\n${scheduler.tail(10)}`,
      );
      const { rows: expired } = await tables.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM task_attempts WHERE run_id = ANY($1::uuid[]) AND error->>'type' = 'LEASE_EXPIRED'`,
        [runIds],
      );
      assert.ok(killed.length >= 3, `only ${killed.length} kills before the runs finished`);
      assert.ok((expired[0]?.n ?? 0) > 0, `the kills hit leased work (kills: ${JSON.stringify(killed)})`);
      const facts = await tables.assertInvariants(runIds);
      const attempts = [...facts.values()].flatMap((r) =>
        [...r.steps.values()].map((x) => x.attempts.length),
      );
      t.diagnostic(
        `all terminal after ${Date.now() - t0} ms; LEASE_EXPIRED attempts: ${expired[0]?.n}; most attempts of a step: ${Math.max(...attempts)}`,
      );
    } finally {
      await Promise.all([...executors.values()].map(async (p) => (await p.catch(() => undefined))?.kill()));
      await scheduler.kill();
    }
  });
});
