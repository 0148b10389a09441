/**
 * PostgreSQL stopped for a few seconds under a running scheduler process (issue 4): clients get
 * UNAVAILABLE quickly instead of hanging, completions reported meanwhile are not lost, and the
 * scheduler recovers without a restart of its own.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import { RunStatus } from "@nexusflow/gen";
import { waitFor, waitForRun, workflowClient } from "../support.js";
import { describeRun, registerSpec } from "../e2e/harness.js";
import { startExecutorProcess, startSchedulerProcess } from "../e2e/processes.js";

import { FAST_EXPIRY, attemptSummary, executorEnv, markers, startRun, faultFixture } from "./support.js";

/** How long a client call may take during the outage before it counts as hanging. */
const NO_HANG_MS = 8_000;
/** Shortest outage: longer than step a, whose completions must survive it. */
const OUTAGE_MS = 3_000;
/** Background runs, and steps of each, that keep commits in flight when the database stops. */
const LOAD_RUNS = 20;
const LOAD_STEPS = 40;

describe("fault injection: PostgreSQL outage under a scheduler process", () => {
  const fx = faultFixture("nf-faults-pg-");

  it("answers UNAVAILABLE within seconds while PostgreSQL is down, then finishes every run without a restart", async () => {
    const marker = join(fx.dir, "outage.jsonl");
    const { process: scheduler, address } = await startSchedulerProcess(
      "sched-outage",
      fx.db.url,
      0,
      FAST_EXPIRY,
    );
    const client = workflowClient(address);
    const executor = await startExecutorProcess("outage", address, executorEnv(32));
    try {
      await registerSpec(client, {
        name: "outage",
        version: 1,
        steps: [
          // Step a finishes while the database is down: its completion must be kept and committed later.
          { id: "a", type: "fault.slow", input: { marker: "{{ input.marker }}", ms: 1500 } },
          { id: "b", type: "fault.slow", dependsOn: ["a"], input: { marker: "{{ input.marker }}", ms: 50 } },
        ],
        defaults: { retry: { maxAttempts: 3, initialInterval: "50ms" } },
      });
      // Background load: chains of short sleeps keep the scheduler committing, so the database
      // goes away with commits in flight, as it does in production.
      await registerSpec(client, {
        name: "outage-load",
        version: 1,
        steps: Array.from({ length: LOAD_STEPS }, (_, i) => ({
          id: `s${i}`,
          type: "sleep",
          input: { duration: "50ms" },
          ...(i === 0 ? {} : { dependsOn: [`s${i - 1}`] }),
        })),
        defaults: { retry: { maxAttempts: 3, initialInterval: "50ms" } },
      });
      const runIds = await Promise.all([1, 2, 3].map(() => startRun(client, "outage", { marker })));
      const loadIds = await Promise.all(
        Array.from({ length: LOAD_RUNS }, () => startRun(client, "outage-load", {})),
      );
      await waitFor("step a of every run to start", async () =>
        (await markers(marker)).filter((m) => m.stepId === "a").length === runIds.length ? true : undefined,
      );
      await waitFor("the load to be under way", async () => {
        const { rows } = await fx.tables.pool.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM task_runs WHERE run_id = ANY($1::uuid[]) AND status = 'SUCCEEDED'",
          [loadIds],
        );
        return (rows[0]?.n ?? 0) >= LOAD_RUNS ? true : undefined;
      });

      await fx.db.server.stop();
      const stoppedAt = Date.now();
      try {
        const timed = async (call: () => Promise<unknown>): Promise<{ code?: Code; ms: number }> => {
          const t0 = Date.now();
          const code = await call().then(
            () => undefined,
            (e: unknown) => ConnectError.from(e).code,
          );
          return { ms: Date.now() - t0, ...(code === undefined ? {} : { code }) };
        };
        // The scheduler notices: a commit fails (the completions of step a arrive meanwhile).
        await scheduler.waitForLog(
          '"database commit failed; retrying until it is back"',
          (l) => l.msg === "database commit failed; retrying until it is back",
          15_000,
        );
        // Probe for at least OUTAGE_MS (step a finishes meanwhile): every read fails fast.
        const probes: { code?: Code; ms: number }[] = [];
        while (Date.now() - stoppedAt < OUTAGE_MS || probes.length < 3)
          probes.push(await timed(() => client.getRun({ runId: runIds[0] ?? "" }, { timeoutMs: 20_000 })));
        for (const read of probes) {
          assert.equal(read.code, Code.Unavailable, `GetRun during the outage: ${JSON.stringify(probes)}`);
          assert.ok(read.ms < NO_HANG_MS, `GetRun took ${read.ms} ms: ${JSON.stringify(probes)}`);
        }
        const start = await timed(() =>
          client.startRun({ workflowName: "outage", input: jsonToValue({ marker }) }, { timeoutMs: 20_000 }),
        );
        assert.equal(start.code, Code.Unavailable, `StartRun during the outage: ${JSON.stringify(start)}`);
        assert.ok(start.ms < NO_HANG_MS, `StartRun took ${start.ms} ms`);
        const list = await timed(() => client.listRuns({}, { timeoutMs: 20_000 }));
        assert.equal(list.code, Code.Unavailable, `ListRuns during the outage: ${JSON.stringify(list)}`);
        assert.ok(list.ms < NO_HANG_MS, `ListRuns took ${list.ms} ms`);
      } finally {
        await fx.db.server.restart();
      }

      const runs = await Promise.all(runIds.map((id) => waitForRun(client, id, 30_000)));
      for (const id of loadIds) {
        const run = await waitForRun(client, id, 30_000);
        assert.equal(run.status, RunStatus.SUCCEEDED, describeRun(run));
      }
      for (const run of runs) {
        assert.equal(run.status, RunStatus.SUCCEEDED, `${describeRun(run)}\n${scheduler.tail()}`);
        for (const t of run.tasks) assert.deepEqual(attemptSummary(t), [["SUCCEEDED", ""]], describeRun(run));
      }
      // The same process takes new work again.
      const again = await startRun(client, "outage", { marker });
      const last = await waitForRun(client, again, 30_000);
      assert.equal(last.status, RunStatus.SUCCEEDED, describeRun(last));
      assert.ok(scheduler.alive && executor.alive, "neither process restarted");
      assert.equal(
        scheduler.lines.filter((l) => l.msg === "scheduler listening").length,
        1,
        "the scheduler did not restart itself",
      );

      // The run StartRun was refused for during the outage must not exist half-created.
      const { rows } = await fx.tables.pool.query<{ id: string }>(
        "SELECT id FROM workflow_runs WHERE workflow_name IN ('outage', 'outage-load')",
      );
      const stray = rows
        .map((r) => r.id)
        .filter((id) => !runIds.includes(id) && !loadIds.includes(id) && id !== again);
      for (const id of stray) await waitForRun(client, id, 30_000);
      await fx.tables.assertInvariants([...runIds, ...loadIds, again, ...stray]);
    } finally {
      await Promise.all([executor.kill(), scheduler.kill()]);
    }
  });
});
