/**
 * Map steps on a real scheduler, PostgreSQL and an in-process executor: a 1 -> 1000 -> 1 map with
 * parallelism 50 (never more than 50 attempts overlapping, read from task_attempts; outputs in
 * order), fail-fast and collect, a scheduler restart in the middle of a map (no finished element
 * runs again), items that are not an array and 10,001 items refused.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import type { Executor } from "@nexusflow/executor";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { RunStatus, TaskStatus, WorkflowSpecSchema, type Run } from "@nexusflow/gen";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import {
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

function task(run: Run, stepId: string) {
  const t = run.tasks.find((x) => x.stepId === stepId);
  assert.ok(t, `task ${stepId}`);
  return t;
}

/** The most attempts of `runId`'s elements of `stepId` that overlapped in time. */
async function maxOverlap(sql: pg.Client, runId: string, stepId: string): Promise<number> {
  const { rows } = await sql.query<{ leased: Date; ended: Date | null }>(
    `SELECT a.leased_at AS leased, a.ended_at AS ended FROM task_attempts a JOIN task_runs t ON t.id = a.task_run_id
     WHERE t.run_id = $1 AND t.step_id LIKE $2`,
    [runId, `${stepId}[%`],
  );
  return mostOverlapping(rows.map((r) => ({ start: r.leased, end: r.ended })));
}

