/**
 * A stored workflow definition that this version's validation refuses (a rule added since it was
 * registered) must not keep the scheduler from starting: its runs end FAILED with
 * DEFINITION_INVALID when they are loaded (at start-up, or a parked one when something wakes it),
 * with their event, and every other run loads as usual; StartRun of that version answers
 * FAILED_PRECONDITION, and a child workflow step asking for it fails (CHILD_START_FAILED).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import { RunStatus, TaskStatus } from "@nexusflow/gen";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import {
  registerSpec,
  startTestDatabase,
  startTestScheduler,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

describe("a stored definition that no longer passes validation", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler | undefined;
  /** The test's own connections to the database (beside the schedulers'). */
  let sql: pg.Pool;
  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Pool({ connectionString: db.url, max: 2 });
  });
  after(async () => {
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
  });

  /** Rewrites a stored spec as if a validation rule had been added since it was registered. */
  const corrupt = async (name: string, path: string, value: unknown): Promise<void> => {
    await sql.query(
      `UPDATE workflow_definitions SET spec = jsonb_set(spec, $2::text[], $3::jsonb) WHERE name = $1`,
      [name, path.split("."), JSON.stringify(value)],
    );
  };

  it("fails its runs when the scheduler loads them, and loads the others", async () => {
    scheduler = await startTestScheduler(db.url);
    let client = workflowClient(scheduler.address);
    for (const name of ["kept", "broken"])
      await client.registerWorkflow({
        definition: {
          case: "specJson",
          value: JSON.stringify({ name, version: 1, steps: [{ id: "a", type: "nobody-serves" }] }),
        },
      });
    const start = async (workflowName: string): Promise<string> => {
      const { run } = await client.startRun({ workflowName, input: jsonToValue({}) });
      assert.ok(run);
      return run.id;
    };
    const kept = await start("kept");
    const broken = await start("broken");
    await scheduler.stop();
    scheduler = undefined;

    await corrupt("broken", "steps.0.type", "Not A Type");

    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    assert.ok(scheduler.engine.activeRun(kept), "the other run is loaded");
    assert.equal(scheduler.engine.activeRun(broken), undefined);
    const { run } = await client.getRun({ runId: broken });
    assert.equal(run?.status, RunStatus.FAILED);
    assert.equal(run?.error?.type, "DEFINITION_INVALID");
    assert.match(run?.error?.message ?? "", /workflow broken version 1 .*no longer passes validation/);
    assert.match(run?.error?.message ?? "", /\$\.steps\[0\]\.type/);
    assert.deepEqual(
      run?.tasks.map((t) => TaskStatus[t.status]),
      ["CANCELLED"],
    );
    // Its lifecycle ends with the failure, as for any run: one outbox row more than before.
    const { rows } = await sql.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM outbox_events WHERE run_id = $1 AND first_sequence > 1",
      [broken],
    );
    assert.equal(rows[0]?.n, 1, "its runCompleted event, after the events of its start");

    // Starting that version again: FAILED_PRECONDITION, naming the problem.
    await assert.rejects(
      client.startRun({ workflowName: "broken", input: jsonToValue({}) }),
      (e: unknown) =>
        e instanceof ConnectError &&
        e.code === Code.FailedPrecondition &&
        /no longer passes validation \(\$\.steps\[0\]\.type: .*\); register a version that does$/.test(
          e.message,
        ),
    );
  });
  it("fails a parked run of it when something wakes it", async () => {
    await scheduler?.stop();
    scheduler = await startTestScheduler(db.url, { parking: { parkAfterMs: 100, wakePollMs: 60_000 } });
    let client = workflowClient(scheduler.address);
    await registerSpec(client, {
      name: "asleep",
      version: 1,
      steps: [{ id: "approve", wait: { signal: "approval", timeout: "24h" } }],
    });
    const { run } = await client.startRun({ workflowName: "asleep", input: jsonToValue({}) });
    assert.ok(run);
    const id = run.id;
    const parkedRow = async () =>
      (await sql.query("SELECT 1 FROM parked_runs WHERE run_id = $1", [id])).rowCount === 1;
    await waitFor(
      "the run parked",
      async () => (await parkedRow()) && scheduler?.engine.isActive(id) === false,
    );
    await scheduler.stop();
    scheduler = undefined;
    await corrupt("asleep", "steps.0.wait.signal", "");
    // Start-up leaves parked runs parked; the signal loads it.
    scheduler = await startTestScheduler(db.url, { parking: { parkAfterMs: 100, wakePollMs: 60_000 } });
    client = workflowClient(scheduler.address);
    await client
      .signalRun({ runId: id, name: "approval", payload: jsonToValue("yes") })
      .catch(() => undefined);
    const ended = await waitForRun(client, id);
    assert.equal(ended.status, RunStatus.FAILED);
    assert.equal(ended.error?.type, "DEFINITION_INVALID");
    assert.equal(await parkedRow(), false);
  });
  it("fails a child workflow step whose child's definition it refuses (CHILD_START_FAILED), not for ever WAITING", async () => {
    await scheduler?.stop();
    scheduler = await startTestScheduler(db.url);
    let client = workflowClient(scheduler.address);
    await registerSpec(client, {
      name: "stale-child",
      version: 1,
      steps: [{ id: "a", type: "nobody-serves" }],
    });
    await registerSpec(client, {
      name: "stale-parent",
      version: 1,
      steps: [{ id: "c", workflow: { name: "stale-child", version: 1 } }],
    });
    await scheduler.stop();
    scheduler = undefined;
    await corrupt("stale-child", "steps.0.type", "Not A Type");
    // Restarted: nothing of the child's definition is cached.
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    const { run } = await client.startRun({ workflowName: "stale-parent", input: jsonToValue({}) });
    assert.ok(run);
    const ended = await waitForRun(client, run.id);
    assert.equal(ended.status, RunStatus.FAILED);
    const step = ended.tasks.find((t) => t.stepId === "c");
    assert.equal(step?.status, TaskStatus.FAILED);
    assert.equal(step?.error?.type, "CHILD_START_FAILED");
    assert.match(
      step?.error?.message ?? "",
      /workflow stale-child v1: .*no longer passes validation \(\$\.steps\[0\]\.type/,
    );
  });
});
