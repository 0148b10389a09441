/**
 * Map steps over a child workflow on a real scheduler, PostgreSQL and an in-process executor:
 * one child run per element linked to the parent, outputs in item order, parallelism honoured
 * (read from the children's rows), fail-fast (the running children cancelled and rolled back) and
 * collect (the parent's rollback reaching the children that succeeded), a parent cancelled with
 * its element children running, a scheduler restart in the middle, and definitions refused with
 * the field at fault.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { valueToJson } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { TaskError, type Executor } from "@nexusflow/executor";
import { RunStatus, TaskKind, TaskStatus, type Run } from "@nexusflow/gen";
import pg from "pg";
import { childRunId } from "../../src/core/children.js";
import type { Scheduler } from "../../src/scheduler.js";
import {
  failure,
  mostOverlapping,
  registerSpec,
  startRunOf,
  startTestDatabase,
  startTestExecutor,
  startTestScheduler,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

type Client = ReturnType<typeof workflowClient>;

function task(run: Run, stepId: string, kind = TaskKind.STEP) {
  const t = run.tasks.find((x) => x.stepId === stepId && x.kind === kind);
  assert.ok(t, `task ${stepId}`);
  return t;
}

describe("map steps over a child workflow", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler | undefined;
  let executor: Executor | undefined;
  let client: Client;
  let sql: pg.Client;
  /** Handler calls by key ("double:k", "refund:k"). */
  const calls = new Map<string, number>();
  const count = (key: string) => calls.get(key) ?? 0;
  /** While set, doubles of keys starting with it wait until released. */
  let gate: { prefix: string; open: Promise<void>; release: () => void } | undefined;

  async function attach(): Promise<Executor> {
    assert.ok(scheduler);
    return startTestExecutor(
      scheduler,
      {
        executorId: `child-maps-${Math.random().toString(36).slice(2)}`,
        slots: 64,
        drainTimeoutMs: 500,
        builtins: false,
        reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
      },
      (e) => {
        const called = (key: string) => calls.set(key, count(key) + 1);
        e.register("cm.split", (input: { n: number }) => Array.from({ length: input.n }, (_, i) => i))
          .register("cm.double", async (input: { key: string; x: number; fail?: boolean }) => {
            if (gate !== undefined && input.key.startsWith(gate.prefix)) await gate.open;
            called(`double:${input.key}`);
            if (input.fail === true) throw TaskError.terminal("BROKE", `element ${input.key} broke`);
            return input.x * 2;
          })
          .register("cm.refund", (input: { key: string }) => {
            called(`refund:${input.key}`);
            return null;
          })
          .register("cm.join", (input: number[]) => ({
            count: input.length,
            sum: input.reduce((a, b) => a + b, 0),
          }))
          .register("cm.boom", () => {
            throw TaskError.terminal("BOOM", "boom");
          });
      },
    );
  }

  const register = (spec: Record<string, unknown>): Promise<void> => registerSpec(client, spec);
  const start = (workflowName: string, input: unknown): Promise<string> =>
    startRunOf(client, workflowName, input);

  /** The parent's element children as stored: id, element step, status, and when they ran. */
  async function children(runId: string) {
    const { rows } = await sql.query<{
      id: string;
      step: string;
      status: string;
      created: Date;
      ended: Date | null;
    }>(
      `SELECT id, parent_step_id AS step, status, created_at AS created, ended_at AS ended
         FROM workflow_runs WHERE parent_run_id = $1`,
      [runId],
    );
    return rows.sort((a, b) => index(a.step) - index(b.step));
  }
  const index = (step: string) => Number(/\[(\d+)\]$/.exec(step)?.[1] ?? -1);

  /** The children of `runId` that wait for their signal (their hold step WAITING). */
  async function holding(runId: string): Promise<string[]> {
    const { rows } = await sql.query<{ id: string }>(
      `SELECT r.id FROM workflow_runs r JOIN task_runs t ON t.run_id = r.id
        WHERE r.parent_run_id = $1 AND r.status = 'RUNNING' AND t.step_id = 'hold' AND t.status = 'WAITING'`,
      [runId],
    );
    return rows.map((r) => r.id);
  }

  /** Most children of `runId` that were active at once (their rows' creation and end). */
  async function mostAtOnce(runId: string): Promise<number> {
    return mostOverlapping((await children(runId)).map((c) => ({ start: c.created, end: c.ended })));
  }

  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    executor = await attach();
    // The child: doubles its x (refunded on rollback), and waits for "go" when asked to.
    await register({
      name: "cm-item",
      version: 1,
      steps: [
        {
          id: "d",
          type: "cm.double",
          input: "{{ input }}",
          compensate: { type: "cm.refund", input: { key: "{{ step.input.key }}" } },
          // A lease lost with a restarted scheduler is tried again; a broken element is not.
          retry: { maxAttempts: 3, initialInterval: "10ms" },
        },
        { id: "hold", dependsOn: ["d"], when: "input.wait", wait: { signal: "go" } },
      ],
      output: "{{ steps.d.output }}",
    });
    const fan = (name: string, map: Record<string, unknown>, extra: unknown[] = []) =>
      register({
        name,
        version: 1,
        steps: [
          { id: "split", type: "cm.split", input: { n: "{{ input.n }}" } },
          {
            id: "each",
            dependsOn: ["split"],
            map: { items: "steps.split.output", ...map },
            workflow: {
              name: "cm-item",
              input: {
                key: `${name}-{{ input.tag }}-{{ index }}`,
                x: "{{ item }}",
                fail: "{{ input.failAt == item }}",
                wait: "{{ input.wait }}",
              },
            },
          },
          ...extra,
        ],
        output: extra.length > 0 ? "{{ steps.join.output }}" : "{{ steps.each.output }}",
      });
    await fan("cm-fan", { parallelism: 4 }, [
      { id: "join", type: "cm.join", dependsOn: ["each"], input: "{{ steps.each.output }}" },
    ]);
    await fan("cm-fast", { parallelism: 3 });
    await fan("cm-collect", { parallelism: 2, failure: "collect" });
  });

  after(async () => {
    await executor?.stop("test over");
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
  });

  it("1 -> 20 children -> 1 with parallelism 4: each a child run linked both ways, outputs in item order", async () => {
    const runId = await start("cm-fan", { n: 20, tag: "a", failAt: -1, wait: false });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED, JSON.stringify(run.error));
    assert.deepEqual(valueToJson(run.output), { count: 20, sum: 2 * ((19 * 20) / 2) });
    const each = task(run, "each");
    assert.deepEqual(
      valueToJson(each.output),
      Array.from({ length: 20 }, (_, i) => i * 2),
    );
    assert.equal(each.childRunId, "", "the map step's own task has no child");
    const rows = await children(runId);
    assert.equal(rows.length, 20);
    for (const [i, c] of rows.entries()) {
      assert.deepEqual([c.step, c.status], [`each[${i}]`, "SUCCEEDED"]);
      assert.equal(c.id, childRunId(runId, `each[${i}]`));
      assert.equal(task(run, `each[${i}]`).childRunId, c.id);
    }
    const { run: child } = await client.getRun({ runId: rows[7]!.id });
    assert.deepEqual([child?.parentRunId, child?.parentStepId], [runId, "each[7]"]);
    assert.deepEqual(valueToJson(child?.input), { key: "cm-fan-a-7", x: 7, fail: false, wait: false });
    assert.ok((await mostAtOnce(runId)) <= 4, "at most four children at once");
  });

  it("parallelism with children waiting: runs why counts them running; the rest wait for a place", async () => {
    const runId = await start("cm-fan", { n: 6, tag: "w", failAt: -1, wait: true });
    await waitFor("four children waiting for their signal", async () =>
      (await holding(runId)).length === 4 ? true : undefined,
    );
    const why = await client.explainPending({ runId, stepId: "each" });
    const g = why.gates[0]?.gate;
    assert.ok(g?.case === "mapElements");
    assert.deepEqual(
      [g.value.total, g.value.running, g.value.waitingForParallelism, g.value.parallelism],
      [6, 4, 2, 4],
    );
    assert.equal((await children(runId)).length, 4, "no fifth child while four run");
    // Released one by one as they wait: the next ones start as places free up.
    const run = await waitFor("the run, signalling each child that waits", async () => {
      for (const id of await holding(runId)) await client.signalRun({ runId: id, name: "go" });
      const r = (await client.getRun({ runId })).run;
      return r?.status === RunStatus.SUCCEEDED ? r : undefined;
    });
    assert.deepEqual(
      valueToJson(task(run, "each").output),
      Array.from({ length: 6 }, (_, i) => i * 2),
    );
    assert.ok((await mostAtOnce(runId)) <= 4);
  });

  it("fail-fast: a failed child fails the step, the running children are cancelled and roll back, then the parent", async () => {
    // The failing element's double waits until the two others have doubled and wait.
    let release = (): void => undefined;
    const open = new Promise<void>((resolve) => (release = resolve));
    gate = { prefix: "cm-fast-f-1", open, release };
    const runId = await start("cm-fast", { n: 6, tag: "f", failAt: 1, wait: true });
    await waitFor("two children waiting", async () =>
      (await holding(runId)).length === 2 ? true : undefined,
    );
    gate.release();
    gate = undefined;
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.COMPENSATED, JSON.stringify(run.error));
    const each = task(run, "each");
    assert.equal(each.status, TaskStatus.FAILED);
    assert.equal(each.error?.type, TaskErrorType.MAP_ELEMENT_FAILED);
    assert.equal((valueToJson(each.error?.details) as { index: number }).index, 1);
    const rows = await children(runId);
    assert.deepEqual(
      rows.map((c) => [c.step, c.status]),
      [
        ["each[0]", "COMPENSATED"],
        ["each[1]", "FAILED"],
        ["each[2]", "COMPENSATED"],
      ],
      "no element made after the failure; the running ones rolled back",
    );
    for (const i of [0, 2]) assert.equal(count(`refund:cm-fast-f-${i}`), 1);
    assert.equal(count("refund:cm-fast-f-1"), 0, "the failed child's double never succeeded");
    const rollback = task(run, "each", TaskKind.COMPENSATION);
    assert.equal(rollback.status, TaskStatus.SUCCEEDED);
    assert.deepEqual(valueToJson(rollback.output), { children: { COMPENSATED: 2 } });
  });

  it("collect: every child runs; the step fails listing the failures, and the parent's rollback reaches the others", async () => {
    const runId = await start("cm-collect", { n: 5, tag: "c", failAt: 3, wait: false });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.COMPENSATED, JSON.stringify(run.error));
    const each = task(run, "each");
    assert.equal(each.error?.type, TaskErrorType.MAP_ELEMENTS_FAILED);
    const details = valueToJson(each.error?.details) as { failedCount: number; succeededCount: number };
    assert.deepEqual([details.failedCount, details.succeededCount], [1, 4]);
    const rows = await children(runId);
    assert.deepEqual(
      rows.map((c) => c.status),
      ["COMPENSATED", "COMPENSATED", "COMPENSATED", "FAILED", "COMPENSATED"],
    );
    for (const i of [0, 1, 2, 4]) assert.equal(count(`refund:cm-collect-c-${i}`), 1);
    const rollback = task(run, "each", TaskKind.COMPENSATION);
    assert.deepEqual(valueToJson(rollback.input), {
      childRunIds: [0, 1, 2, 4].map((i) => childRunId(runId, `each[${i}]`)),
    });
  });

  it("cancelling the parent cancels its running element children and starts no more", async () => {
    const runId = await start("cm-fan", { n: 10, tag: "x", failAt: -1, wait: true });
    await waitFor("four children", async () => ((await children(runId)).length === 4 ? true : undefined));
    await client.cancelRun({ runId, reason: "enough" });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.CANCELLED);
    const rows = await waitFor("the children cancelled", async () => {
      const r = await children(runId);
      return r.every((c) => c.status === "CANCELLED") ? r : undefined;
    });
    assert.equal(rows.length, 4, "no element made after the cancel");
    assert.equal(task(run, "each").status, TaskStatus.CANCELLED);
  });

  it(
    "a restart in the middle of a map over children goes on where it stopped",
    { timeout: 60_000 },
    async () => {
      let release = (): void => undefined;
      const open = new Promise<void>((resolve) => (release = resolve));
      gate = { prefix: "cm-fan-r-", open, release };
      const runId = await start("cm-fan", { n: 8, tag: "r", failAt: -1, wait: false });
      await waitFor("four children", async () => ((await children(runId)).length === 4 ? true : undefined));
      await scheduler?.stop();
      gate.release();
      gate = undefined;
      await executor?.stop("the scheduler went away");
      scheduler = await startTestScheduler(db.url);
      client = workflowClient(scheduler.address);
      executor = await attach();
      const run = await waitForRun(client, runId);
      assert.equal(run.status, RunStatus.SUCCEEDED, JSON.stringify(run.error));
      assert.deepEqual(
        valueToJson(task(run, "each").output),
        Array.from({ length: 8 }, (_, i) => i * 2),
      );
      const rows = await children(runId);
      assert.deepEqual(
        rows.map((c) => c.step),
        Array.from({ length: 8 }, (_, i) => `each[${i}]`),
        "one child per element",
      );
    },
  );

  it("definitions refused with the field at fault", async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [
        { id: "m", type: "cm.double", map: { items: "input.xs" }, workflow: { name: "cm-item" } },
        /steps\[0\]\.type/,
      ],
      [
        { id: "m", map: { items: "input.xs" }, workflow: { name: "cm-item" }, input: "{{ item }}" },
        /steps\[0\]\.input/,
      ],
      [
        { id: "m", map: { items: "input.xs" }, workflow: { name: "cm-item", onParentCancel: "x" } },
        /steps\[0\]\.workflow\.onParentCancel/,
      ],
      [
        { id: "m", map: { items: "input.xs", parallelism: 0 }, workflow: { name: "cm-item" } },
        /steps\[0\]\.map\.parallelism/,
      ],
    ];
    for (const [step, path] of cases) {
      const e = await failure(register({ name: "cm-bad", version: 1, steps: [step] }));
      assert.equal(e.code, Code.InvalidArgument, JSON.stringify(step));
      assert.match(e.message, path);
    }
  });
});
