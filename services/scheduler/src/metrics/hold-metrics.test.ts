/**
 * The held-task metrics from committed task_held events: held now by gate, the time a gate held a
 * task (observed when it let it go), and the per-key depth and oldest age, bounded to the keys
 * with the most held tasks.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Registry } from "@nexusflow/common/metrics";
import { HoldGate, RunStatus } from "@nexusflow/gen";
import type { CommitObservation } from "../persistence/batch-writer.js";
import { lifecycleEventAt, type EventInit, type OutboxRow } from "../persistence/outbox.js";
import { HoldMetrics } from "./hold-metrics.js";

const T0 = Date.parse("2026-01-01T00:00:00Z");
let seq = 0n;

function event(runId: string, at: number, e: EventInit): OutboxRow {
  return lifecycleEventAt({ runId, sequence: ++seq, workflowName: "w", workflowVersion: 1 }, e, new Date(at));
}

const held = (
  runId: string,
  task: string,
  at: number,
  gate: HoldGate,
  limit: string,
  key: string,
): OutboxRow =>
  event(runId, at, {
    case: "taskHeld",
    value: { taskRunId: task, stepId: "a", attempt: 1, gate, limit, key, reason: "r" },
  });

function commit(...events: OutboxRow[]): CommitObservation {
  return { rows: events.length, seconds: 0.001, events, tasks: new Map(), runs: new Map() };
}

/** The value of `name{labels}` in `text` (labels as written, in order), undefined when absent. */
function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

describe("held-task metrics", () => {
  it("counts held tasks by gate, observes how long each gate held a task, and forgets ended waits", async () => {
    const registry = new Registry();
    const m = new HoldMetrics(registry, 20, () => T0 + 10_000);
    m.observe(
      commit(
        held("r1", "t1", T0, HoldGate.CONCURRENCY_KEY, "input.c", "c1"),
        held("r2", "t2", T0 + 1000, HoldGate.CONCURRENCY_KEY, "input.c", "c1"),
        held("r3", "t3", T0 + 2000, HoldGate.RATE_LIMIT, "partner", ""),
      ),
    );
    let text = await registry.metrics();
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="concurrency_key"'), 2);
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="rate_limit"'), 1);
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="rate_limit_paused"'), 0);
    assert.equal(
      sample(text, "nexusflow_scheduler_held_key_tasks", 'gate="concurrency_key",limit="input.c",key="c1"'),
      2,
    );
    assert.equal(
      sample(
        text,
        "nexusflow_scheduler_held_key_oldest_age_seconds",
        'gate="concurrency_key",limit="input.c",key="c1"',
      ),
      10,
    );
    // t1 leased 5 s after it was held; t2 moves to a rate limit after 3 s, then its run is
    // cancelled; t3's wait ends by a failure (not observed).
    m.observe(
      commit(
        event("r1", T0 + 5000, {
          case: "taskLeased",
          value: { taskRunId: "t1", stepId: "a", attempt: 1, executorId: "e" },
        }),
        held("r2", "t2", T0 + 4000, HoldGate.RATE_LIMIT_PAUSED, "partner", "k"),
        event("r3", T0 + 6000, { case: "taskFailed", value: { taskRunId: "t3", stepId: "a", attempt: 1 } }),
      ),
    );
    text = await registry.metrics();
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="concurrency_key"'), 0);
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="rate_limit"'), 0);
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="rate_limit_paused"'), 1);
    assert.equal(sample(text, "nexusflow_task_held_seconds_count", 'gate="concurrency_key"'), 2);
    assert.equal(sample(text, "nexusflow_task_held_seconds_sum", 'gate="concurrency_key"'), 8);
    assert.equal(sample(text, "nexusflow_task_held_seconds_count", 'gate="rate_limit"'), undefined);
    assert.doesNotMatch(text, /held_key_tasks\{gate="concurrency_key"/, "a key nobody waits for is dropped");
    m.observe(
      commit(event("r2", T0 + 7000, { case: "runCompleted", value: { status: RunStatus.CANCELLED } })),
    );
    text = await registry.metrics();
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="rate_limit_paused"'), 0);
    assert.equal(sample(text, "nexusflow_task_held_seconds_count", 'gate="rate_limit_paused"'), undefined);
  });

  it("names the keys with the most held tasks per gate and sums the rest as (other)", async () => {
    const registry = new Registry();
    const m = new HoldMetrics(registry, 3, () => T0 + 100_000);
    const rows: OutboxRow[] = [];
    // Key k<i> has i + 1 held tasks, held at T0 + i seconds: k9, k8, k7 are named.
    for (let i = 0; i < 10; i++)
      for (let j = 0; j <= i; j++)
        rows.push(
          held(`r${i}-${j}`, `t${i}-${j}`, T0 + i * 1000, HoldGate.CONCURRENCY_KEY, "input.c", `k${i}`),
        );
    m.observe(commit(...rows));
    const text = await registry.metrics();
    const keys = [...text.matchAll(/^nexusflow_scheduler_held_key_tasks\{[^}]*key="([^"]*)"\} (\d+)$/gm)].map(
      (x) => [x[1], Number(x[2])],
    );
    assert.deepEqual(keys, [
      ["k9", 10],
      ["k8", 9],
      ["k7", 8],
      ["(other)", 28],
    ]);
    assert.equal(
      sample(
        text,
        "nexusflow_scheduler_held_key_oldest_age_seconds",
        'gate="concurrency_key",limit="(other)",key="(other)"',
      ),
      100,
    );
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="concurrency_key"'), 55);
  });

  it("counts a run waiting for its workflow's keys once, until its first task is leased, cancelled or ended", async () => {
    const registry = new Registry();
    const m = new HoldMetrics(registry, 20, () => T0 + 10_000);
    const runHeld = (runId: string, at: number, key: string): OutboxRow =>
      event(runId, at, {
        case: "runHeld",
        value: { gate: HoldGate.CONCURRENCY_KEY, limit: "input.t", key, reason: "r" },
      });
    m.observe(commit(runHeld("r1", T0, "t1"), runHeld("r2", T0 + 1000, "t1"), runHeld("r3", T0, "t2")));
    let text = await registry.metrics();
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="concurrency_key"'), 3);
    assert.equal(
      sample(text, "nexusflow_scheduler_held_key_tasks", 'gate="concurrency_key",limit="input.t",key="t1"'),
      2,
    );
    // r1's first task leased 4 s after: observed; r2 cancelled, r3 ended: not observed.
    m.observe(
      commit(
        event("r1", T0 + 4000, {
          case: "taskLeased",
          value: { taskRunId: "t1", stepId: "a", attempt: 1, executorId: "e" },
        }),
        event("r2", T0 + 5000, { case: "runCancelRequested", value: { reason: "x" } }),
        event("r3", T0 + 5000, { case: "runCompleted", value: { status: RunStatus.CANCELLED } }),
      ),
    );
    text = await registry.metrics();
    assert.equal(sample(text, "nexusflow_scheduler_tasks_held", 'gate="concurrency_key"'), 0);
    assert.equal(sample(text, "nexusflow_task_held_seconds_count", 'gate="concurrency_key"'), 1);
    assert.equal(sample(text, "nexusflow_task_held_seconds_sum", 'gate="concurrency_key"'), 4);
  });
});
