/**
 * The executor id of a Session is bound to its token (issue 18): a session attaches as the token's
 * `sub`, or as an id the token's `nexusflow_executors` claim lists (exactly, or by a trailing `*`
 * prefix). Anything else is PERMISSION_DENIED naming the id, and the executor whose id was tried
 * keeps its session and its leases. A session of the same identity still supersedes its own
 * earlier one (a reconnect).
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
import { RunStatus, TaskStatus, WorkflowService, type LeaseKey } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec } from "../e2e/harness.js";
import { RawSession, startTestDatabase, startTestScheduler, waitFor, waitForRun } from "../support.js";
import { bearer, createTestIssuer, withToken, type TestIssuer } from "./tokens.js";

const T = { timeout: 60_000 };

describe("executor identity bound to the session's token", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let dir: string;
  let issuer: TestIssuer;
  let scheduler: Scheduler;
  let client: Client<typeof WorkflowService>;
  const sessions: RawSession[] = [];

  /** A session opened with `token` that attaches as `executorId`. */
  const attach = (
    token: string,
    executorId: string,
    options: { types?: string[]; held?: LeaseKey[] } = {},
  ): RawSession => {
    const s = new RawSession(scheduler.address, bearer(token));
    sessions.push(s);
    s.send({
      case: "attach",
      value: {
        executorId,
        taskTypes: options.types ?? ["ident.none"],
        slots: 1,
        heldLeases: options.held ?? [],
      },
    });
    return s;
  };
  /** The status a session ended with. */
  const ended = (s: RawSession): Promise<grpc.StatusObject> => waitFor("the session to end", () => s.status);
  const executorToken = (subject: string, claims: Record<string, unknown> = {}): Promise<string> =>
    issuer.sign(subject, { scope: "executor", ...claims });

  /** Starts a run of the one-step `ident` workflow and leases its task to `s` (credit 1). */
  const leaseTo = async (s: RawSession): Promise<{ runId: string; key: LeaseKey }> => {
    const { run } = await client.startRun({ workflowName: "ident", input: jsonToValue({}) });
    assert.ok(run);
    s.send({ case: "credit", value: { n: 1 } });
    const lease = await s.next("lease");
    assert.ok(lease.key);
    assert.equal(lease.runId, run.id);
    s.send({ case: "started", value: { key: lease.key } });
    await waitFor("the lease RUNNING", async () => {
      const { run: r } = await client.getRun({ runId: run.id });
      return r?.tasks[0]?.status === TaskStatus.RUNNING;
    });
    return { runId: run.id, key: lease.key };
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-ident-"));
    issuer = await createTestIssuer(dir);
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url, { auth: await issuer.verifier(), sessionTimeoutMs: 5_000 });
    client = createClient(
      WorkflowService,
      createGrpcTransport({
        baseUrl: `http://${scheduler.address}`,
        interceptors: [withToken(await issuer.sign("operator", { scope: "admin" }))],
      }),
    );
    await registerSpec(client, { name: "ident", version: 1, steps: [{ id: "only", type: "ident.task" }] });
  });

  after(async () => {
    for (const s of sessions) s.close();
    await scheduler?.stop();
    await db?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("refuses a token of executor A attaching as B, and B keeps its session and lease", T, async () => {
    const b = attach(await executorToken("worker-b"), "worker-b", { types: ["ident.task"] });
    await b.next("attachAck");
    const { runId, key } = await leaseTo(b);
    const before = (await client.getRun({ runId })).run;

    // Worker A's token, an admin token and a token without a subject match all try to be worker-b,
    // claiming its lease as held.
    const thieves = [
      await executorToken("worker-a"),
      await issuer.sign("operator", { scope: "admin" }),
      await executorToken("worker-a", { nexusflow_executors: ["worker-a2", "worker-b-*", 7] }),
    ];
    for (const token of thieves) {
      const thief = attach(token, "worker-b", { types: ["ident.task"], held: [key] });
      const status = await ended(thief);
      assert.equal(status.code, grpc.status.PERMISSION_DENIED, status.details);
      assert.match(status.details, /^attach\.executor_id: .* may not attach as executor "worker-b"/);
    }

    // worker-b was not superseded, its lease is still its own, unchanged, and its result counts.
    assert.equal(b.status, undefined, "worker-b's session is still open");
    assert.deepEqual((await client.getRun({ runId })).run?.tasks, before?.tasks);
    b.send({ case: "heartbeat", value: { key } });
    b.send({ case: "completed", value: { key, output: jsonToValue({ by: "worker-b" }) } });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    assert.deepEqual(
      run.tasks[0]?.attempts.map((a) => a.executorId),
      ["worker-b"],
    );
    b.close();
  });

  it(
    "attaches as an id the nexusflow_executors claim lists, exactly or by prefix, and no other",
    T,
    async () => {
      const fleet = await executorToken("fleet-controller", { nexusflow_executors: ["worker-c", "batch-*"] });
      for (const id of ["worker-c", "batch-7f3a", "batch-", "fleet-controller"]) {
        const s = attach(fleet, id);
        const ack = await s.next("attachAck");
        assert.ok(ack.sessionId !== "", id);
        s.close();
      }
      for (const id of ["batch", "worker-cc", "worker-", "xbatch-1"]) {
        const status = await ended(attach(fleet, id));
        assert.equal(status.code, grpc.status.PERMISSION_DENIED, `${id}: ${status.details}`);
        assert.ok(status.details.includes(`"${id}"`), status.details);
      }
      // A lone "*" lets a token act as any executor (a trusted fleet manager); a plain string is one id.
      const any = await executorToken("manager", { nexusflow_executors: ["*"] });
      assert.ok((await attach(any, "anything-at-all").next("attachAck")).sessionId);
      const one = await executorToken("single", { nexusflow_executors: "worker-e" });
      assert.ok((await attach(one, "worker-e").next("attachAck")).sessionId);
      assert.equal((await ended(attach(one, "worker-e2"))).code, grpc.status.PERMISSION_DENIED);
    },
  );

  it("lets a session of the same identity supersede its own earlier one and take its lease", T, async () => {
    const first = attach(await executorToken("worker-d"), "worker-d", { types: ["ident.task"] });
    await first.next("attachAck");
    const { runId, key } = await leaseTo(first);

    // A fresh token of the same subject, and one that names worker-d by pattern: both are worker-d.
    const second = attach(await executorToken("worker-d"), "worker-d", {
      types: ["ident.task"],
      held: [key],
    });
    const ack = await second.next("attachAck");
    assert.deepEqual(ack.revoked, [], "the held lease is kept");
    const superseded = await ended(first);
    assert.equal(superseded.code, grpc.status.UNAVAILABLE);
    assert.match(superseded.details, /superseded/);

    const third = attach(await executorToken("deployer", { nexusflow_executors: ["worker-*"] }), "worker-d", {
      types: ["ident.task"],
      held: [key],
    });
    assert.deepEqual((await third.next("attachAck")).revoked, []);
    assert.equal((await ended(second)).code, grpc.status.UNAVAILABLE);
    third.send({ case: "completed", value: { key, output: jsonToValue({ by: "worker-d" }) } });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    assert.equal(run.tasks[0]?.attempts.length, 1);
    third.close();
  });
});