describe("map steps", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler | undefined;
  let executor: Executor | undefined;
  let client: Client;
  let sql: pg.Client;
  const calls = new Map<string, number>();
  let running = 0;
  let mostRunning = 0;
  /** While set, element handlers past the first `holdAfter` calls wait for it. */
  let gate: { after: number; open: Promise<void>; release: () => void } | undefined;
  let elementCalls = 0;

  async function attach(): Promise<Executor> {
    assert.ok(scheduler);
    return startTestExecutor(
      scheduler,
      {
        executorId: `maps-${Math.random().toString(36).slice(2)}`,
        slots: 64,
        drainTimeoutMs: 1000,
        builtins: false,
        reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
      },
      (e) => {
        e.register("mp.split", (input: { n: number }) => Array.from({ length: input.n }, (_, i) => i))
          .register("mp.element", async (input: { key: string; x: number; fail?: boolean }) => {
            calls.set(input.key, (calls.get(input.key) ?? 0) + 1);
            elementCalls++;
            running++;
            mostRunning = Math.max(mostRunning, running);
            try {
              if (gate !== undefined && elementCalls > gate.after) await gate.open;
              // Some work: let other elements overlap with this one.
              await new Promise((resolve) => setImmediate(resolve));
              if (input.fail === true) throw new Error(`element ${input.key} broke`);
              return input.x * 2;
            } finally {
              running--;
            }
          })
          .register("mp.join", (input: number[]) => ({
            count: input.length,
            sum: input.reduce((a, b) => a + b, 0),
          }));
      },
    );
  }

  const register = (spec: Record<string, unknown>): Promise<void> => registerSpec(client, spec);
  const start = (workflowName: string, input: unknown): Promise<string> =>
    startRunOf(client, workflowName, input);

  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    executor = await attach();
    const fan = (
      name: string,
      map: Record<string, unknown>,
      input: unknown,
      retry: unknown = { maxAttempts: 1 },
    ) =>
      register({
        name,
        version: 1,
        steps: [
          { id: "split", type: "mp.split", input: { n: "{{ input.n }}" } },
          {
            id: "each",
            type: "mp.element",
            dependsOn: ["split"],
            map: { items: "steps.split.output", ...map },
            input,
            retry,
          },
          { id: "join", type: "mp.join", dependsOn: ["each"], input: "{{ steps.each.output }}" },
        ],
        output: "{{ steps.join.output }}",
      });
    await fan("mp-fan", { parallelism: 50 }, { key: "fan-{{ index }}", x: "{{ item }}" });
    await fan(
      "mp-fast",
      { parallelism: 5 },
      { key: "fast-{{ index }}", x: "{{ item }}", fail: "{{ item == 7 }}" },
      { maxAttempts: 2, initialInterval: "10ms" },
    );
    await fan(
      "mp-collect",
      { parallelism: 4, failure: "collect" },
      { key: "collect-{{ index }}", x: "{{ item }}", fail: "{{ item == 3 || item == 11 }}" },
    );
    await fan(
      "mp-restart",
      { parallelism: 4 },
      { key: "restart-{{ index }}", x: "{{ item }}" },
      { maxAttempts: 3, initialInterval: "10ms" },
    );
    await register({
      name: "mp-input",
      version: 1,
      steps: [
        {
          id: "each",
          type: "mp.element",
          map: { items: "input.xs" },
          input: { key: "in-{{ index }}", x: 1 },
        },
      ],
    });
  });

  after(async () => {
    await executor?.stop("test over");
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
  });

  it(
    "1 -> 1000 -> 1 with parallelism 50: never more than 50 in flight, outputs in item order",
    { timeout: 120_000 },
    async () => {
      mostRunning = 0;
      const runId = await start("mp-fan", { n: 1000 });
      const run = await waitForRun(client, runId, 100_000);
      assert.equal(run.status, RunStatus.SUCCEEDED, JSON.stringify(run.error));
      assert.deepEqual(valueToJson(run.output), { count: 1000, sum: 2 * ((999 * 1000) / 2) });
      const each = task(run, "each");
      assert.equal(each.status, TaskStatus.SUCCEEDED);
      assert.deepEqual(
        valueToJson(each.output),
        Array.from({ length: 1000 }, (_, i) => i * 2),
      );
      // Every element is a task row of its own, once, listed in index order after its step.
      const elements = run.tasks.filter((t) => t.stepId.startsWith("each["));
      assert.equal(elements.length, 1000);
      assert.deepEqual(
        elements.map((t) => t.stepId),
        Array.from({ length: 1000 }, (_, i) => `each[${i}]`),
      );
      assert.ok(elements.every((t) => t.status === TaskStatus.SUCCEEDED && t.attempts.length === 1));
      for (let i = 0; i < 1000; i++) assert.equal(calls.get(`fan-${i}`), 1, `element ${i} ran once`);
      const overlap = await maxOverlap(sql, runId, "each");
      assert.ok(overlap <= 50, `at most 50 attempts at once, got ${overlap}`);
      assert.ok(overlap > 1, `elements ran side by side (${overlap})`);
      assert.ok(mostRunning <= 50, `at most 50 handlers at once, got ${mostRunning}`);
    },
  );

  it(
    "fail-fast: an element failing for good fails the step (MAP_ELEMENT_FAILED) and cancels the others",
    { timeout: 60_000 },
    async () => {
      const runId = await start("mp-fast", { n: 40 });
      const run = await waitForRun(client, runId, 50_000);
      assert.equal(run.status, RunStatus.FAILED);
      const each = task(run, "each");
      assert.equal(each.status, TaskStatus.FAILED);
      assert.equal(each.error?.type, TaskErrorType.MAP_ELEMENT_FAILED);
      assert.match(each.error?.message ?? "", /element \[7\] failed: element fast-7 broke/);
      assert.equal(task(run, "join").status, TaskStatus.SKIPPED);
      // Its retry ran, then it failed for good; elements past the window were never made.
      assert.equal(calls.get("fast-7"), 2);
      const elements = run.tasks.filter((t) => t.stepId.startsWith("each["));
      assert.ok(elements.length < 40, `${elements.length} elements made`);
      assert.ok(elements.every((t) => t.status !== TaskStatus.QUEUED && t.status !== TaskStatus.RUNNING));
      assert.equal(task(run, "each[7]").status, TaskStatus.FAILED);
    },
  );

  it(
    "collect: every element runs, then the step fails with the list of failures (MAP_ELEMENTS_FAILED)",
    { timeout: 60_000 },
    async () => {
      const runId = await start("mp-collect", { n: 16 });
      const run = await waitForRun(client, runId, 50_000);
      assert.equal(run.status, RunStatus.FAILED);
      const each = task(run, "each");
      assert.equal(each.error?.type, TaskErrorType.MAP_ELEMENTS_FAILED);
      const details =
        each.error?.details === undefined
          ? undefined
          : (valueToJson(each.error.details) as {
              failedCount: number;
              succeededCount: number;
              failed: { index: number }[];
            });
      assert.deepEqual(
        {
          failedCount: details?.failedCount,
          succeededCount: details?.succeededCount,
          failed: details?.failed.map((f) => f.index),
        },
        { failedCount: 2, succeededCount: 14, failed: [3, 11] },
      );
      for (let i = 0; i < 16; i++) assert.equal(calls.get(`collect-${i}`), 1);
      const elements = run.tasks.filter((t) => t.stepId.startsWith("each["));
      assert.equal(elements.filter((t) => t.status === TaskStatus.SUCCEEDED).length, 14);
    },
  );

  it(
    "a restart in the middle of a map goes on without running finished elements again",
    { timeout: 120_000 },
    async () => {
      let release = (): void => undefined;
      const open = new Promise<void>((resolve) => (release = resolve));
      elementCalls = 0;
      gate = { after: 8, open, release };
      const runId = await start("mp-restart", { n: 24 });
      // Eight elements done, the next ones held by the executor.
      const doneBefore = await waitFor("eight elements of the map done", async () => {
        const { rows } = await sql.query<{ step_id: string }>(
          "SELECT step_id FROM task_runs WHERE run_id = $1 AND step_id LIKE 'each[%' AND status = 'SUCCEEDED'",
          [runId],
        );
        return rows.length >= 8 ? rows.map((r) => r.step_id) : undefined;
      });
      // runs why: the map step waits for its elements; four are under way (parallelism 4).
      const why = await client.explainPending({ runId, stepId: "each" });
      assert.equal(why.status, TaskStatus.WAITING);
      const g = why.gates[0]?.gate;
      assert.equal(g?.case, "mapElements");
      if (g?.case === "mapElements") {
        assert.equal(g.value.total, 24);
        assert.equal(g.value.parallelism, 4);
        assert.ok(g.value.succeeded >= 8, `${g.value.succeeded} succeeded`);
        assert.equal(g.value.running + g.value.queued, Math.min(4, 24 - g.value.succeeded));
        assert.equal(
          g.value.waitingForParallelism,
          24 - g.value.succeeded - g.value.running - g.value.queued,
        );
      }
      assert.match(why.pendingReason, /^waiting for its elements: \d+ of 24 ended \(0 failed\)/);
      await scheduler?.stop();
      gate.release();
      gate = undefined;
      await executor?.stop("the scheduler went away");
      scheduler = await startTestScheduler(db.url);
      client = workflowClient(scheduler.address);
      executor = await attach();
      const run = await waitForRun(client, runId, 100_000);
      assert.equal(run.status, RunStatus.SUCCEEDED, JSON.stringify(run.error));
      assert.deepEqual(
        valueToJson(task(run, "each").output),
        Array.from({ length: 24 }, (_, i) => i * 2),
      );
      for (const stepId of doneBefore) {
        const index = /\[(\d+)\]/.exec(stepId)?.[1];
        assert.equal(calls.get(`restart-${index}`), 1, `${stepId}, done before the restart, ran once`);
      }
      for (let i = 0; i < 24; i++) assert.ok((calls.get(`restart-${i}`) ?? 0) >= 1);
      assert.equal(run.tasks.filter((t) => t.stepId.startsWith("each[")).length, 24);
    },
  );

  it(
    "a map step registered as a WorkflowSpec message (StepSpec.map) runs, and bad map fields are refused naming them",
    { timeout: 60_000 },
    async () => {
      await client.registerWorkflow({
        definition: {
          case: "spec",
          value: create(WorkflowSpecSchema, {
            name: "mp-message",
            version: 1,
            steps: [
              {
                id: "each",
                type: "mp.element",
                map: { items: "input.xs", parallelism: 2, failure: "collect" },
                input: jsonToValue({ key: "msg-{{ index }}", x: "{{ item }}" }),
              },
            ],
            output: jsonToValue("{{ steps.each.output }}"),
          }),
        },
      });
      const run = await waitForRun(client, await start("mp-message", { xs: [5, 6, 7] }));
      assert.equal(run.status, RunStatus.SUCCEEDED, JSON.stringify(run.error));
      assert.deepEqual(valueToJson(run.output), [10, 12, 14]);
      // Rerun from the map step: every element runs again; a new step input cannot stand for them.
      const withInput = await client
        .rerunRun({ runId: run.id, fromStep: "each", stepInput: jsonToValue({ key: "x", x: 1 }) })
        .then(
          () => assert.fail("accepted"),
          (e: unknown) => ConnectError.from(e),
        );
      assert.equal(withInput.code, Code.InvalidArgument);
      assert.match(withInput.message, /step_input/);
      const { run: rerun } = await client.rerunRun({ runId: run.id, fromStep: "each" });
      assert.ok(rerun);
      const again = await waitForRun(client, rerun.id);
      assert.equal(again.status, RunStatus.SUCCEEDED, JSON.stringify(again.error));
      assert.deepEqual(valueToJson(again.output), [10, 12, 14]);
      assert.deepEqual(
        [0, 1, 2].map((i) => calls.get(`msg-${i}`)),
        [2, 2, 2],
      );
      const refused = await client
        .registerWorkflow({
          definition: {
            case: "specJson",
            value: JSON.stringify({
              name: "mp-bad",
              version: 1,
              steps: [{ id: "each", type: "mp.element", map: { items: "input.xs", parallelism: 0 } }],
            }),
          },
        })
        .then(
          () => assert.fail("accepted"),
          (e: unknown) => ConnectError.from(e),
        );
      assert.equal(refused.code, Code.InvalidArgument);
      assert.match(refused.message, /steps\[0\]\.map\.parallelism/);
    },
  );

  it(
    "items that are not an array, or more than 10,000, fail the step with MAP_ITEMS_INVALID",
    { timeout: 60_000 },
    async () => {
      for (const [xs, message] of [
        ["nope", /must yield an array, got string/],
        [{ a: 1 }, /must yield an array, got object/],
        [Array.from({ length: 10_001 }, (_, i) => i), /10001 elements; a map step takes at most 10000/],
      ] as const) {
        const runId = await start("mp-input", { xs });
        const run = await waitForRun(client, runId);
        assert.equal(run.status, RunStatus.FAILED);
        const each = task(run, "each");
        assert.equal(each.error?.type, TaskErrorType.MAP_ITEMS_INVALID);
        assert.match(each.error?.message ?? "", message);
        assert.equal(run.tasks.length, 1, "no element was made");
      }
    },
  );
});
