/**
 * The group commit is atomic (issue 4): what a committed transaction says about a run (its state
 * and `event_seq`) never runs ahead of the outbox events describing it, so a SIGKILL between two
 * commits cannot leave a gap in the run's event sequence. The scheduler's database connection
 * goes through a TCP proxy that adds latency, which widens the round trips of each transaction;
 * a second connection watches the committed tables meanwhile.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { outboxEvents, waitFor, workflowClient } from "../support.js";
import { registerSpec } from "../e2e/harness.js";
import { startExecutorProcess, startSchedulerProcess, type ServiceProcess } from "../e2e/processes.js";
import { checkInvariants } from "./invariants.js";
import { TcpProxy } from "./proxy.js";
import { FAST_EXPIRY, executorEnv, startRun, faultFixture } from "./support.js";

const RUNS = 10;
/** Added to every chunk in each direction between the scheduler and PostgreSQL. */
const DB_LATENCY_MS = 15;

describe("fault injection: group commit atomicity", () => {
  const fx = faultFixture("nf-faults-commit-");

  it("never commits a run's event_seq ahead of its outbox events, so a SIGKILL leaves no gap", async () => {
    const proxy = await TcpProxy.start(`127.0.0.1:${fx.db.server.port}`, DB_LATENCY_MS);
    const slowUrl = fx.db.url.replace(`:${fx.db.server.port}/`, `:${proxy.address.split(":")[1]}/`);
    const { process: first, address } = await startSchedulerProcess(
      "sched-commit-1",
      slowUrl,
      0,
      FAST_EXPIRY,
    );
    const port = Number(address.slice(address.lastIndexOf(":") + 1));
    const client = workflowClient(address);
    const executor = await startExecutorProcess("commit", address, executorEnv(8));
    let second: ServiceProcess | undefined;
    try {
      await registerSpec(client, {
        name: "commit",
        version: 1,
        steps: [
          {
            id: "s1",
            type: "fault.flaky",
            input: { failures: 2 },
            retry: { maxAttempts: 3, initialInterval: "100ms", jitter: "none" },
          },
          { id: "s2", type: "fault.slow", dependsOn: ["s1"], input: { ms: 0 } },
        ],
      });
      const runIds = await Promise.all(Array.from({ length: RUNS }, () => startRun(client, "commit", {})));

      // Watch the committed state until every run is finished or a run row is ahead of its events.
      let ahead: { id: string; seq: number; events: number } | undefined;
      const deadline = Date.now() + 60_000;
      while (ahead === undefined && Date.now() < deadline) {
        // One transaction's view of both: the run rows and the outbox rows committed with them.
        const snapshot = await fx.tables.pool.connect();
        try {
          await snapshot.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
          const { rows } = await snapshot.query<{ id: string; seq: number }>(
            `SELECT id, event_seq::int AS seq FROM workflow_runs WHERE id = ANY($1::uuid[])`,
            [runIds],
          );
          const events = new Map<string, number>();
          for (const e of await outboxEvents(snapshot, runIds))
            events.set(e.runId, (events.get(e.runId) ?? 0) + 1);
          ahead = rows.map((r) => ({ ...r, events: events.get(r.id) ?? 0 })).find((r) => r.seq > r.events);
          await snapshot.query("COMMIT");
        } finally {
          snapshot.release();
        }
        if (ahead === undefined && (await fx.tables.terminalCount(runIds)) === RUNS) break;
        if (ahead === undefined) await delay(5);
      }
      if (ahead !== undefined) {
        // Crash right there: the events the run row already counts are not committed yet.
        await first.kill();
        ({ process: second } = await startSchedulerProcess("sched-commit-2", fx.db.url, port, FAST_EXPIRY));
      }
      await waitFor(
        "every run to finish",
        async () => ((await fx.tables.terminalCount(runIds)) === RUNS ? true : undefined),
        60_000,
      );
      const report = await checkInvariants(fx.tables.pool, runIds);
      assert.equal(
        ahead,
        undefined,
        `a committed transaction set workflow_runs.event_seq=${ahead?.seq} for run ${ahead?.id} with only ` +
          `${ahead?.events} outbox events committed; after a SIGKILL at that moment:\n${report.violations.join("\n")}`,
      );
      await fx.tables.assertInvariants(runIds);
    } finally {
      await Promise.all([executor.kill(), first.kill(), second?.kill()]);
      await proxy.close();
    }
  });
});
