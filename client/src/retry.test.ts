import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  ArtifactService,
  ClusterService,
  EventService,
  RateLimitService,
  ReplicaService,
  ScheduleService,
  WorkflowService,
} from "@nexusflow/gen";
import { isIdempotentCall, retryDelayMs, sleep } from "./retry.js";

describe("isIdempotentCall", () => {
  it("retries reads, RegisterWorkflow and CancelRun, and StartRun only with an idempotency key", () => {
    for (const m of ["GetRun", "ListRuns", "GetWorkflow", "ListWorkflows", "RegisterWorkflow", "CancelRun"]) {
      assert.ok(isIdempotentCall(`nexusflow.v1.WorkflowService/${m}`, {}), m);
    }
    assert.ok(isIdempotentCall("nexusflow.v1.ArtifactService/ListArtifacts", {}));
    const startRun = "nexusflow.v1.WorkflowService/StartRun";
    assert.ok(isIdempotentCall(startRun, { idempotencyKey: "k" }));
    assert.equal(isIdempotentCall(startRun, { idempotencyKey: "" }), false);
    assert.equal(isIdempotentCall(startRun, {}), false);
    const startRuns = "nexusflow.v1.WorkflowService/StartRuns";
    assert.ok(isIdempotentCall(startRuns, { runs: [{ idempotencyKey: "a" }, { idempotencyKey: "b" }] }));
    assert.equal(
      isIdempotentCall(startRuns, { runs: [{ idempotencyKey: "a" }, { idempotencyKey: "" }] }),
      false,
    );
    assert.equal(isIdempotentCall(startRuns, { runs: [] }), false);
    assert.equal(isIdempotentCall(startRuns, {}), false);
    assert.equal(isIdempotentCall("nexusflow.v1.ExecutorService/Session", {}), false);
    assert.equal(isIdempotentCall("nexusflow.v1.ScheduleService/DeleteSchedule", {}), false);
    assert.equal(isIdempotentCall("other.Service/GetRun", {}), false);
  });
});

describe("the retries of every service the client serves", () => {
  const services = [
    WorkflowService,
    ArtifactService,
    ClusterService,
    ScheduleService,
    ReplicaService,
    EventService,
    RateLimitService,
  ];
  const unary = services.flatMap((s) =>
    s.methods.filter((m) => m.methodKind === "unary").map((m) => `${s.typeName}/${m.name}`),
  );

  it("retry every read (Get, List, Explain), as the options document", () => {
    const reads = unary.filter((m) => /\/(Get|List|Explain)/.test(m));
    assert.ok(reads.length >= 13, `reads: ${reads.join(", ")}`);
    for (const m of reads) assert.ok(isIdempotentCall(m, {}), m);
  });

  it("retry every call that takes an idempotency key only when it has one", () => {
    for (const m of [
      "nexusflow.v1.WorkflowService/RerunRun",
      "nexusflow.v1.ScheduleService/TriggerSchedule",
      "nexusflow.v1.EventService/PublishEvent",
      "nexusflow.v1.WorkflowService/SignalRun",
    ]) {
      assert.ok(unary.includes(m), m);
      assert.ok(isIdempotentCall(m, { idempotencyKey: "k" }), m);
      assert.equal(isIdempotentCall(m, { idempotencyKey: "" }), false, m);
    }
  });
});

describe("retryDelayMs", () => {
  it("is full jitter under a bound that doubles up to the cap", () => {
    const bounds = { initialDelayMs: 100, maxDelayMs: 1_000 };
    const top = (attempt: number): number => retryDelayMs(attempt, bounds, () => 0.999999);
    assert.deepEqual([1, 2, 3, 4, 5, 50].map(top), [99, 199, 399, 799, 999, 999]);
    assert.equal(
      retryDelayMs(3, bounds, () => 0),
      0,
    );
  });
});

describe("sleep", () => {
  it("rejects with the signal's reason as soon as it aborts", async () => {
    const controller = new AbortController();
    const reason = new Error("stop");
    const sleeping = sleep(60_000, controller.signal);
    controller.abort(reason);
    await assert.rejects(sleeping, (e: unknown) => e === reason);
    await assert.rejects(sleep(1, controller.signal), (e: unknown) => e === reason);
  });
});
