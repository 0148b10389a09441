/**
 * Re-attaching under an executor id gives up that id's unlisted leases at once (issue 28), so the
 * right to attach as an id is the right to release its work: a token that may not be the executor
 * cannot, even listing no leases at all; the executor itself, on a new session, can.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { jsonToValue } from "@nexusflow/common";
import { TaskStatus, WorkflowService, type LeaseKey } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec } from "../e2e/harness.js";
import { RawSession, startTestDatabase, startTestScheduler, waitFor } from "../support.js";
import { bearer, createTestIssuer, withToken, type TestIssuer } from "./tokens.js";

const T = { timeout: 60_000 };

describe("re-attach releases only the leases of an executor the token may be", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let dir: string;
  let issuer: TestIssuer;
  let scheduler: Scheduler;
  let client: Client<typeof WorkflowService>;
  const sessions: RawSession[] = [];

  const attach = (token: string, executorId: string, held: LeaseKey[] = []): RawSession => {
    const s = new RawSession(scheduler.address, bearer(token));
    sessions.push(s);
    s.send({
      case: "attach",
      value: { executorId, taskTypes: ["release.task"], slots: 1, heldLeases: held },
    });
    return s;
  };
  const executorToken = (subject: string): Promise<string> => issuer.sign(subject, { scope: "executor" });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-release-"));
    issuer = await createTestIssuer(dir);
    db = await startTestDatabase();
    // A session timeout no test waits out: an expiry seen here is the re-attach's doing.
    scheduler = await startTestScheduler(db.url, {
      auth: await issuer.verifier(),
      sessionTimeoutMs: 600_000,
    });
    client = createClient(
      WorkflowService,
      createGrpcTransport({
        baseUrl: `http://${scheduler.address}`,
        interceptors: [withToken(await issuer.sign("operator", { scope: "admin" }))],
      }),
    );
    await registerSpec(client, {
      name: "release",
      version: 1,
      steps: [{ id: "only", type: "release.task", retry: { maxAttempts: 2, initialInterval: "10ms" } }],
    });
  });

  after(async () => {
    for (const s of sessions) s.close();
    await scheduler?.stop();
    await db?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it(
    "a foreign token attaching as the executor with no leases is refused and releases nothing",
    T,
    async () => {
      const victim = attach(await executorToken("victim"), "victim");
      await victim.next("attachAck");
      const { run } = await client.startRun({ workflowName: "release", input: jsonToValue({}) });
      assert.ok(run);
      victim.send({ case: "credit", value: { n: 1 } });
      const lease = await victim.next("lease");
      assert.ok(lease.key);
      victim.send({ case: "started", value: { key: lease.key } });
      await waitFor("the lease RUNNING", async () => {
        const { run: r } = await client.getRun({ runId: run.id });
        return r?.tasks[0]?.status === TaskStatus.RUNNING;
      });

      const thief = attach(await executorToken("thief"), "victim");
      const status = await waitFor("the thief's session to end", () => thief.status);
      assert.equal(status.code, grpc.status.PERMISSION_DENIED, status.details);
      assert.match(status.details, /may not attach as executor "victim"/);
      const kept = (await client.getRun({ runId: run.id })).run?.tasks[0];
      assert.deepEqual(
        kept?.attempts.map((a) => [a.number, a.status]),
        [[1, TaskStatus.RUNNING]],
      );
      assert.equal(victim.status, undefined, "the victim's session is still open");

      // The victim itself, on a new session listing nothing, gives the lease up at once.
      const back = attach(await executorToken("victim"), "victim");
      await back.next("attachAck");
      const after = await waitFor("the unlisted lease to expire", async () => {
        const t = (await client.getRun({ runId: run.id })).run?.tasks[0];
        return t?.attempts[0]?.status === TaskStatus.FAILED ? t : undefined;
      });
      assert.equal(after.attempts[0]?.error?.type, "LEASE_EXPIRED");
      assert.match(after.attempts[0]?.error?.message ?? "", /victim re-attached without this lease/);
      // The old session's report no longer counts; the retry is leased to the new session.
      back.send({ case: "credit", value: { n: 1 } });
      const retry = await back.next("lease");
      assert.equal(retry.key?.attempt, 2);
    },
  );
});
