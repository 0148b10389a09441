/**
 * The scheduler's metrics against a real scheduler, PostgreSQL and executor in one process: runs
 * and tasks counted from committed lifecycle events with the right labels (workflow, status, task
 * type, error type), durations observed, live gauges (ready tasks of a type no executor serves,
 * sessions, free slots), group commits, the outbox lag and gRPC server calls, all read from the
 * scheduler's own /metrics endpoint.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jsonToValue } from "@nexusflow/common";
import { Executor, TaskError } from "@nexusflow/executor";
import { RunStatus } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec, type WorkflowClient } from "../e2e/harness.js";
import {
  startTestDatabase,
  startMeteredTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

/** The value of the sample `name{labels...}` (labels matched as a subset), undefined when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name} `) && want.length === 0) return Number(line.slice(name.length + 1));
    if (!line.startsWith(`${name}{`)) continue;
    const have = line.slice(name.length + 1, line.indexOf("}")).split(",");
    if (want.every((w) => have.includes(w))) return Number(line.slice(line.indexOf("} ") + 2));
  }
  return undefined;
}

describe("scheduler metrics", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: WorkflowClient;
  let executor: Executor | undefined;
  const scrape = async (): Promise<string> => {
    const url = scheduler.metricsUrl;
    assert.ok(url, "the scheduler serves metrics");
    const res = await fetch(url);
    assert.equal(res.status, 200);
    return res.text();
  };

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startMeteredTestScheduler(db.url);
    client = workflowClient(scheduler.address);
  });

  after(async () => {
    await executor?.stop();
    await scheduler?.stop();
    await db?.close();
  });

  it("counts runs and tasks by their labels, observes durations, and shows live state", async () => {
    await registerSpec(client, {
      name: "metrics-flaky",
      version: 1,
      steps: [
        { id: "a", type: "m.flaky", retry: { maxAttempts: 3, initialInterval: "10ms" } },
        { id: "b", type: "m.ok", dependsOn: ["a"] },
      ],
    });
    await registerSpec(client, { name: "metrics-fail", version: 1, steps: [{ id: "x", type: "m.boom" }] });

    // No executor yet: the ready task waits, and its type has no executor.
    const first = await client.startRun({ workflowName: "metrics-flaky", input: jsonToValue({}) });
    await waitFor("a ready m.flaky task without executor", async () => {
      const text = await scrape();
      return sample(text, "nexusflow_scheduler_tasks_ready", { task_type: "m.flaky" }) === 1 &&
        sample(text, "nexusflow_scheduler_executors", { task_type: "m.flaky" }) === 0
        ? true
        : undefined;
    });

    const attempts = new Map<string, number>();
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "metrics-1",
      slots: 4,
      builtins: false,
      logger: testLogger("executor"),
    })
      .register("m.flaky", (_input: unknown, ctx) => {
        const n = (attempts.get(ctx.taskRunId) ?? 0) + 1;
        attempts.set(ctx.taskRunId, n);
        if (n === 1) throw TaskError.retryable("FLAKY", "first attempt fails");
        return { ok: true };
      })
      .register("m.ok", () => ({ ok: true }))
      .register("m.boom", () => {
        throw TaskError.terminal("BOOM", "fails by design");
      });
    await executor.start();
    const second = await client.startRun({ workflowName: "metrics-flaky", input: jsonToValue({}) });
    const failing = await client.startRun({ workflowName: "metrics-fail", input: jsonToValue({}) });
    for (const run of [first.run, second.run])
      assert.equal((await waitForRun(client, run?.id ?? "")).status, RunStatus.SUCCEEDED);
    assert.equal((await waitForRun(client, failing.run?.id ?? "")).status, RunStatus.FAILED);

    // Events count once committed; the commit after the last report may still be on its way.
    const text = await waitFor("the runs' completions in the metrics", async () => {
      const t = await scrape();
      return sample(t, "nexusflow_runs_completed_total", { workflow: "metrics-fail", status: "FAILED" }) ===
        1 &&
        sample(t, "nexusflow_runs_completed_total", { workflow: "metrics-flaky", status: "SUCCEEDED" }) === 2
        ? t
        : undefined;
    });
    assert.equal(sample(text, "nexusflow_runs_started_total", { workflow: "metrics-flaky" }), 2);
    assert.equal(sample(text, "nexusflow_runs_started_total", { workflow: "metrics-fail" }), 1);
    assert.equal(
      sample(text, "nexusflow_run_duration_seconds_count", {
        workflow: "metrics-flaky",
        status: "SUCCEEDED",
      }),
      2,
    );
    assert.equal(sample(text, "nexusflow_task_attempts_total", { task_type: "m.flaky" }), 4);
    assert.equal(sample(text, "nexusflow_task_attempts_total", { task_type: "m.ok" }), 2);
    assert.equal(
      sample(text, "nexusflow_task_failures_total", { task_type: "m.flaky", error_type: "FLAKY" }),
      2,
    );
    assert.equal(
      sample(text, "nexusflow_task_failures_total", { task_type: "m.boom", error_type: "BOOM" }),
      1,
    );
    assert.equal(sample(text, "nexusflow_task_retries_total", { task_type: "m.flaky" }), 2);
    assert.equal(
      sample(text, "nexusflow_task_handler_duration_seconds_count", {
        task_type: "m.flaky",
        outcome: "failed",
      }),
      2,
    );
    assert.equal(
      sample(text, "nexusflow_task_handler_duration_seconds_count", {
        task_type: "m.flaky",
        outcome: "succeeded",
      }),
      2,
    );
    // First attempts and retries both have a ready time: four m.flaky starts, two m.ok.
    assert.equal(sample(text, "nexusflow_task_schedule_to_start_seconds_count", { task_type: "m.flaky" }), 4);
    assert.equal(sample(text, "nexusflow_task_schedule_to_start_seconds_count", { task_type: "m.ok" }), 2);
    // The first run's task waited for the executor: at least one start took longer than 10 ms.
    assert.ok(
      (sample(text, "nexusflow_task_schedule_to_start_seconds_bucket", {
        task_type: "m.flaky",
        le: "0.01",
      }) ?? 0) < 4,
    );
    assert.ok((sample(text, "nexusflow_scheduler_commit_duration_seconds_count") ?? 0) > 0);
    assert.ok((sample(text, "nexusflow_scheduler_commit_batch_rows_sum") ?? 0) > 0);
    assert.equal(sample(text, "nexusflow_scheduler_executor_sessions"), 1);
    assert.equal(sample(text, "nexusflow_scheduler_executors", { task_type: "m.flaky" }), 1);
    assert.equal(sample(text, "nexusflow_scheduler_free_slots", { task_type: "m.ok" }), 4);
    assert.equal(sample(text, "nexusflow_scheduler_leases_in_flight"), 0);
    assert.equal(sample(text, "nexusflow_scheduler_writer_healthy"), 1);
    assert.equal(sample(text, "nexusflow_scheduler_runs_active"), 0);
    assert.equal(typeof sample(text, "nexusflow_outbox_pending_rows"), "number");
    assert.equal(sample(text, "nexusflow_kafka_publish_errors_total"), 0);
    assert.equal(
      sample(text, "nexusflow_grpc_server_duration_seconds_count", {
        method: "nexusflow.v1.WorkflowService/StartRun",
        code: "OK",
      }),
      3,
    );
    // No run id ever becomes a label.
    for (const id of [first.run?.id, second.run?.id, failing.run?.id]) assert.ok(id && !text.includes(id));
  });
});
