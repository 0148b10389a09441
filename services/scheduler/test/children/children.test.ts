/**
 * Child workflows on a real scheduler and PostgreSQL (no executor: the children here are wait and
 * sleep steps, so the tests drive them with signals): a child's output flowing to the next step, a
 * failed child failing its parent, a parent cancelled with five children running (cancel and
 * abandon), a scheduler restart while the child runs and after it ended, a crash between the
 * parent's step and its child's commit, and hostile definitions.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { RunStatus, TaskStatus, type Run } from "@nexusflow/gen";
import pg from "pg";
import { childRunId } from "../../src/core/children.js";
import type { Scheduler } from "../../src/scheduler.js";
import {
  failure,
  startTestDatabase,
  startTestScheduler,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

type Client = ReturnType<typeof workflowClient>;

async function register(client: Client, spec: Record<string, unknown>): Promise<void> {
  await client.registerWorkflow({ definition: { case: "specJson", value: JSON.stringify(spec) } });
}

async function start(client: Client, workflowName: string, input: unknown = {}): Promise<string> {
  const { run } = await client.startRun({ workflowName, input: jsonToValue(input) });
  assert.ok(run);
  return run.id;
}

function task(run: Run, stepId: string) {
  const t = run.tasks.find((x) => x.stepId === stepId);
  assert.ok(t, `task ${stepId}`);
  return t;
}

describe("child workflows", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler | undefined;
  let client: Client;
  let sql: pg.Client;

  /** Waits until `stepId` of `runId` waits on a child that is running (its row RUNNING), and returns the child's id. */
  async function childRunning(runId: string, stepId: string): Promise<string> {
    return waitFor(`the child of ${stepId} of ${runId} running`, async () => {
      const { run } = await client.getRun({ runId });
      const t = run?.tasks.find((x) => x.stepId === stepId);
      if (t?.status !== TaskStatus.WAITING || t.childRunId === "") return undefined;
      const child = await client.getRun({ runId: t.childRunId }).catch(() => undefined);
      return child?.run?.status === RunStatus.RUNNING ? t.childRunId : undefined;
    });
  }

  async function childrenOf(
    runId: string,
  ): Promise<{ id: string; status: string; parent_step_id: string }[]> {
    const { rows } = await sql.query<{ id: string; status: string; parent_step_id: string }>(
      "SELECT id, status, parent_step_id FROM workflow_runs WHERE parent_run_id = $1 ORDER BY parent_step_id",
      [runId],
    );
    return rows;
  }

  async function restart(): Promise<void> {
    await scheduler?.stop();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
  }

  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    // A child that ends with the payload of signal "go" as its output.
    await register(client, {
      name: "charge-card",
      version: 1,
      input: { type: "object", required: ["amount"], properties: { amount: { type: "number" } } },
      steps: [{ id: "charge", wait: { signal: "go" } }],
      output: "{{ steps.charge.output }}",
    });
    // A child that echoes its input after a short sleep.
    await register(client, {
      name: "echo",
      version: 1,
      steps: [{ id: "nap", sleep: { for: "10ms" } }],
      output: "{{ input }}",
    });
    await register(client, {
      name: "checkout",
      version: 1,
      steps: [
        { id: "pay", workflow: { name: "charge-card", version: 1, input: { amount: "{{ input.amount }}" } } },
        { id: "receipt", dependsOn: ["pay"], workflow: { name: "echo", input: "{{ steps.pay.output }}" } },
      ],
      output: { paid: "{{ steps.pay.output }}", receipt: "{{ steps.receipt.output }}" },
    });
  });

  after(async () => {
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
  });

  it("a child's output is its step's output and flows to the next step; GetRun links both ways", async () => {
    const runId = await start(client, "checkout", { amount: 12 });
    const childId = await childRunning(runId, "pay");
    assert.equal(childId, childRunId(runId, "pay"));
    const { run: child } = await client.getRun({ runId: childId });
    assert.equal(child?.parentRunId, runId);
    assert.equal(child?.parentStepId, "pay");
    assert.equal(child?.workflowName, "charge-card");
    assert.deepEqual(valueToJson(child?.input), { amount: 12 });
    // ExplainPending and pending_reason name the child it waits for.
    const why = await client.explainPending({ runId, stepId: "pay" });
    assert.equal(why.status, TaskStatus.WAITING);
    const gate = why.gates[0]?.gate;
    assert.equal(gate?.case, "childRun");
    assert.deepEqual(
      [gate.value.runId, gate.value.workflowName, gate.value.workflowVersion],
      [childId, "charge-card", 1],
    );
    assert.equal(why.pendingReason, `waiting for child run ${childId} (charge-card v1) to end`);
    await client.signalRun({ runId: childId, name: "go", payload: jsonToValue({ charged: 12 }) });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED, JSON.stringify(run.error));
    assert.deepEqual(valueToJson(run.output), { paid: { charged: 12 }, receipt: { charged: 12 } });
    assert.equal(task(run, "pay").childRunId, childId);
    assert.deepEqual(valueToJson(task(run, "pay").output), { charged: 12 });
    const echo = task(run, "receipt").childRunId;
    assert.notEqual(echo, "");
    assert.equal((await client.getRun({ runId: echo })).run?.status, RunStatus.SUCCEEDED);
    assert.equal(run.parentRunId, "", "a root run has no parent");
    assert.deepEqual(
      (await childrenOf(runId)).map((c) => [c.parent_step_id, c.status]),
      [
        ["pay", "SUCCEEDED"],
        ["receipt", "SUCCEEDED"],
      ],
    );
  });

  it("a failed child fails its step with CHILD_FAILED (the child's error in details), and the parent", async () => {
    await register(client, {
      name: "impatient",
      version: 1,
      steps: [{ id: "w", wait: { signal: "never", timeout: "200ms" } }],
    });
    await register(client, {
      name: "fails-through",
      version: 1,
      steps: [{ id: "c", workflow: { name: "impatient" } }],
    });
    const runId = await start(client, "fails-through");
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.FAILED);
    const step = task(run, "c");
    assert.equal(step.error?.type, TaskErrorType.CHILD_FAILED);
    assert.match(step.error?.message ?? "", /ended FAILED: WAIT_TIMEOUT/);
    const details = valueToJson(step.error?.details) as { childRunId: string; status: string };
    assert.equal(details.childRunId, step.childRunId);
    assert.equal(details.status, "FAILED");
    assert.equal(run.error?.type, TaskErrorType.CHILD_FAILED);
    assert.equal((await childrenOf(runId)).length, 1, "not started again");
  });

  it("cancelling a parent with five children running cancels all five; with abandon, none", async () => {
    for (const policy of ["cancel", "abandon"]) {
      const name = `five-${policy}`;
      await register(client, {
        name,
        version: 1,
        steps: [1, 2, 3, 4, 5].map((i) => ({
          id: `c${i}`,
          workflow: { name: "charge-card", input: { amount: i }, onParentCancel: policy },
        })),
      });
      const runId = await start(client, name);
      const children = await Promise.all([1, 2, 3, 4, 5].map((i) => childRunning(runId, `c${i}`)));
      await client.cancelRun({ runId, reason: "customer left" });
      const run = await waitForRun(client, runId);
      assert.equal(run.status, RunStatus.CANCELLED);
      if (policy === "cancel") {
        for (const id of children) {
          const child = await waitForRun(client, id);
          assert.equal(child.status, RunStatus.CANCELLED);
          assert.match(child.error?.message ?? "", new RegExp(`parent run ${runId}`));
        }
      } else {
        // Cancelled children would have been cancelled in the parent's commit, already read.
        const rows = await childrenOf(runId);
        assert.deepEqual(
          rows.map((r) => r.status),
          ["RUNNING", "RUNNING", "RUNNING", "RUNNING", "RUNNING"],
        );
        // They run on: one still completes.
        await client.signalRun({ runId: children[0]!, name: "go", payload: jsonToValue("alone") });
        assert.equal((await waitForRun(client, children[0]!)).status, RunStatus.SUCCEEDED);
      }
    }
  });

  it("a parent whose child runs across a scheduler restart completes with it", async () => {
    const runId = await start(client, "checkout", { amount: 3 });
    const childId = await childRunning(runId, "pay");
    await restart();
    await client.signalRun({ runId: childId, name: "go", payload: jsonToValue("after restart") });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    assert.equal(valueToJson(task(run, "pay").output), "after restart");
    assert.equal((await childrenOf(runId)).length, 2, "one child per step");
  });

  it("a parent whose child ended while the scheduler was down completes after the restart", async () => {
    const runId = await start(client, "checkout", { amount: 4 });
    const childId = await childRunning(runId, "pay");
    await scheduler?.stop();
    // The child's end committed without its parent's step (the state a crash between them leaves).
    await sql.query(
      `UPDATE workflow_runs SET status = 'SUCCEEDED', output = '"while down"', ended_at = now() WHERE id = $1`,
      [childId],
    );
    await sql.query(`UPDATE task_runs SET status = 'SUCCEEDED', ended_at = now() WHERE run_id = $1`, [
      childId,
    ]);
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED, JSON.stringify(run.error));
    assert.equal(valueToJson(task(run, "pay").output), "while down");
    assert.equal((await childrenOf(runId)).length, 2);
  });

  it("a crash between the parent's step and its child's commit starts exactly one child, under the same id", async () => {
    const runId = await start(client, "checkout", { amount: 5 });
    const childId = await childRunning(runId, "pay");
    await scheduler?.stop();
    // As if the process died after committing the WAITING step but before the child's commit.
    // (the child's rows and events are written in one commit, so none of them exists then)
    await sql.query("DELETE FROM outbox_events WHERE run_id = $1", [childId]);
    await sql.query("DELETE FROM task_runs WHERE run_id = $1", [childId]);
    await sql.query("DELETE FROM workflow_runs WHERE id = $1", [childId]);
    assert.equal((await childrenOf(runId)).length, 0);
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    assert.equal(await childRunning(runId, "pay"), childId, "started again under its id");
    // A second restart with the child running starts none.
    await restart();
    assert.equal(await childRunning(runId, "pay"), childId);
    assert.deepEqual(
      (await childrenOf(runId)).map((c) => c.id),
      [childId],
    );
    await client.signalRun({ runId: childId, name: "go", payload: jsonToValue(5) });
    assert.equal((await waitForRun(client, runId)).status, RunStatus.SUCCEEDED);
  });

  it("hostile definitions: unknown workflow and version, a refused input, depth limit, NaN and bad versions", async () => {
    // Registered although the child does not exist: checked when the step starts.
    await register(client, {
      name: "orphan",
      version: 1,
      steps: [{ id: "c", workflow: { name: "does-not-exist" } }],
    });
    const orphan = await waitForRun(client, await start(client, "orphan"));
    assert.equal(orphan.status, RunStatus.FAILED);
    assert.equal(task(orphan, "c").error?.type, TaskErrorType.CHILD_WORKFLOW_NOT_FOUND);
    assert.equal(task(orphan, "c").childRunId, "");

    await register(client, {
      name: "future-version",
      version: 1,
      steps: [{ id: "c", workflow: { name: "echo", version: 99 } }],
    });
    const future = await waitForRun(client, await start(client, "future-version"));
    assert.equal(task(future, "c").error?.type, TaskErrorType.CHILD_WORKFLOW_NOT_FOUND);

    await register(client, {
      name: "bad-amount",
      version: 1,
      steps: [{ id: "c", workflow: { name: "charge-card", input: { amount: "twelve" } } }],
    });
    const badAmount = await waitForRun(client, await start(client, "bad-amount"));
    assert.equal(task(badAmount, "c").error?.type, TaskErrorType.CHILD_START_FAILED);
    assert.match(task(badAmount, "c").error?.message ?? "", /amount/);

    // A workflow starting itself: 10 levels of children, the 11th refused, failures all the way up.
    await register(client, {
      name: "recursive",
      version: 1,
      steps: [{ id: "again", workflow: { name: "recursive" } }],
    });
    const root = await start(client, "recursive");
    const top = await waitForRun(client, root);
    assert.equal(top.status, RunStatus.FAILED);
    assert.equal(task(top, "again").error?.type, TaskErrorType.CHILD_FAILED);
    const { rows } = await sql.query<{ depth: number; status: string; error: { type: string } }>(
      `WITH RECURSIVE chain AS (
         SELECT id, child_depth, status, error FROM workflow_runs WHERE id = $1
         UNION ALL SELECT r.id, r.child_depth, r.status, r.error FROM workflow_runs r JOIN chain c ON r.parent_run_id = c.id)
       SELECT child_depth AS depth, status, error FROM chain ORDER BY child_depth`,
      [root],
    );
    assert.deepEqual(
      rows.map((r) => r.depth),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    assert.ok(rows.every((r) => r.status === "FAILED"));
    const deepest = await client.getRun({ runId: deepestOf(root, rows.length - 1) });
    assert.equal(task(deepest.run!, "again").error?.type, TaskErrorType.CHILD_DEPTH_EXCEEDED);

    for (const version of ['"3"', "1.5", "0", "-1", "1e400"]) {
      const bad = await failure(
        client.registerWorkflow({
          definition: {
            case: "specJson",
            value: `{"name":"bad-version","version":1,"steps":[{"id":"c","workflow":{"name":"echo","version":${version}}}]}`,
          },
        }),
      );
      assert.equal(bad.code, Code.InvalidArgument, version);
      assert.match(bad.message, /steps\[0\]\.workflow\.version/, version);
    }
    const nan = await failure(
      client.registerWorkflow({
        definition: {
          case: "specJson",
          value:
            '{"name":"bad-version","version":1,"steps":[{"id":"c","workflow":{"name":"echo","version":NaN}}]}',
        },
      }),
    );
    assert.equal(nan.code, Code.InvalidArgument, "NaN is no JSON");
    const policy = await failure(
      client.registerWorkflow({
        definition: {
          case: "spec",
          value: {
            name: "bad-policy",
            version: 1,
            steps: [{ id: "c", workflow: { name: "echo", version: -2, onParentCancel: "orphan" } }],
          },
        },
      }),
    );
    assert.equal(policy.code, Code.InvalidArgument);
    assert.match(policy.message, /steps\[0\]\.workflow\.version/);
    assert.match(policy.message, /steps\[0\]\.workflow\.onParentCancel/);
  });
});

/** The id of the run `depth` levels under `root` in a chain of `recursive` runs (step "again"). */
function deepestOf(root: string, depth: number): string {
  let id = root;
  for (let i = 0; i < depth; i++) id = childRunId(id, "again");
  return id;
}
