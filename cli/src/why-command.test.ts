/** `runs why` prints each gate of ExplainPending as a sentence. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  ExplainPendingResponseSchema,
  PendingGateSchema,
  RunStatus,
  TaskKind,
  TaskStatus,
} from "@nexusflow/gen";
import { createStyle } from "./style.js";
import { describeExplanation } from "./why-command.js";

const NOW = Date.UTC(2026, 0, 31, 12, 0, 0);
const plain = createStyle(false);

function answer(status: TaskStatus, gates: MessageInitShape<typeof PendingGateSchema>[]) {
  return create(ExplainPendingResponseSchema, {
    runId: "run-1",
    stepId: "charge",
    kind: TaskKind.STEP,
    taskRunId: "t-1",
    status,
    runStatus: RunStatus.RUNNING,
    gates: gates.map((g) => create(PendingGateSchema, g)),
    time: timestampFromMs(NOW),
  });
}

const g = (
  gate: NonNullable<MessageInitShape<typeof PendingGateSchema>["gate"]>,
): MessageInitShape<typeof PendingGateSchema> => ({ gate });

describe("runs why", () => {
  it("says a running or finished task is not held", () => {
    assert.equal(
      describeExplanation(answer(TaskStatus.RUNNING, []), plain),
      "charge of run run-1 (RUNNING) is RUNNING: it is running.",
    );
    assert.equal(
      describeExplanation(answer(TaskStatus.SUCCEEDED, []), plain),
      "charge of run run-1 (RUNNING) is SUCCEEDED: it has finished.",
    );
  });

  it("prints each gate as a sentence, with times relative to the answer", () => {
    const queued = answer(TaskStatus.QUEUED, [
      g({
        case: "noExecutor",
        value: { type: "charge-card", ahead: 2, since: timestampFromMs(NOW - 5000) },
      }),
      g({
        case: "scheduleToStart",
        value: { deadline: timestampFromMs(NOW + 25_000), timeoutMs: 30_000n },
      }),
    ]);
    assert.deepEqual(describeExplanation(queued, plain).split("\n"), [
      "charge of run run-1 (RUNNING) is QUEUED; held by 2 gates:",
      '  - no executor advertises type "charge-card" (since 2026-01-31 11:59:55 UTC): start one that runs it; 2 tasks of its type are ahead of it',
      "  - unless an executor takes it by 2026-01-31 12:00:25 UTC (in 25.0s), this attempt fails with SCHEDULE_TO_START_TIMEOUT (timeout 30.0s) and is retried per its policy",
    ]);
    const busy = answer(TaskStatus.QUEUED, [
      g({
        case: "executorsBusy",
        value: { type: "charge-card", executors: 2, draining: 0, ahead: 0 },
      }),
    ]);
    busy.priority = 5;
    assert.match(
      describeExplanation(busy, plain),
      /^charge of run run-1 \(RUNNING\) is QUEUED, priority 5; held by 1 gate:/,
    );
    assert.match(
      describeExplanation(busy, plain),
      /all 2 executors for type "charge-card" have every slot in use \(no credit\); it is first in line$/,
    );
  });

  it("names dependencies, the condition and the retry", () => {
    const pending = answer(TaskStatus.PENDING, [
      g({
        case: "dependencies",
        value: { stepIds: ["a", "b"], readingOutputStepIds: [] },
      }),
      g({ case: "condition", value: { expression: "input.ok", stepIds: ["a", "b"] } }),
    ]);
    assert.deepEqual(describeExplanation(pending, plain).split("\n").slice(1), [
      "  - waiting for steps a, b to finish",
      '  - its condition "input.ok" is decided once a, b finish',
    ]);
    const retry = answer(TaskStatus.RETRY_WAIT, [
      g({
        case: "retryBackoff",
        value: {
          nextAttemptTime: timestampFromMs(NOW + 90_000),
          nextAttempt: 2,
          maxAttempts: 3,
          lastError: { type: "PSP_DOWN", message: "try later", retryable: true },
        },
      }),
    ]);
    assert.equal(
      describeExplanation(retry, plain).split("\n")[1],
      "  - its last attempt failed (PSP_DOWN: try later); attempt 2 of 3 is due at 2026-01-31 12:01:30 UTC (in 1m30s)",
    );
  });

  it("names a full concurrency key: its holders and the place in its queue", () => {
    const key = (value: Record<string, unknown>) => g({ case: "concurrencyKey", value });
    const queued = answer(TaskStatus.QUEUED, [
      key({
        scope: "step",
        keyExpression: "input.customerId",
        key: "c-42",
        limit: 1,
        strategy: "queue",
        holders: [{ runId: "run-0", stepId: "charge", taskRunId: "t-0" }],
        holding: 1,
        position: 2,
        waiting: 3,
      }),
    ]);
    assert.equal(
      describeExplanation(queued, plain).split("\n")[1],
      '  - it waits for a slot of concurrency key "c-42" (input.customerId, limit 1, queue): held by charge of run run-0; it is 2 of 3 in the key\'s queue',
    );
    const run = answer(TaskStatus.PENDING, [
      key({
        scope: "workflow",
        keyExpression: "input.tenant",
        key: "acme",
        limit: 2,
        strategy: "queue",
        holders: [
          { runId: "run-a", stepId: "", taskRunId: "" },
          { runId: "run-b", stepId: "", taskRunId: "" },
        ],
        holding: 25,
        position: 0,
        waiting: 1,
      }),
    ]);
    assert.equal(
      describeExplanation(run, plain).split("\n")[1],
      '  - its run waits for a slot of concurrency key "acme" (input.tenant, limit 2, queue): held by run run-a, run run-b and 23 more; 1 other waits in the key\'s queue',
    );
  });

  it("says what a wait or sleep step waits for, and until when", () => {
    const gate = (signal: string) =>
      answer(TaskStatus.WAITING, [
        g({ case: "durableWait", value: { signal, until: timestampFromMs(NOW + 3_600_000) } }),
      ]);
    assert.deepEqual(describeExplanation(gate("approved"), plain).split("\n"), [
      "charge of run run-1 (RUNNING) is WAITING; held by 1 gate:",
      '  - it waits for signal "approved", and fails with WAIT_TIMEOUT unless it arrives by 2026-01-31 13:00:00 UTC (in 60m00s): send it with nexusflow runs signal',
    ]);
    assert.deepEqual(describeExplanation(gate(""), plain).split("\n"), [
      "charge of run run-1 (RUNNING) is WAITING; held by 1 gate:",
      "  - it sleeps until 2026-01-31 13:00:00 UTC (in 60m00s)",
    ]);
    const event = (filter: string, until?: number) =>
      answer(TaskStatus.WAITING, [
        g({
          case: "durableWait",
          value: {
            signal: "",
            event: "orders.paid",
            filter,
            ...(until === undefined ? {} : { until: timestampFromMs(until) }),
          },
        }),
      ]);
    assert.deepEqual(
      describeExplanation(event("event.payload.id == input.id", NOW + 3_600_000), plain).split("\n"),
      [
        "charge of run run-1 (RUNNING) is WAITING; held by 1 gate:",
        '  - it waits for an event "orders.paid" for which event.payload.id == input.id published while it waits, and fails with WAIT_TIMEOUT unless one is by 2026-01-31 13:00:00 UTC (in 60m00s): publish it with nexusflow events publish',
      ],
    );
    assert.deepEqual(
      describeExplanation(event(""), plain).split("\n")[1],
      '  - it waits for an event "orders.paid" published while it waits: publish it with nexusflow events publish',
    );
  });

  it("says which child run a child workflow step waits for", () => {
    const child = (workflowVersion: number) =>
      answer(TaskStatus.WAITING, [
        g({ case: "childRun", value: { runId: "run-2", workflowName: "charge-card", workflowVersion } }),
      ]);
    assert.deepEqual(describeExplanation(child(3), plain).split("\n"), [
      "charge of run run-1 (RUNNING) is WAITING; held by 1 gate:",
      "  - it waits for its child run run-2 (workflow charge-card v3) to end: see nexusflow runs get run-2",
    ]);
    assert.match(describeExplanation(child(0), plain), /\(workflow charge-card\) to end/);
  });

  it("says how far a map step's elements are", () => {
    const map = answer(TaskStatus.WAITING, [
      g({
        case: "mapElements",
        value: {
          total: 1000,
          succeeded: 120,
          failed: 2,
          running: 50,
          queued: 0,
          waitingForParallelism: 828,
          parallelism: 50,
        },
      }),
    ]);
    assert.deepEqual(describeExplanation(map, plain).split("\n"), [
      "charge of run run-1 (RUNNING) is WAITING; held by 1 gate:",
      "  - it is a map step waiting for its elements: 122 of 1000 ended (120 succeeded, 2 failed), 50 running, 0 queued, 828 waiting for a place under its parallelism of 50; each is a task run of its own (nexusflow runs get lists them as <step>[<index>])",
    ]);
  });

  it("says whose fair share is used and who goes first", () => {
    const fair = (level: string, max: number, atMax: boolean) =>
      answer(TaskStatus.QUEUED, [
        g({
          case: "fairShare",
          value: {
            level,
            tenant: "acme",
            key: "c-7",
            type: "charge-card",
            leased: 8,
            weight: 1,
            max,
            atMax,
            next: level === "tenant" ? "" : "c-9",
            waiting: 3,
          },
        }),
      ]);
    assert.equal(
      describeExplanation(fair("tenant", 8, true), plain).split("\n")[1],
      '  - by fair share, tenant "" (the runs without fairness) is served before tenant "acme" when a slot for type "charge-card" frees (tenant "acme" holds 8 leases of the type, weight 1, at its maximum of 8; 3 tenants have ready tasks)',
    );
    assert.equal(
      describeExplanation(fair("key", 0, false), plain).split("\n")[1],
      '  - by fair share, key "c-9" of tenant "acme" is served before key "c-7" of tenant "acme" when a slot for type "charge-card" frees (key "c-7" of tenant "acme" holds 8 leases of the type, weight 1; 3 keys of the tenant have ready tasks)',
    );
  });
});
