/**
 * Routing between scheduler replicas (issue #22, milestones 3 and 4): any replica answers a call for
 * any run. Two (then three) replicas in cluster mode on one PostgreSQL: run-scoped calls sent to the
 * replica that does not hold the run act on it at its owner, once; a forwarded call is never
 * forwarded again; bad input fails at the first replica; StartRun at a replica holding no partition
 * starts the run at one that does; an idempotency key names one run whichever replica is asked,
 * even when two are asked at once; a WatchRun at the other replica sees every update once across a
 * clean stop of the run's owner.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import { RunStatus, TaskStatus, type WatchRunResponse } from "@nexusflow/gen";
import pg from "pg";
import { keyPartition } from "../../src/cluster/partitioning.js";
import type { Scheduler } from "../../src/scheduler.js";
import {
  outboxEvents,
  refusal,
  registerSpec,
  startTestDatabase,
  startTestScheduler,
  waitFor,
  workflowClient,
} from "../support.js";

const T = { timeout: 60_000 };

describe("routing between replicas", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let sql: pg.Pool;
  const started: Scheduler[] = [];
  let a: Scheduler;
  let b: Scheduler;

  const replica = async (): Promise<Scheduler> => {
    const s = await startTestScheduler(server.url, { cluster: true, partitionLeaseMs: 1000 });
    started.push(s);
    return s;
  };
  const stopReplica = async (s: Scheduler): Promise<void> => {
    started.splice(started.indexOf(s), 1);
    await s.stop();
  };
  const client = (s: Scheduler) => workflowClient(s.address);
  const forwarded = (s: Scheduler): number => s.replicaRouter?.stats.forwarded ?? -1;
  const startAt = async (s: Scheduler, workflowName: string): Promise<string> => {
    const { run } = await client(s).startRun({ workflowName, input: jsonToValue({}) });
    assert.ok(run !== undefined);
    assert.ok(s.engine.isActive(run.id), `run ${run.id} is held by the replica that started it`);
    return run.id;
  };
  const eventsOf = async (runId: string, type: string): Promise<number> =>
    (await outboxEvents(sql, [runId])).filter((e) => e.type === type).length;

  before(async () => {
    server = await startTestDatabase();
    sql = new pg.Pool({ connectionString: server.url, max: 2 });
    a = await replica();
    b = await replica();
    await waitFor(
      "an even split",
      () => a.partitions.held().length === 8 && b.partitions.held().length === 8,
    );
    // No executor serves routing.nobody: such runs stay queued. Waits need no executor.
    await registerSpec(client(a), {
      name: "routing-queued",
      version: 1,
      steps: [{ id: "step", type: "routing.nobody" }],
    });
    await registerSpec(client(a), {
      name: "routing-wait",
      version: 1,
      steps: [
        { id: "gate", wait: { signal: "go" } },
        { id: "after", dependsOn: ["gate"], wait: { signal: "done" } },
      ],
    });
  });
  after(async () => {
    for (const s of started.splice(0)) await s.stop();
    await sql?.end();
    await server?.close();
  });

  it(
    "acts on a run at its owner when CancelRun, SignalRun and ExplainPending reach the other replica",
    T,
    async () => {
      const waiting = await startAt(a, "routing-wait");
      assert.equal(b.engine.isActive(waiting), false);
      const sent = forwarded(b);
      const signal = { runId: waiting, name: "go", idempotencyKey: "go-1", payload: jsonToValue({ n: 1 }) };
      const first = await client(b).signalRun(signal);
      assert.deepEqual([first.stepId, first.duplicate], ["gate", false]);
      const again = await client(b).signalRun(signal);
      assert.deepEqual([again.stepId, again.duplicate], ["gate", true]);
      assert.equal(forwarded(b), sent + 2, "both calls were forwarded by B");
      const gate = async (): Promise<TaskStatus | undefined> =>
        (await client(a).getRun({ runId: waiting })).run?.tasks.find((t) => t.stepId === "gate")?.status;
      await waitFor("the gate passed at A", async () => (await gate()) === TaskStatus.SUCCEEDED);
      assert.equal(await eventsOf(waiting, "signalReceived"), 1, "the signal was taken once");

      const queued = await startAt(a, "routing-queued");
      const explained = await client(b).explainPending({ runId: queued, stepId: "step" });
      assert.ok(
        explained.gates.some((g) => g.gate.case === "noExecutor"),
        `A's live gates: ${explained.gates.map((g) => g.gate.case).join(", ")}`,
      );
      // GetRun is served anywhere; the queued task's reason (A's executor sessions) comes from A.
      const read = await client(b).getRun({ runId: queued });
      assert.match(read.run?.tasks[0]?.pendingReason ?? "", /no executor advertises type "routing.nobody"/);
      const cancelled = await client(b).cancelRun({ runId: queued, reason: "routed" });
      assert.equal(cancelled.run?.status, RunStatus.CANCELLED);
      assert.equal(a.engine.isActive(queued), false, "A ended it");
      const repeated = await client(b).cancelRun({ runId: queued, reason: "routed again" });
      assert.equal(repeated.run?.status, RunStatus.CANCELLED);
      assert.equal(await eventsOf(queued, "runCancelRequested"), 1, "cancelled once");
    },
  );

  it("never forwards a forwarded call, and refuses bad input before forwarding", T, async () => {
    const queued = await startAt(a, "routing-queued");
    const sent = forwarded(b);
    const moving = await refusal(
      client(b).cancelRun({ runId: queued }, { headers: { "nexusflow-forwarded-by": "another-replica" } }),
    );
    assert.equal(moving.code, Code.Unavailable);
    assert.match(moving.message, new RegExp(`run ${queued} is moving between replicas; retry`));
    assert.ok(a.engine.isActive(queued), "the run was not cancelled");

    // A keyed StartRun forwarded to a replica that does not hold the key's partition (it moved
    // meanwhile): UNAVAILABLE, no run started there.
    const count = a.partitions.partitionCount;
    let key = "forwarded-0";
    for (let i = 1; b.partitions.epochOf(keyPartition("routing-queued", key, count)) !== undefined; i++)
      key = `forwarded-${i}`;
    const keyMoving = await refusal(
      client(b).startRun(
        { workflowName: "routing-queued", idempotencyKey: key, input: jsonToValue({}) },
        { headers: { "nexusflow-forwarded-by": "another-replica" } },
      ),
    );
    assert.equal(keyMoving.code, Code.Unavailable);
    assert.match(keyMoving.message, /idempotency key is moving/);

    const empty = await refusal(client(b).cancelRun({ runId: "" }));
    assert.equal(empty.code, Code.InvalidArgument);
    const malformed = await refusal(client(b).signalRun({ runId: "not-a-run", name: "go" }));
    assert.equal(malformed.code, Code.InvalidArgument);
    const noName = await refusal(client(b).signalRun({ runId: queued, name: "" }));
    assert.equal(noName.code, Code.InvalidArgument);
    const noStep = await refusal(client(b).explainPending({ runId: queued, stepId: "" }));
    assert.equal(noStep.code, Code.InvalidArgument);
    assert.equal(forwarded(b), sent, "nothing was forwarded");

    // An answer of the owner comes back as it is: NOT_FOUND naming the step.
    const unknownStep = await refusal(client(b).explainPending({ runId: queued, stepId: "nope" }));
    assert.equal(unknownStep.code, Code.NotFound);
    assert.match(unknownStep.message, /has no step "nope"/);
    assert.equal(forwarded(b), sent + 1);

    // The router's own cancel (for this replica's loops): nothing to do where the run is held,
    // the owner's CancelRun elsewhere, with a deadline of its own.
    assert.equal(await a.replicaRouter?.cancelRun(queued, "by A's router"), undefined);
    const byRouter = await b.replicaRouter?.cancelRun(queued, "by B's router");
    assert.equal(byRouter?.run?.status, RunStatus.CANCELLED);
    assert.equal(a.engine.isActive(queued), false);
  });

  it("answers an idempotency key with one run whichever replica is asked, even both at once", T, async () => {
    const req = { workflowName: "routing-queued", idempotencyKey: "once-1", input: jsonToValue({ x: 1 }) };
    const first = await client(a).startRun(req);
    const second = await client(b).startRun(req);
    assert.equal(first.created, true);
    assert.equal(second.created, false);
    assert.equal(second.run?.id, first.run?.id);
    for (let i = 0; i < 12; i++) {
      const raced = { ...req, idempotencyKey: `raced-${i}` };
      const [x, y] = await Promise.all([client(a).startRun(raced), client(b).startRun(raced)]);
      assert.equal(x.run?.id, y.run?.id, `key raced-${i} names one run`);
      assert.equal(Number(x.created) + Number(y.created), 1, `key raced-${i} started one run`);
    }
  });

  it(
    "refuses a keyed start while no live replica holds the key's partition (UNAVAILABLE), then starts it once",
    T,
    async () => {
      const count = a.partitions.partitionCount;
      const key = "takeover-1";
      const partition = keyPartition("routing-queued", key, count);
      const holder = a.partitions.epochOf(partition) !== undefined ? a : b;
      // Its owner is gone and its lease not expired yet: nobody answers for the key until a takeover.
      await sql.query(
        "UPDATE partitions SET owner = $1, epoch = epoch + 1, lease_expires_at = now() + interval '1 hour' WHERE partition = $2",
        [randomUUID(), partition],
      );
      await waitFor("the partition lost", () => holder.partitions.epochOf(partition) === undefined);
      const req = { workflowName: "routing-queued", idempotencyKey: key, input: jsonToValue({}) };
      const refused = await refusal(client(holder).startRun(req));
      assert.equal(refused.code, Code.Unavailable, refused.message);
      assert.match(refused.message, /takeover/);
      const { rows } = await sql.query("SELECT 1 FROM workflow_runs WHERE idempotency_key = $1", [key]);
      assert.equal(rows.length, 0, "no run started meanwhile");
      // Taken over (the lease given up): the key's new owner starts one run, answered at both.
      await sql.query("UPDATE partitions SET owner = NULL, lease_expires_at = now() WHERE partition = $1", [
        partition,
      ]);
      await waitFor(
        "the partition taken",
        () => a.partitions.epochOf(partition) !== undefined || b.partitions.epochOf(partition) !== undefined,
      );
      const first = await client(a).startRun(req);
      const again = await client(b).startRun(req);
      assert.deepEqual([first.created, again.created, again.run?.id], [true, false, first.run?.id]);
    },
  );

  it("starts runs at a replica that holds partitions when asked at one that holds none", T, async () => {
    // A third replica takes no partition while the two others hold them all (until they rebalance).
    const c = await replica();
    assert.equal(c.partitions.held().length, 0);
    const heldElsewhere = (id: string | undefined): boolean =>
      id !== undefined && (a.engine.isActive(id) || b.engine.isActive(id));
    const one = await client(c).startRun({ workflowName: "routing-queued", input: jsonToValue({}) });
    assert.ok(heldElsewhere(one.run?.id), "StartRun created the run at an owner");
    const batch = await client(c).startRuns({
      runs: [1, 2, 3].map((i) => ({ workflowName: "routing-queued", input: jsonToValue({ i }) })),
    });
    assert.equal(batch.results.length, 3);
    for (const r of batch.results) {
      assert.equal(r.result.case, "started");
      assert.ok(r.result.case === "started" && heldElsewhere(r.result.value.run?.id));
    }
    // Keyed items go one by one to their keys' owners; an owner's error names the item.
    const mixed = await client(c).startRuns({
      runs: [
        { workflowName: "routing-queued", idempotencyKey: "mixed-0", input: jsonToValue({}) },
        { workflowName: "routing-queued", input: jsonToValue({}) },
        { workflowName: "routing-unknown", idempotencyKey: "mixed-2", input: jsonToValue({}) },
      ],
    });
    assert.deepEqual(
      mixed.results.map((r) => r.result.case),
      ["started", "started", "error"],
    );
    const unknown = mixed.results[2]?.result;
    assert.ok(unknown?.case === "error");
    assert.equal(unknown.value.code, Code.NotFound);
    assert.match(unknown.value.message, /^runs\[2\]: .*routing-unknown/);
    const keyed = { workflowName: "routing-queued", idempotencyKey: "from-c", input: jsonToValue({}) };
    const k1 = await client(c).startRun(keyed);
    const k2 = await client(a).startRun(keyed);
    assert.ok(heldElsewhere(k1.run?.id));
    assert.deepEqual([k1.created, k2.created, k2.run?.id], [true, false, k1.run?.id]);
    const ended = await startAt(a, "routing-queued");
    await client(a).cancelRun({ runId: ended });
    const rerun = await client(c).rerunRun({ runId: ended, fromStep: "step", idempotencyKey: "rerun-c" });
    assert.ok(heldElsewhere(rerun.run?.id), "RerunRun started the new run at an owner");
    const rerunAgain = await client(b).rerunRun({
      runId: ended,
      fromStep: "step",
      idempotencyKey: "rerun-c",
    });
    assert.deepEqual([rerunAgain.created, rerunAgain.run?.id], [false, rerun.run?.id]);
    const bad = await refusal(client(c).startRun({ workflowName: "" }));
    assert.equal(bad.code, Code.InvalidArgument);
    assert.equal(c.partitions.held().length, 0, "C still holds none: every run above was forwarded");
    await stopReplica(c);
  });

  it(
    "keeps a WatchRun at the other replica going, every update once, across a clean stop of the owner",
    T,
    async () => {
      const runId = await startAt(a, "routing-wait");
      const messages: WatchRunResponse[] = [];
      const watching = (async () => {
        for await (const m of client(b).watchRun({ runId })) messages.push(m);
      })();
      const statusOf = (m: WatchRunResponse | undefined, step: string): TaskStatus | undefined =>
        m?.run?.tasks.find((t) => t.stepId === step)?.status;
      await waitFor("the first snapshot", () => messages.length > 0);
      await client(b).signalRun({ runId, name: "go" });
      await waitFor("the gate's success, through A", () =>
        messages.some((m) => statusOf(m, "gate") === TaskStatus.SUCCEEDED),
      );

      await stopReplica(a);
      await waitFor("B holds every partition", () => b.partitions.held().length === 16);
      await waitFor("the run held by B", () => b.engine.isActive(runId));
      await client(b).signalRun({ runId, name: "done" });
      await watching;

      const last = messages.at(-1);
      assert.equal(last?.run?.status, RunStatus.SUCCEEDED, "the stream ended with the run's end");
      // A message changes a task, or the run's status (its end may come in a commit after its last task's).
      const states = messages.map((m) =>
        JSON.stringify([
          m.run?.status,
          m.run?.tasks.map((t) => [t.id, t.status, t.attempts.length, t.pendingReason]),
        ]),
      );
      for (let i = 1; i < states.length; i++)
        assert.notEqual(states[i], states[i - 1], `message ${i} repeats message ${i - 1}`);
      const successes = (step: string): number =>
        messages.filter(
          (m, i) =>
            statusOf(m, step) === TaskStatus.SUCCEEDED &&
            statusOf(messages[i - 1], step) !== TaskStatus.SUCCEEDED,
        ).length;
      assert.equal(successes("gate"), 1, "the gate's success was seen once");
      assert.equal(successes("after"), 1, "the second wait's success was seen once");
    },
  );
});
