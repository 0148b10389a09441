/**
 * A parent's rollback reaching its children, on a real scheduler, PostgreSQL and an in-process
 * executor: a child that succeeded rolls back (its own compensations, before the parent's
 * upstream ones) and GetRun shows it COMPENSATED; a restart while the child rolls back, and a
 * crash between the parent's compensation and its child's; a parent with five children running
 * cancelled with compensation (all cancelled, all rolled back as declared, then the parent);
 * onParentCancel "abandon"; a child whose rollback fails; retention keeping children that may
 * still roll back.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { valueToJson } from "@nexusflow/common";
import { FilesystemArtifactStore } from "@nexusflow/common/artifacts";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { TaskError, type Executor } from "@nexusflow/executor";
import { RunStatus, TaskKind, TaskStatus, type Run } from "@nexusflow/gen";
import pg from "pg";
import { childRunId } from "../../src/core/children.js";
import { RunRetention } from "../../src/persistence/retention.js";
import type { Scheduler } from "../../src/scheduler.js";
import {
  outboxEvents,
  registerSpec,
  startRunOf,
  startTestDatabase,
  startTestExecutor,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

type Client = ReturnType<typeof workflowClient>;

function compensationOf(run: Run, stepId: string) {
  const t = run.tasks.find((x) => x.stepId === stepId && x.kind === TaskKind.COMPENSATION);
  assert.ok(t, `compensation of ${stepId}`);
  return t;
}

describe("a parent's rollback reaches its children", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler | undefined;
  let executor: Executor | undefined;
  let client: Client;
  let sql: pg.Client;
  /** Handler calls in the order they ran: "pay:k", "refund:k", "release:k". */
  const calls: string[] = [];
  /** Refunds of these keys wait until released. */
  const held = new Map<string, { open: Promise<void>; release: () => void; reached: boolean }>();

  function hold(key: string): { release: () => void; reached: () => boolean } {
    let release = (): void => undefined;
    const open = new Promise<void>((resolve) => (release = resolve));
    const h = { open, release, reached: false };
    held.set(key, h);
    return { release, reached: () => h.reached };
  }

  async function attach(): Promise<Executor> {
    assert.ok(scheduler);
    return startTestExecutor(
      scheduler,
      {
        executorId: `rollback-${Math.random().toString(36).slice(2)}`,
        slots: 32,
        drainTimeoutMs: 500,
        builtins: false,
        reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
      },
      (e) => {
        e.register("rb.pay", (input: { key: string; amount?: number }) => {
          calls.push(`pay:${input.key}`);
          return { paid: input.amount ?? 0 };
        })
          .register("rb.refund", async (input: { key: string }) => {
            const h = held.get(input.key);
            if (h !== undefined) {
              h.reached = true;
              await h.open;
            }
            calls.push(`refund:${input.key}`);
            if (input.key.startsWith("broken")) throw TaskError.terminal("BANK_DOWN", "the bank is down");
            return { refunded: input.key };
          })
          .register("rb.reserve", (input: { key: string }) => {
            calls.push(`reserve:${input.key}`);
            return { reserved: input.key };
          })
          .register("rb.release", (input: { key: string }) => {
            calls.push(`release:${input.key}`);
            return null;
          })
          .register("rb.boom", () => {
            throw TaskError.terminal("NO_TRUCK", "no truck today");
          });
      },
    );
  }

  const register = (spec: Record<string, unknown>): Promise<void> => registerSpec(client, spec);
  const start = (workflowName: string, input: unknown): Promise<string> =>
    startRunOf(client, workflowName, input);

  async function status(runId: string): Promise<RunStatus | undefined> {
    return (await client.getRun({ runId })).run?.status;
  }

  async function restart(between?: () => Promise<void>): Promise<void> {
    await scheduler?.stop();
    await executor?.stop("the scheduler went away");
    await between?.();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    executor = await attach();
  }

  /** The order of `first` and `then` in the calls (both must be there). */
  function ranBefore(first: string, then: string): void {
    const a = calls.indexOf(first);
    const b = calls.indexOf(then);
    assert.ok(a >= 0 && b >= 0, `${first} and ${then} ran: ${calls.join(", ")}`);
    assert.ok(a < b, `${first} before ${then}: ${calls.join(", ")}`);
  }

  /** A charge step that refunds its key when rolled back. */
  const pay = {
    id: "pay",
    type: "rb.pay",
    input: { key: "{{ input.key }}", amount: "{{ input.amount }}" },
    compensate: { type: "rb.refund", input: { key: "{{ step.input.key }}" } },
  };

  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    executor = await attach();
    await register({ name: "rb-charge", version: 1, steps: [pay], output: "{{ steps.pay.output }}" });
    await register({
      name: "rb-charge-wait",
      version: 1,
      steps: [pay, { id: "hold", dependsOn: ["pay"], wait: { signal: "go" } }],
      output: "{{ steps.pay.output }}",
    });
    for (const policy of ["cancel", "abandon"])
      await register({
        name: `rb-order-${policy}`,
        version: 1,
        steps: [
          {
            id: "reserve",
            type: "rb.reserve",
            input: { key: "{{ input.key }}" },
            compensate: { type: "rb.release", input: { key: "{{ step.input.key }}" } },
          },
          {
            id: "charge",
            dependsOn: ["reserve"],
            workflow: {
              name: "rb-charge",
              input: { key: "{{ input.key }}", amount: "{{ input.amount }}" },
              onParentCancel: policy,
            },
          },
          { id: "ship", type: "rb.boom", dependsOn: ["charge"], retry: { maxAttempts: 1 } },
        ],
      });
    await register({
      name: "rb-five",
      version: 1,
      steps: [
        {
          id: "reserve",
          type: "rb.reserve",
          input: { key: "{{ input.key }}" },
          compensate: { type: "rb.release", input: { key: "{{ step.input.key }}" } },
        },
        ...[1, 2, 3, 4, 5].map((i) => ({
          id: `c${i}`,
          dependsOn: ["reserve"],
          workflow: { name: "rb-charge-wait", input: { key: `{{ input.key }}-${i}`, amount: i } },
        })),
      ],
    });
  });

  after(async () => {
    await executor?.stop("test over");
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
  });

  it("a child that succeeded rolls back before the parent's upstream compensation; GetRun shows it COMPENSATED", async () => {
    const runId = await start("rb-order-cancel", { key: "o1", amount: 5 });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.COMPENSATED, JSON.stringify(run.error));
    assert.equal(run.error?.type, "NO_TRUCK");
    const childId = childRunId(runId, "charge");
    ranBefore("refund:o1", "release:o1");
    assert.deepEqual(
      calls.filter((c) => c.endsWith(":o1")),
      ["reserve:o1", "pay:o1", "refund:o1", "release:o1"],
    );
    // The step's compensation: the child's rollback, linked to it.
    const rollback = compensationOf(run, "charge");
    assert.equal(rollback.status, TaskStatus.SUCCEEDED);
    assert.equal(rollback.childRunId, childId);
    assert.deepEqual(valueToJson(rollback.input), { childRunIds: [childId] });
    assert.deepEqual(valueToJson(rollback.output), { children: { COMPENSATED: 1 } });
    const { run: child } = await client.getRun({ runId: childId });
    assert.equal(child?.status, RunStatus.COMPENSATED);
    assert.equal(child?.parentRunId, runId);
    assert.match(
      child?.error?.message ?? "",
      new RegExp(`parent run ${runId} rolls back step charge: .*no truck`),
    );
    const refund = child?.tasks.find((t) => t.kind === TaskKind.COMPENSATION);
    assert.equal(refund?.status, TaskStatus.SUCCEEDED);
    assert.deepEqual(valueToJson(refund?.output), { refunded: "o1" });
    assert.ok(child?.endTime !== undefined, "ended again");

    // Lifecycle events: the child ended, rolled back for its parent, ended again; the parent's
    // compensation waited for it.
    const events = await outboxEvents(sql, [runId, childId]);
    const ofChild = events.filter((e) => e.runId === childId);
    const ends = ofChild.filter((e) => e.type === "runCompleted" || e.type === "runCompensating");
    assert.deepEqual(
      ends.map((e) => e.type),
      ["runCompleted", "runCompensating", "runCompleted"],
    );
    const [succeeded, compensating, compensated] = ends.map((e) => e.message.event);
    assert.equal(succeeded?.case === "runCompleted" && succeeded.value.status, RunStatus.SUCCEEDED);
    assert.equal(compensating?.case === "runCompensating" && compensating.value.parentRunId, runId);
    assert.equal(compensated?.case === "runCompleted" && compensated.value.status, RunStatus.COMPENSATED);
    assert.deepEqual(
      ofChild.map((e) => e.sequence),
      ofChild.map((_, i) => i + 1),
      "one sequence without gaps across both ends",
    );
    const waiting = events.find(
      (e) =>
        e.runId === runId &&
        e.message.event.case === "taskWaiting" &&
        e.message.event.value.kind === TaskKind.COMPENSATION,
    );
    assert.ok(waiting?.message.event.case === "taskWaiting");
    assert.equal(waiting.message.event.value.childRunId, childId);
    assert.equal(waiting.message.event.value.stepId, "charge");
  });

  it("onParentCancel abandon leaves a child that succeeded alone when the parent rolls back", async () => {
    const runId = await start("rb-order-abandon", { key: "o2", amount: 1 });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.COMPENSATED);
    assert.equal(
      run.tasks.some((t) => t.stepId === "charge" && t.kind === TaskKind.COMPENSATION),
      false,
    );
    assert.equal(await status(childRunId(runId, "charge")), RunStatus.SUCCEEDED);
    assert.deepEqual(
      calls.filter((c) => c.endsWith(":o2")),
      ["reserve:o2", "pay:o2", "release:o2"],
    );
  });

  it(
    "a restart while the child rolls back: the parent's rollback goes on and waits for it",
    { timeout: 60_000 },
    async () => {
      const gate = hold("o3");
      const runId = await start("rb-order-cancel", { key: "o3", amount: 2 });
      const childId = childRunId(runId, "charge");
      await waitFor("the child's refund to start", () => gate.reached() || undefined);
      assert.equal(await status(childId), RunStatus.COMPENSATING);
      const why = await client.explainPending({ runId, stepId: "charge", compensation: true });
      assert.equal(why.status, TaskStatus.WAITING);
      const g = why.gates[0]?.gate;
      assert.ok(g?.case === "childRun");
      assert.deepEqual([g.value.runId, g.value.compensating], [childId, true]);
      assert.equal(why.pendingReason, `waiting for child run ${childId} (rb-charge) to roll back`);
      await restart(() => Promise.resolve(gate.release()));
      const run = await waitForRun(client, runId);
      assert.equal(run.status, RunStatus.COMPENSATED, JSON.stringify(run.error));
      assert.equal(await status(childId), RunStatus.COMPENSATED);
      ranBefore("refund:o3", "release:o3");
      assert.equal(calls.filter((c) => c === "release:o3").length, 1);
    },
  );

  it(
    "a crash between the parent's compensation and its child's: the child rolls back after the restart",
    { timeout: 60_000 },
    async () => {
      const gate = hold("o4");
      const runId = await start("rb-order-cancel", { key: "o4", amount: 3 });
      const childId = childRunId(runId, "charge");
      await waitFor("the child's refund to start", () => gate.reached() || undefined);
      await restart(async () => {
        // As if the process died once the parent's compensation was WAITING (committed) but before
        // the child's COMPENSATING commit: the child as it ended, without its rollback's rows and
        // events (that commit held them all).
        const ended = (await outboxEvents(sql, [childId])).find(
          (e) =>
            e.message.event.case === "runCompleted" && e.message.event.value.status === RunStatus.SUCCEEDED,
        );
        assert.ok(ended);
        await sql.query("DELETE FROM outbox_events WHERE run_id = $1 AND first_sequence > $2", [
          childId,
          ended.sequence,
        ]);
        await sql.query("DELETE FROM task_runs WHERE run_id = $1 AND kind = 'COMPENSATION'", [childId]);
        await sql.query(
          "UPDATE workflow_runs SET status = 'SUCCEEDED', ended_at = now(), error = NULL, event_seq = $2 WHERE id = $1",
          [childId, ended.sequence],
        );
        held.delete("o4");
        gate.release();
      });
      const run = await waitForRun(client, runId);
      assert.equal(run.status, RunStatus.COMPENSATED, JSON.stringify(run.error));
      assert.equal(await status(childId), RunStatus.COMPENSATED);
      const { rows } = await sql.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM task_runs WHERE run_id = $1 AND kind = 'COMPENSATION'",
        [childId],
      );
      assert.equal(rows[0]?.n, 1, "one refund task (the one after the restart)");
      ranBefore("refund:o4", "release:o4");
    },
  );

  it(
    "cancel of a parent with five children running cancels all of them and compensates as declared",
    { timeout: 60_000 },
    async () => {
      const runId = await start("rb-five", { key: "five" });
      const children = [1, 2, 3, 4, 5].map((i) => childRunId(runId, `c${i}`));
      // Each child charged and waits for its signal.
      await waitFor("five children charged and waiting", async () => {
        for (const id of children) {
          const child = (await client.getRun({ runId: id }).catch(() => undefined))?.run;
          const waiting = child?.tasks.find((t) => t.stepId === "hold")?.status === TaskStatus.WAITING;
          if (child?.status !== RunStatus.RUNNING || !waiting) return undefined;
        }
        return true;
      });
      await client.cancelRun({ runId, reason: "customer left", compensate: true });
      const run = await waitForRun(client, runId);
      assert.equal(run.status, RunStatus.COMPENSATED, JSON.stringify(run.error));
      for (const [i, id] of children.entries()) {
        const child = (await client.getRun({ runId: id })).run;
        assert.equal(child?.status, RunStatus.COMPENSATED, `child c${i + 1}`);
        assert.equal(child?.tasks.find((t) => t.stepId === "hold")?.status, TaskStatus.CANCELLED);
        assert.match(child?.error?.message ?? "", /customer left/);
        const step = run.tasks.find((t) => t.stepId === `c${i + 1}` && t.kind === TaskKind.STEP);
        assert.equal(step?.status, TaskStatus.CANCELLED);
        const rollback = compensationOf(run, `c${i + 1}`);
        assert.equal(rollback.status, TaskStatus.SUCCEEDED);
        assert.equal(rollback.childRunId, id);
      }
      const refunds = calls.filter((c) => c.startsWith("refund:five-")).sort();
      assert.deepEqual(
        refunds,
        [1, 2, 3, 4, 5].map((i) => `refund:five-${i}`),
        "each child's charge refunded once",
      );
      const release = calls.indexOf("release:five");
      assert.ok(release >= 0);
      for (const r of refunds) assert.ok(calls.indexOf(r) < release, `${r} before the parent's release`);
      assert.equal(calls.filter((c) => c === "release:five").length, 1);
    },
  );

  it("a child whose rollback fails fails the step's compensation with CHILD_FAILED: COMPENSATION_FAILED", async () => {
    const runId = await start("rb-order-cancel", { key: "broken-1", amount: 4 });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.COMPENSATION_FAILED);
    const childId = childRunId(runId, "charge");
    assert.equal(await status(childId), RunStatus.COMPENSATION_FAILED);
    const rollback = compensationOf(run, "charge");
    assert.equal(rollback.status, TaskStatus.FAILED);
    assert.equal(rollback.error?.type, TaskErrorType.CHILD_FAILED);
    assert.match(rollback.error?.message ?? "", new RegExp(`child run ${childId} ended COMPENSATION_FAILED`));
    assert.equal((valueToJson(rollback.error?.details) as { childRunId: string }).childRunId, childId);
    // The other compensations still run.
    assert.ok(calls.includes("release:broken-1"));
  });
  it("a child whose stored definition no longer compiles fails the step's compensation (CHILD_FAILED), it is not read again for ever", async () => {
    await register({ name: "rb-charge-stale", version: 1, steps: [pay] });
    await register({
      name: "rb-order-stale",
      version: 1,
      steps: [
        { id: "charge", workflow: { name: "rb-charge-stale", input: "{{ input }}" } },
        { id: "gate", dependsOn: ["charge"], wait: { signal: "go" } },
        { id: "ship", type: "rb.boom", dependsOn: ["gate"], retry: { maxAttempts: 1 } },
      ],
    });
    const runId = await start("rb-order-stale", { key: "stale-1", amount: 3 });
    const childId = childRunId(runId, "charge");
    await waitFor("the child succeeded", async () => (await status(childId)) === RunStatus.SUCCEEDED);
    // A validation rule added since the child's workflow was registered refuses its stored spec:
    // its rows can be read, its workflow no longer compiles (a restart empties the cache).
    await restart(async () => {
      await sql.query(
        `UPDATE workflow_definitions SET spec = jsonb_set(spec, '{steps,0,type}', '"Not A Type"') WHERE name = 'rb-charge-stale'`,
      );
    });
    await client.signalRun({ runId, name: "go" });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.COMPENSATION_FAILED);
    const rollback = compensationOf(run, "charge");
    assert.equal(rollback.status, TaskStatus.FAILED);
    assert.equal(rollback.error?.type, TaskErrorType.CHILD_FAILED);
    assert.match(
      rollback.error?.message ?? "",
      new RegExp(
        `child run ${childId} could not be rolled back: DEFINITION_INVALID: .*rb-charge-stale version 1`,
      ),
    );
    assert.equal(await status(childId), RunStatus.SUCCEEDED, "the child stays as it was");
    assert.ok(!calls.includes("refund:stale-1"));
  });
  it("retention keeps a child, and its own child, while an ancestor is active to roll them back", async () => {
    await register({
      name: "rb-mid",
      version: 1,
      steps: [{ id: "inner", workflow: { name: "rb-charge", input: "{{ input }}" } }],
    });
    await register({
      name: "rb-root",
      version: 1,
      steps: [
        { id: "mid", workflow: { name: "rb-mid", input: "{{ input }}" } },
        { id: "later", dependsOn: ["mid"], wait: { signal: "go" } },
      ],
    });
    const runId = await start("rb-root", { key: "kept", amount: 1 });
    const mid = childRunId(runId, "mid");
    const inner = childRunId(mid, "inner");
    await waitFor("the root waiting, its children ended", async () => {
      const r = (await client.getRun({ runId })).run;
      return r?.tasks.find((t) => t.stepId === "later")?.status === TaskStatus.WAITING || undefined;
    });
    const longAgo = new Date(Date.now() - 40 * 86_400_000);
    await sql.query(
      "UPDATE workflow_runs SET created_at = $2, ended_at = $2::timestamptz + interval '1 minute' WHERE id = ANY($1::uuid[])",
      [[mid, inner], longAgo],
    );
    const root = await mkdtemp(join(tmpdir(), "nf-rollback-retention-"));
    const pool = new pg.Pool({ connectionString: db.url, max: 2 });
    try {
      const retention = new RunRetention({
        pool,
        store: new FilesystemArtifactStore({ root }),
        log: testLogger("retention"),
        retentionMs: 30 * 86_400_000,
        isActive: (id) => scheduler?.engine.isActive(id) ?? false,
      });
      const stored = async () =>
        (
          await sql.query<{ id: string }>("SELECT id FROM workflow_runs WHERE id = ANY($1::uuid[])", [
            [mid, inner],
          ])
        ).rows.length;
      await retention.purge();
      assert.equal(await stored(), 2, "kept: the root is active");
      await client.signalRun({ runId, name: "go" });
      assert.equal((await waitForRun(client, runId)).status, RunStatus.SUCCEEDED);
      await retention.purge();
      assert.equal(await stored(), 0, "deleted once no ancestor is active");
    } finally {
      await pool.end();
      await rm(root, { recursive: true, force: true });
    }
  });
});
