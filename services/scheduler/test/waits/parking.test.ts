/**
 * Parking on a real scheduler and PostgreSQL (engine/parking.ts): a run that only waits leaves
 * the scheduler's memory (nexusflow_scheduler_runs_active counts the runs in memory) and is loaded
 * back when something happens to it: 5,000 runs parked on a signal wait, a restart in the middle
 * (start-up recovery leaves them in the database), then all signalled and completed; a sleep that
 * wakes a parked run on time; an event, and a child's end, reaching parked runs; a parent's cancel
 * reaching its parked child; a parked run cancelled; GetRun, ListRuns and ExplainPending answering
 * for parked runs.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Client as ConnectClient } from "@connectrpc/connect";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { RunStatus, type EventService, RunView, TaskStatus } from "@nexusflow/gen";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import {
  eventClient,
  registerSpec,
  startMeteredTestScheduler,
  startRunOf,
  startTestDatabase,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

type Client = ReturnType<typeof workflowClient>;

const PARKING = { parkAfterMs: 100, wakePollMs: 5000 };

describe("parked runs: waiting runs out of the scheduler's memory", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: Client;
  let events: ConnectClient<typeof EventService>;
  let sql: pg.Client;

  async function restart(): Promise<void> {
    await scheduler.stop();
    scheduler = await startMeteredTestScheduler(db.url, { parking: PARKING });
    client = workflowClient(scheduler.address);
    events = eventClient(scheduler.address);
  }

  /** Whether the run is parked: out of memory, its parked row stored. */
  async function parked(runId: string): Promise<boolean> {
    const { rowCount } = await sql.query(`SELECT 1 FROM parked_runs WHERE run_id = $1`, [runId]);
    return rowCount === 1 && !scheduler.engine.isActive(runId);
  }

  async function waitParked(...runIds: string[]): Promise<void> {
    for (const runId of runIds) await waitFor(`run ${runId} parked`, () => parked(runId));
  }

  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    scheduler = await startMeteredTestScheduler(db.url, { parking: PARKING });
    client = workflowClient(scheduler.address);
    events = eventClient(scheduler.address);
    await registerSpec(client, {
      name: "approval",
      version: 1,
      steps: [{ id: "approve", wait: { signal: "approval", timeout: "24h" } }],
      output: "{{ steps.approve.output }}",
    });
    await registerSpec(client, {
      name: "nap",
      version: 1,
      steps: [{ id: "nap", sleep: { until: "{{ input.until }}" } }],
    });
    await registerSpec(client, {
      name: "order",
      version: 1,
      steps: [
        { id: "paid", wait: { event: "parked.orders.*", filter: "event.payload.orderId == input.orderId" } },
      ],
      output: "{{ steps.paid.output.payload }}",
    });
    await registerSpec(client, {
      name: "parent",
      version: 1,
      steps: [{ id: "child", workflow: { name: "approval" } }],
      output: "{{ steps.child.output }}",
    });
  });

  after(async () => {
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
  });

  it("parks 5,000 runs waiting for a signal, keeps them parked across a restart, and completes them all once signalled", async () => {
    const n = 5000;
    const ids: string[] = [];
    for (let i = 0; i < n; i += 1000) {
      const { results } = await client.startRuns({
        runs: Array.from({ length: Math.min(1000, n - i) }, (_, j) => ({
          workflowName: "approval",
          input: jsonToValue({ i: i + j }),
        })),
      });
      for (const r of results) {
        assert.equal(r.result.case, "started");
        ids.push(r.result.value.run?.id ?? "");
      }
    }
    await waitFor(
      "every run parked",
      async () => {
        const { rows } = await sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM parked_runs`);
        return rows[0]?.n === n && scheduler.engine.stats().activeRuns === 0;
      },
      60_000,
    );
    // Operators see it: the gauge of runs in memory, the counter of runs parked.
    const metrics = await (await fetch(scheduler.metricsUrl ?? "")).text();
    assert.match(metrics, /^nexusflow_scheduler_runs_active 0$/m);
    const parkedTotal = /^nexusflow_scheduler_runs_parked_total (\d+)$/m.exec(metrics)?.[1];
    assert.ok(Number(parkedTotal) >= n, `parked ${parkedTotal}`);
    // GetRun, ListRuns (FULL) and ExplainPending answer from the rows of a parked run.
    const first = ids[0] ?? "";
    const { run } = await client.getRun({ runId: first });
    assert.equal(run?.status, RunStatus.RUNNING);
    assert.equal(run?.tasks[0]?.status, TaskStatus.WAITING);
    const listed = await client.listRuns({ workflowName: "approval", view: RunView.FULL, pageSize: 10 });
    assert.equal(listed.runs.length, 10);
    assert.ok(listed.runs.every((r) => r.status === RunStatus.RUNNING));
    const why = await client.explainPending({ runId: first, stepId: "approve" });
    assert.match(why.pendingReason, /^waiting for signal "approval" until \d{4}-/);

    // ExplainPending loaded the run back; it parks again once quiet.
    await waitParked(first);
    // A restart in the middle: start-up recovery reads none of them.
    await restart();
    assert.equal(scheduler.engine.stats().activeRuns, 0, "no parked run loaded at start-up");
    const pending = [...ids];
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        for (let id = pending.pop(); id !== undefined; id = pending.pop()) {
          const answer = await client.signalRun({ runId: id, name: "approval", payload: jsonToValue(id) });
          assert.equal(answer.stepId, "approve");
        }
      }),
    );
    await waitFor(
      "every run succeeded",
      async () => {
        const { rows } = await sql.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM workflow_runs WHERE id = ANY($1::uuid[]) AND status = 'SUCCEEDED'`,
          [ids],
        );
        return rows[0]?.n === n;
      },
      120_000,
    );
    const done = await waitForRun(client, ids[n - 1] ?? "");
    assert.equal(valueToJson(done.output), ids[n - 1]);
    const { rows } = await sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM parked_runs`);
    assert.equal(rows[0]?.n, 0, "no parked row left");
    await waitFor("the ended runs gone from memory", () => scheduler.engine.stats().activeRuns === 0);
  });

  it("wakes a parked sleep on time", async () => {
    const until = new Date(Date.now() + 1500);
    const runId = await startRunOf(client, "nap", { until: until.toISOString() });
    await waitParked(runId);
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    const ended = run.tasks[0]?.endTime;
    assert.ok(ended !== undefined);
    const endedMs = Number(ended.seconds) * 1000 + Math.floor(ended.nanos / 1e6);
    assert.ok(endedMs >= until.getTime(), "not before its time");
    // Woken by its own due time, not by the next poll (wakePollMs 5 s): well under the poll, with
    // room for a busy machine.
    assert.ok(endedMs < until.getTime() + 3000, `on time: ${endedMs - until.getTime()} ms late`);
  });

  it("wakes a parked sleep whose time came while the scheduler was down", async () => {
    const until = new Date(Date.now() + 800);
    const runId = await startRunOf(client, "nap", { until: until.toISOString() });
    await waitParked(runId);
    await scheduler.stop();
    await waitFor("its time passed", () => Date.now() > until.getTime() + 100);
    scheduler = await startMeteredTestScheduler(db.url, { parking: PARKING });
    client = workflowClient(scheduler.address);
    events = eventClient(scheduler.address);
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
  });

  it("ends a parked wait for an event with a matching event, and only that run's", async () => {
    const a = await startRunOf(client, "order", { orderId: "A" });
    const b = await startRunOf(client, "order", { orderId: "B" });
    await waitParked(a, b);
    const { event } = await events.publishEvent({
      key: "parked.orders.paid",
      payload: jsonToValue({ orderId: "A", amount: 5 }),
    });
    assert.deepEqual(
      event?.waits.map((w) => w.runId),
      [a],
      "matched in the statement that stored it",
    );
    const run = await waitForRun(client, a);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    assert.deepEqual(valueToJson(run.output), { orderId: "A", amount: 5 });
    // B was loaded to be matched, did not match, and parks again.
    await waitParked(b);
    const other = await client.getRun({ runId: b });
    assert.equal(other.run?.status, RunStatus.RUNNING);
    assert.match(
      other.run?.tasks[0]?.pendingReason ?? "",
      /^waiting for an event matching "parked\.orders\.\*"/,
    );
    // Parked a second time, it is loaded and ends as the first time.
    await events.publishEvent({
      key: "parked.orders.paid",
      payload: jsonToValue({ orderId: "B", amount: 7 }),
    });
    const second = await waitForRun(client, b);
    assert.equal(second.status, RunStatus.SUCCEEDED);
    assert.deepEqual(valueToJson(second.output), { orderId: "B", amount: 7 });
  });

  it("completes a parked parent when its child ends", async () => {
    const parentId = await startRunOf(client, "parent");
    const childId = await waitFor("the child run", async () => {
      const { rows } = await sql.query<{ id: string }>(
        `SELECT id FROM workflow_runs WHERE parent_run_id = $1`,
        [parentId],
      );
      return rows[0]?.id;
    });
    await waitParked(parentId);
    await client.signalRun({ runId: childId, name: "approval", payload: jsonToValue("yes") });
    const run = await waitForRun(client, parentId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    assert.equal(valueToJson(run.output), "yes");
  });

  it("parks a child once its parent is parked, and a parent's cancel reaches its parked child, across a restart", async () => {
    const parentId = await startRunOf(client, "parent");
    const childId = await waitFor("the child run", async () => {
      const { rows } = await sql.query<{ id: string }>(
        `SELECT id FROM workflow_runs WHERE parent_run_id = $1`,
        [parentId],
      );
      return rows[0]?.id;
    });
    await waitParked(parentId, childId);
    await restart();
    assert.equal(scheduler.engine.isActive(parentId), false, "neither is loaded at start-up");
    assert.equal(scheduler.engine.isActive(childId), false);
    const { run } = await client.cancelRun({ runId: parentId, reason: "withdrawn" });
    assert.equal(run?.status, RunStatus.CANCELLED);
    const child = await waitForRun(client, childId);
    assert.equal(child.status, RunStatus.CANCELLED);
  });

  it("cancels a parked run", async () => {
    const runId = await startRunOf(client, "approval");
    await waitParked(runId);
    const { run } = await client.cancelRun({ runId, reason: "not needed" });
    assert.equal(run?.status, RunStatus.CANCELLED);
    assert.equal(run?.tasks[0]?.status, TaskStatus.CANCELLED);
    assert.equal(await parked(runId), false);
  });
});
