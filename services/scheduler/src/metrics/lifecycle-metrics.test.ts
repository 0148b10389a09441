/**
 * The run and task metrics from committed lifecycle events, for a commit observed after its run
 * left the engine's memory (the batch writer shows a commit to its observers while the next
 * statement runs, after the commit's waiters went on): what the commit wrote is read instead.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createMetricsRegistry } from "@nexusflow/common/metrics";
import { RunStatus, TaskKind } from "@nexusflow/gen";
import type { CompiledWorkflow } from "../dag/index.js";
import { newRunState, newTaskState, type RunState, type TaskState } from "../model/run-state.js";
import type { CommitObservation } from "../persistence/batch-writer.js";
import { lifecycleEvent, lifecycleEventAt, type EventInit, type OutboxRow } from "../persistence/outbox.js";
import { LifecycleMetrics } from "./lifecycle-metrics.js";

const T0 = Date.parse("2026-01-01T00:00:00Z");

/** The value of `name{labels}` in `text` (labels as written, in order), undefined when absent. */
function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

/** A run of workflow "w" created at T0 with its one step's task (type "noop"). */
function oneStepRun(): { run: RunState; task: TaskState } {
  const run: RunState = newRunState({
    definitionId: 1,
    workflow: {
      name: "w",
      version: 1,
      timeoutMs: null,
      dependencies: new Map(),
    } as unknown as CompiledWorkflow,
    input: null,
    idempotencyKey: null,
    labels: {},
    now: new Date(T0),
  });
  const task = newTaskState(run.id, "only", "STEP", "noop", 0, new Date(T0));
  run.tasks.set(task.stepId, task);
  return { run, task };
}

describe("lifecycle metrics", () => {
  it("observes a run that ended in the commit and already left the engine from the commit's own rows", async () => {
    const { run, task } = oneStepRun();
    let seq = 0n;
    const event = (at: number, e: EventInit): OutboxRow =>
      lifecycleEventAt(
        { runId: run.id, sequence: ++seq, workflowName: "w", workflowVersion: 1 },
        e,
        new Date(at),
      );
    const attempt = { taskRunId: task.id, stepId: "only", attempt: 1, kind: TaskKind.STEP };
    // Started 20 ms after the run's creation, succeeded 30 ms later, the run completed: one commit.
    const commit: CommitObservation = {
      rows: 3,
      seconds: 0.001,
      events: [
        event(T0 + 20, { case: "taskStarted", value: attempt }),
        event(T0 + 50, { case: "taskSucceeded", value: { taskRunId: task.id, stepId: "only", attempt: 1 } }),
        event(T0 + 50, { case: "runCompleted", value: { status: RunStatus.SUCCEEDED } }),
      ],
      tasks: new Map([[task.id, task]]),
      runs: new Map([[run.id, run]]),
    };
    const registry = createMetricsRegistry();
    // The engine has forgotten the run (its completion committed, its waiters went on).
    new LifecycleMetrics(registry, () => undefined).observe(commit);
    const text = await registry.metrics();
    assert.equal(sample(text, "nexusflow_task_schedule_to_start_seconds_count", 'task_type="noop"'), 1);
    assert.equal(sample(text, "nexusflow_task_schedule_to_start_seconds_sum", 'task_type="noop"'), 0.02);
    assert.equal(
      sample(text, "nexusflow_task_handler_duration_seconds_sum", 'task_type="noop",outcome="succeeded"'),
      0.03,
    );
    assert.equal(sample(text, "nexusflow_run_duration_seconds_count", 'workflow="w",status="SUCCEEDED"'), 1);
    assert.equal(sample(text, "nexusflow_runs_completed_total", 'workflow="w",status="SUCCEEDED"'), 1);
  });

  it("reads the run an event was made from when the commit did not write it and the engine let it go", async () => {
    const { run, task } = oneStepRun();
    // Events made by the engine carry their run (lifecycleEvent); these two change no run row.
    const started = lifecycleEvent(
      run,
      { case: "taskStarted", value: { taskRunId: task.id, stepId: "only", attempt: 1, kind: TaskKind.STEP } },
      new Date(T0 + 40),
    );
    const succeeded = lifecycleEvent(
      run,
      { case: "taskSucceeded", value: { taskRunId: task.id, stepId: "only", attempt: 1 } },
      new Date(T0 + 100),
    );
    assert.equal(started.run, run);
    const registry = createMetricsRegistry();
    // Observed after the run left the engine (its partition released, or parked): not in the
    // commit's runs, not active.
    new LifecycleMetrics(registry, () => undefined).observe({
      rows: 2,
      seconds: 0.001,
      events: [started, succeeded],
      tasks: new Map([[task.id, task]]),
      runs: new Map(),
    });
    const text = await registry.metrics();
    assert.equal(sample(text, "nexusflow_task_schedule_to_start_seconds_sum", 'task_type="noop"'), 0.04);
    assert.equal(
      sample(text, "nexusflow_task_handler_duration_seconds_sum", 'task_type="noop",outcome="succeeded"'),
      0.06,
    );
  });
});
