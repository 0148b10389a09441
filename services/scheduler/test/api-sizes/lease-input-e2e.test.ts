/**
 * A step whose rendered input no executor could take is failed by the scheduler before any lease is
 * sent (INPUT_TOO_DEEP, INPUT_TOO_LARGE), against a real scheduler, PostgreSQL and executor: the
 * executor's session is untouched and goes on running other tasks. Before, a lease nested deeper
 * than an executor decodes ended its session (the SessionResponse failed to decode), and again at
 * every reconnection until the attempts ran out (LEASE_EXPIRED); a lease over 15 MiB was sent.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue } from "@nexusflow/common";
import type { Executor } from "@nexusflow/executor";
import { RunStatus, RunView, TaskStatus, WorkflowService, type Run } from "@nexusflow/gen";
import { INPUT_TOO_DEEP, INPUT_TOO_LARGE } from "../../src/core/leasing.js";
import type { Scheduler } from "../../src/scheduler.js";
import {
  registerSpec,
  startTestDatabase,
  startTestExecutor,
  startTestScheduler,
  waitForRun,
} from "../support.js";

/** `levels` levels of objects around 1. */
function nested(levels: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < levels; i++) v = { k: v };
  return v;
}

describe("leases of inputs no executor could take", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  /** GetRun answers a refused step's input as it was rendered: deeper than protobuf's usual 100 messages. */
  let client: ReturnType<typeof createClient<typeof WorkflowService>>;
  let executor: Executor;
  let handled = 0;

  /** The executor's session ids now. */
  const sessions = (): string[] =>
    [...scheduler.engine.sessions()].filter((s) => s.executorId === "sizes").map((s) => s.id);

  /** Starts a run with `a` (answer in BASIC: the input may be megabytes) and waits until it ends. */
  const run = async (a: unknown): Promise<Run> => {
    const { run } = await client.startRun({
      workflowName: "lease-sizes",
      input: jsonToValue({ a }),
      view: RunView.BASIC,
    });
    assert.ok(run);
    return waitForRun(client, run.id, 60_000);
  };

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = createClient(
      WorkflowService,
      createGrpcTransport({
        baseUrl: `http://${scheduler.address}`,
        binaryOptions: { recursionLimit: 200 },
      }),
    );
    executor = await startTestExecutor(scheduler, { executorId: "sizes", slots: 2 }, (e) =>
      e.register("probe", () => ({ handled: ++handled })),
    );
    // The input is 2 levels deeper than `a`, and holds it twice.
    await registerSpec(client, {
      name: "lease-sizes",
      version: 1,
      steps: [
        {
          id: "probe",
          type: "probe",
          input: { x: { y: "{{ input.a }}" }, z: "{{ input.a }}" },
          retry: { maxAttempts: 1 },
        },
      ],
    });
  });

  after(async () => {
    await executor?.stop("test over");
    await scheduler?.stop();
    await db?.close();
  });

  it("fails a step nested deeper than 48 levels with INPUT_TOO_DEEP, and one over 15 MiB with INPUT_TOO_LARGE, sending nothing", async () => {
    const [session] = sessions();
    assert.ok(session);

    const deepest = await run(nested(46));
    assert.equal(deepest.status, RunStatus.SUCCEEDED, "48 levels are leased and run");
    assert.equal(handled, 1);

    for (const [a, type] of [
      [nested(47), INPUT_TOO_DEEP],
      ["x".repeat(8 * 1024 * 1024), INPUT_TOO_LARGE],
    ] as const) {
      const done = await run(a);
      assert.equal(done.status, RunStatus.FAILED, type);
      assert.equal(done.error?.type, type);
      const [probe] = done.tasks;
      assert.equal(probe?.status, TaskStatus.FAILED);
      assert.equal(probe.error?.type, type);
      assert.equal(probe.error.retryable, false);
      assert.deepEqual(probe.attempts, [], `${type}: no attempt, no lease`);
    }
    assert.equal(handled, 1, "the executor ran nothing more");

    // The same session, which runs the next task.
    assert.equal((await run("small")).status, RunStatus.SUCCEEDED);
    assert.equal(handled, 2);
    assert.deepEqual(sessions(), [session], "the executor's session never ended");
  });
});
