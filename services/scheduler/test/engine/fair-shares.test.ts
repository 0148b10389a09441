/**
 * Fair shares on a real scheduler and PostgreSQL, with an executor session whose credit the test
 * controls (so the order of the leases is the scheduler's decision alone, and nothing waits on
 * time): with 10,000 runs queued for tenant A and 10 for tenant B, the README's bound on how many
 * of A's start before the last of B's holds, and again for 10 more of B's arriving while A's
 * backlog runs; a tenant at its maximum still takes every free slot when nothing else is ready
 * (work-conserving), yields when another tenant's task is ready, and ExplainPending names its
 * fair share; a fairness key that is not a string or a number is refused by StartRun.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import type { Lease } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec, type WorkflowClient } from "../e2e/harness.js";
import { RawSession, startTestDatabase, startTestScheduler, waitFor, workflowClient } from "../support.js";

/** Runs started per StartRuns call (its most). */
const BATCH = 1000;
/** Leases the test executor takes at once. */
const CREDIT = 8;

describe("fair shares", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: WorkflowClient;
  const sessions: RawSession[] = [];
  /** The tenant of each run started, by run id. */
  const tenantOf = new Map<string, string>();

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url, { sessionTimeoutMs: 10_000 });
    client = workflowClient(scheduler.address);
    await registerSpec(client, {
      name: "fair-tenants",
      version: 1,
      fairness: [{ key: "input.tenant" }],
      steps: [{ id: "s", type: "fair.t" }],
    });
    await registerSpec(client, {
      name: "fair-capped",
      version: 1,
      fairness: [{ key: "input.tenant", max: 1 }],
      steps: [{ id: "s", type: "fair.c" }],
    });
  });

  after(async () => {
    for (const s of sessions) s.close();
    await scheduler?.stop();
    await db?.close();
  });

  /** Starts `n` runs of `workflowName` for `tenant` with StartRuns; their ids in order. */
  async function startMany(workflowName: string, tenant: string, n: number): Promise<string[]> {
    const ids: string[] = [];
    for (let done = 0; done < n; done += BATCH) {
      const count = Math.min(BATCH, n - done);
      const { results } = await client.startRuns({
        runs: Array.from({ length: count }, () => ({ workflowName, input: jsonToValue({ tenant }) })),
      });
      for (const r of results) {
        if (r.result.case === "error") assert.fail(`StartRuns refused a run: ${r.result.value.message}`);
        const id = r.result.value?.run?.id;
        assert.ok(id !== undefined);
        ids.push(id);
        tenantOf.set(id, tenant);
      }
    }
    return ids;
  }

  /** An executor session for `types`, attached, with `credit`. */
  async function attach(executorId: string, types: string[], credit: number): Promise<RawSession> {
    const session = new RawSession(scheduler.address);
    sessions.push(session);
    session.send({ case: "attach", value: { executorId, taskTypes: types } });
    await session.next("attachAck");
    if (credit > 0) session.send({ case: "credit", value: { n: credit } });
    return session;
  }

  /** Completes a lease and gives its slot back. */
  function complete(session: RawSession, lease: Lease): void {
    session.send({ case: "completed", value: { key: lease.key } });
    session.send({ case: "credit", value: { n: 1 } });
  }

  /**
   * Takes leases (completing each, its slot given back) until every run of `awaited` has been
   * leased; returns the tenants of the leases in the order they came.
   */
  async function serveUntil(session: RawSession, awaited: readonly string[]): Promise<string[]> {
    const left = new Set(awaited);
    const order: string[] = [];
    while (left.size > 0) {
      const lease = await session.next("lease", 30_000);
      order.push(tenantOf.get(lease.runId) ?? "?");
      left.delete(lease.runId);
      complete(session, lease);
    }
    return order;
  }

  it("10,000 queued for tenant A and 10 for B: at most 11 of A's start before the last of B's", async (t) => {
    await startMany("fair-tenants", "A", 10_000);
    const b = await startMany("fair-tenants", "B", 10);
    // Every run is queued once StartRuns answers: nothing has been leased (no executor yet).
    const first = await client.explainPending({ runId: b[9] as string, stepId: "s" });
    assert.equal(first.gates[0]?.gate.case, "noExecutor");

    const session = await attach("fair-exec", ["fair.t"], CREDIT);
    const order = await serveUntil(session, b);
    const aBefore = order.filter((t) => t === "A").length;
    // The README's bound: with equal weights, at most n·wA/wB + 1 = 11 of A's before B's 10th.
    t.diagnostic(`queued together: ${aBefore} of A's leases before the last of B's 10`);
    assert.ok(aBefore <= 11, `A got ${aBefore} leases before B's last: ${order.join("")}`);
    assert.equal(order.length - aBefore, 10);

    // A's backlog runs on (its virtual time far ahead of where B left off); the executor then
    // holds CREDIT leases and has no slot free while 10 more runs of B are queued.
    let served = 0;
    const held: Lease[] = [];
    while (held.length < CREDIT) {
      const lease = await session.next("lease", 30_000);
      assert.equal(tenantOf.get(lease.runId), "A");
      if (served < 500) {
        served++;
        complete(session, lease);
      } else held.push(lease);
    }
    const later = await startMany("fair-tenants", "B", 10);
    for (const lease of held) complete(session, lease);
    const after = await serveUntil(session, later);
    const aAfter = after.filter((t) => t === "A").length;
    t.diagnostic(`B arriving after 500 of A's: ${aAfter} of A's leases before the last of B's 10`);
    assert.ok(aAfter <= 11, `A got ${aAfter} leases before B's last: ${after.join("")}`);
  });

  it("a tenant at its maximum takes every free slot when nothing else is ready, and yields when something is", async () => {
    // Tenant C's maximum is 1 lease, but nothing else of its type is ready: all 5 are leased at once.
    const c = await startMany("fair-capped", "C", 5);
    const session = await attach("fair-capped-exec", ["fair.c"], 5);
    const leased: Lease[] = [];
    for (let i = 0; i < 5; i++) leased.push(await session.next("lease"));
    assert.deepEqual(new Set(leased.map((l) => l.runId)), new Set(c));

    // Now C holds 5 (over its maximum) and the executor has no slot: 2 more of C's and 2 of D's
    // wait. C's are older, but D is first when a slot frees, and C's say why they wait.
    const c2 = await startMany("fair-capped", "C", 2);
    const d = await startMany("fair-capped", "D", 2);
    const explained = await waitFor("C's task explained", async () => {
      const r = await client.explainPending({ runId: c2[0] as string, stepId: "s" });
      return r.gates.some((g) => g.gate.case === "fairShare") ? r : undefined;
    });
    const fair = explained.gates.find((g) => g.gate.case === "fairShare")?.gate;
    assert.equal(fair?.case, "fairShare");
    assert.deepEqual(
      {
        level: fair.value.level,
        tenant: fair.value.tenant,
        type: fair.value.type,
        leased: fair.value.leased,
        max: fair.value.max,
        atMax: fair.value.atMax,
        next: fair.value.next,
        waiting: fair.value.waiting,
      },
      { level: "tenant", tenant: "C", type: "fair.c", leased: 5, max: 1, atMax: true, next: "D", waiting: 2 },
    );
    assert.equal(explained.gates[0]?.gate.case, "executorsBusy");
    assert.match(
      explained.pendingReason,
      /fair share: tenant "D" is served before tenant "C" \(which holds 5 leases of type "fair.c", weight 1, at its max 1; 2 tenants waiting\)/,
    );
    const { run } = await client.getRun({ runId: c2[0] as string });
    assert.match(run?.tasks[0]?.pendingReason ?? "", /fair share: tenant "D" is served before tenant "C"/);
    const dExplained = await client.explainPending({ runId: d[0] as string, stepId: "s" });
    assert.ok(!dExplained.gates.some((g) => g.gate.case === "fairShare"), "D is first: no share holds it");

    complete(session, leased[0] as Lease);
    const next = await session.next("lease");
    assert.equal(tenantOf.get(next.runId), "D", "a freed slot goes to D, not to C's older runs");
    complete(session, next);
    const rest = await serveUntil(
      session,
      [...d, ...c2].filter((id) => id !== next.runId),
    );
    assert.equal(rest.length, 3);
    for (const l of leased.slice(1)) complete(session, l);
  });

  it("refuses a run whose fairness key is not a string or a number, naming the key", async () => {
    const error = await client
      .startRun({ workflowName: "fair-tenants", input: jsonToValue({ tenant: { id: 1 } }) })
      .then(
        () => assert.fail("expected INVALID_ARGUMENT"),
        (e: unknown) => ConnectError.from(e),
      );
    assert.equal(error.code, Code.InvalidArgument);
    assert.match(
      error.rawMessage,
      /fairness key "input.tenant" \(\$\.fairness\[0\]\.key\) is an object; a fairness key must be a string or a number/,
    );
  });
});
