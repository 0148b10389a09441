/**
 * A replica's own calls with authentication on (issue #22): the schedules' fire loop of the
 * coordinator ends, under TERMINATE_OTHER, a run another replica holds by CancelRun at its owner;
 * that call carries the replica's own token (SCHEDULER_TOKEN, the `peerToken` option). Without
 * one the owner refuses it (UNAUTHENTICATED) and the run goes on, the fire starting anyway.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue } from "@nexusflow/common";
import { OverlapPolicy, RunStatus, ScheduleService, WorkflowService } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import { createTestIssuer, type TestIssuer, withToken } from "../auth/tokens.js";
import { registerSpec } from "../e2e/harness.js";
import { startTestDatabase, startTestScheduler, waitFor } from "../support.js";

describe("a replica's own calls with authentication on", () => {
  let dir: string;
  let issuer: TestIssuer;
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  const started: Scheduler[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-peer-token-"));
    issuer = await createTestIssuer(dir);
    server = await startTestDatabase();
  });
  after(async () => {
    for (const s of started.splice(0)) await s.stop();
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  for (const withPeerToken of [true, false]) {
    it(
      withPeerToken ? "end a run held elsewhere with the replica's token" : "are refused without one",
      async () => {
        for (const s of started.splice(0)) await s.stop();
        const token = await issuer.sign("nexusflow-scheduler", { scope: "runs:write runs:read" });
        for (let i = 0; i < 2; i++)
          started.push(
            await startTestScheduler(server.url, {
              cluster: true,
              partitionLeaseMs: 1000,
              auth: await issuer.verifier(),
              ...(withPeerToken ? { peerToken: () => Promise.resolve(token) } : {}),
            }),
          );
        const [a, b] = started as [Scheduler, Scheduler];
        await waitFor(
          "an even split",
          () => a.partitions.held().length === 8 && b.partitions.held().length === 8,
        );
        const coordinator = a.partitions.epochOf(0) === undefined ? b : a;
        const other = coordinator === a ? b : a;
        const operator = withToken(await issuer.sign("operator", { scope: "admin" }));
        const runs = (s: Scheduler): Client<typeof WorkflowService> =>
          createClient(
            WorkflowService,
            createGrpcTransport({ baseUrl: `http://${s.address}`, interceptors: [operator] }),
          );
        const schedules = (s: Scheduler): Client<typeof ScheduleService> =>
          createClient(
            ScheduleService,
            createGrpcTransport({ baseUrl: `http://${s.address}`, interceptors: [operator] }),
          );
        const name = `peer-${String(withPeerToken)}`;
        await registerSpec(runs(coordinator), {
          name,
          version: 1,
          steps: [{ id: "s", type: "peer.nobody" }],
        });
        await schedules(coordinator).createSchedule({
          scheduleId: name,
          spec: {
            cron: "* * * * * *",
            workflowName: name,
            input: jsonToValue({}),
            overlapPolicy: OverlapPolicy.TERMINATE_OTHER,
          },
          paused: true,
        });
        // A run of the schedule held by the replica that is not the coordinator.
        const { fire } = await schedules(other).triggerSchedule({ scheduleId: name });
        const runId = fire?.runId ?? "";
        assert.ok(other.engine.isActive(runId), "held by the other replica");
        await schedules(coordinator).resumeSchedule({ scheduleId: name });
        const startedCount = async (): Promise<bigint> =>
          (await schedules(coordinator).getSchedule({ scheduleId: name })).schedule?.startedCount ?? 0n;
        await waitFor("a scheduled fire", async () => (await startedCount()) >= 2n);
        const status = (await runs(coordinator).getRun({ runId })).run?.status;
        if (withPeerToken)
          await waitFor(
            "the other replica's run cancelled",
            async () => (await runs(coordinator).getRun({ runId })).run?.status === RunStatus.CANCELLED,
          );
        else assert.equal(status, RunStatus.RUNNING, "refused without a token: the run goes on");
        await schedules(coordinator).pauseSchedule({ scheduleId: name });
      },
    );
  }
});
