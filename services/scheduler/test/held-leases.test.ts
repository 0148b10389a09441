/**
 * Leases an executor does not hold (Ping.list_held, Pong.held), against a real scheduler and
 * PostgreSQL, driven by raw sessions: about once per session timeout the scheduler asks a session
 * that holds leases to list them; a lease sent before the ask that the list leaves out expires as
 * lost (LEASE_EXPIRED) and runs again, whatever made the executor drop it, while the session stays
 * up. Listed leases stay, and an executor that never lists (older ones) is never judged.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { TaskStatus, type Lease } from "@nexusflow/gen";
import { jsonToValue } from "@nexusflow/common";
import type { Scheduler } from "../src/scheduler.js";
import { RawSession, startTestDatabase, startTestScheduler, waitFor, workflowClient } from "./support.js";

describe("leases the executor does not list as held", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: ReturnType<typeof workflowClient>;
  const sessions: RawSession[] = [];
  /** A session attached as `executorId` for held-task, with `slots` credit granted. */
  const attached = async (executorId: string, slots: number): Promise<RawSession> => {
    const s = new RawSession(scheduler.address);
    sessions.push(s);
    s.send({ case: "attach", value: { executorId, taskTypes: ["held-task"], slots, protocolVersion: 2 } });
    await s.next("attachAck");
    s.send({ case: "credit", value: { n: slots } });
    return s;
  };
  const start = async (): Promise<string> => {
    const { run } = await client.startRun({ workflowName: "held", input: jsonToValue({}) });
    assert.ok(run);
    return run.id;
  };
  const attemptsOf = async (runId: string) => {
    const { run } = await client.getRun({ runId });
    return run?.tasks[0]?.attempts.map((a) => [a.number, TaskStatus[a.status], a.error?.type ?? ""]) ?? [];
  };

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url, { heartbeatIntervalMs: 100, sessionTimeoutMs: 600 });
    client = workflowClient(scheduler.address);
    await client.registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({
          name: "held",
          version: 1,
          steps: [{ id: "only", type: "held-task", retry: { maxAttempts: 3, initialInterval: "10s" } }],
        }),
      },
    });
  });
  after(async () => {
    for (const s of sessions) s.close();
    await scheduler?.stop();
    await db?.close();
  });

  it("expires at once a lease the executor leaves out of its list, and keeps those it lists", async () => {
    const s = await attached("held-x", 2);
    const first = await start();
    const one = await s.next("lease");
    const second = await start();
    const two = await s.next("lease");
    assert.ok(one.key && two.key);
    s.send({ case: "started", value: { key: one.key } });
    s.send({ case: "started", value: { key: two.key } });
    await waitFor("both running", () =>
      [first, second].every((id) => scheduler.engine.activeRun(id)?.tasks.get("only")?.status === "RUNNING"),
    );
    // The executor lost the second lease (dropped, or revoked by another replica): it lists the first only.
    s.held = () => [{ ...one.key!, runId: first }];
    s.send({ case: "credit", value: { n: 1 } });
    const again = await s.next("lease", 10_000);
    assert.equal(again.runId, second, "the lease left out runs again");
    assert.equal(again.key?.attempt, 2);
    assert.ok(s.listAsks >= 1);
    assert.deepEqual(await attemptsOf(second), [
      [1, "FAILED", "LEASE_EXPIRED"],
      [2, "LEASED", ""],
    ]);
    // The listed one stays through later asks.
    s.held = () => [
      { ...one.key!, runId: first },
      { ...again.key!, runId: second },
    ];
    const asks = s.listAsks;
    await waitFor("two more asks", () => s.listAsks >= asks + 2);
    assert.deepEqual(await attemptsOf(first), [[1, "RUNNING", ""]]);
    assert.deepEqual(await attemptsOf(second), [
      [1, "FAILED", "LEASE_EXPIRED"],
      [2, "LEASED", ""],
    ]);
    s.send({ case: "completed", value: { key: one.key, output: jsonToValue({}) } });
    s.send({ case: "completed", value: { key: again.key, output: jsonToValue({}) } });
    await waitFor("both runs succeeded", () =>
      [first, second].every((id) => scheduler.engine.activeRun(id) === undefined),
    );
  });

  it("gives back free a lease the executor re-attaches with and then releases; one it leaves out counts an attempt", async () => {
    const reattach = async (
      executorId: string,
      held: { key: NonNullable<Lease["key"]>; runId: string }[],
    ) => {
      const s = new RawSession(scheduler.address);
      sessions.push(s);
      s.send({
        case: "attach",
        value: {
          executorId,
          taskTypes: ["held-task"],
          slots: 1,
          protocolVersion: 2,
          heldLeases: held.map((h) => ({ ...h.key, runId: h.runId })),
        },
      });
      await s.next("attachAck");
      return s;
    };
    for (const listed of [true, false]) {
      const executorId = `held-release-${listed}`;
      const s = await attached(executorId, 1);
      const id = await start();
      const lease = await s.next("lease");
      assert.ok(lease.key);
      // The executor gave it back (draining, or no free slot), but the session broke before the
      // Release was delivered: it attaches again, listing the lease (its Release not acknowledged),
      // and sends the Release again.
      s.close();
      const next = await reattach(executorId, listed ? [{ key: lease.key, runId: id }] : []);
      next.send({ case: "release", value: { key: lease.key, reason: "executor draining" } });
      await waitFor("the attempt ended", async () => (await attemptsOf(id))[0]?.[1] !== "LEASED");
      assert.deepEqual(
        (await attemptsOf(id))[0],
        listed ? [1, "CANCELLED", "RELEASED"] : [1, "FAILED", "LEASE_EXPIRED"],
        listed ? "released free" : "expired at the attach",
      );
      next.close();
      await client.cancelRun({ runId: id, reason: "done" });
    }
  });

  it("never judges an executor that does not list (held unset), however many asks", async () => {
    const s = await attached("held-old", 1);
    const id = await start();
    const lease = await s.next("lease");
    assert.ok(lease.key);
    s.send({ case: "started", value: { key: lease.key } });
    await waitFor("three asks", () => s.listAsks >= 3);
    assert.deepEqual(await attemptsOf(id), [[1, "RUNNING", ""]]);
    s.send({ case: "completed", value: { key: lease.key, output: jsonToValue({}) } });
    await waitFor("the run succeeded", () => scheduler.engine.activeRun(id) === undefined);
  });
});
