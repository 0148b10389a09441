/**
 * StartRuns (bulk start) against a real scheduler and PostgreSQL: every item is started as StartRun
 * would start it alone and gets its own result in order (the run, or the error naming
 * `runs[i].<field>`), one bad item fails no other, idempotency keys hold within and across calls,
 * and the call itself fails only when it is malformed as a whole.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type MessageInitShape, create, fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import { Executor } from "@nexusflow/executor";
import {
  RunStatus,
  RunView,
  type StartRunRequest,
  StartRunRequestSchema,
  type StartRunResult,
} from "@nexusflow/gen";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec, type WorkflowClient } from "../e2e/harness.js";
import { startTestDatabase, startTestScheduler, testLogger, waitForRun, workflowClient } from "../support.js";

/** The started run of a result, or a failed assertion saying what the item answered. */
function started(result: StartRunResult | undefined, what: string): { id: string; created: boolean } {
  const error = result?.result.case === "error" ? result.result.value.message : "no error";
  assert.equal(result?.result.case, "started", `${what}: ${error}`);
  const value = result.result.value;
  assert.ok(value?.run !== undefined, what);
  return { id: value.run.id, created: value.created };
}

/** The error of a result: its code, message and field violations. */
function failed(
  result: StartRunResult | undefined,
  what: string,
): { code: number; message: string; fields: string[] } {
  assert.equal(result?.result.case, "error", `${what}: expected an error`);
  const status = result.result.value;
  const fields = status.details
    .filter((d) => d.typeUrl.endsWith("/google.rpc.BadRequest"))
    .flatMap((d) => fromBinary(BadRequestSchema, d.value).fieldViolations.map((v) => v.field));
  return { code: status.code, message: status.message, fields };
}

describe("StartRuns", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let executor: Executor;
  let client: WorkflowClient;

  const item = (fields: MessageInitShape<typeof StartRunRequestSchema>): StartRunRequest =>
    create(StartRunRequestSchema, { workflowName: "bulk-orders", ...fields });

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "start-runs",
      logger: testLogger("executor"),
      taskTypes: ["noop"],
    });
    await executor.start();
    await registerSpec(client, {
      name: "bulk-orders",
      version: 1,
      input: {
        type: "object",
        required: ["orderId"],
        properties: { orderId: { type: "string" } },
      },
      steps: [{ id: "only", type: "noop" }],
    });
  });

  after(async () => {
    await executor?.stop();
    await scheduler?.stop();
    await db?.close();
  });

  it("starts every valid item, answers each bad one with its own error, in order", async () => {
    const key = `bulk-${Date.now()}`;
    const { results } = await client.startRuns({
      runs: [
        item({ input: jsonToValue({ orderId: "o-1" }), labels: { batch: "1" } }),
        item({ input: jsonToValue({ orderId: 7 }) }),
        item({ workflowName: "no-such-workflow" }),
        item({ input: jsonToValue({ orderId: "o-2" }), idempotencyKey: key }),
        item({ input: jsonToValue({ orderId: "o-2" }), idempotencyKey: key }),
        item({ input: create(ValueSchema, { kind: { case: "numberValue", value: Number.NaN } }) }),
        item({ input: jsonToValue({ orderId: "o-3" }), view: RunView.FULL }),
        item({ workflowName: "" }),
      ],
    });
    assert.equal(results.length, 8);

    const first = started(results[0], "runs[0]");
    assert.equal(first.created, true);

    const badInput = failed(results[1], "runs[1]");
    assert.equal(badInput.code, Code.InvalidArgument);
    assert.match(badInput.message, /^runs\[1\]: input does not match the input schema of bulk-orders v1/);
    assert.deepEqual(badInput.fields, ["runs[1].input.orderId"]);

    const unknown = failed(results[2], "runs[2]");
    assert.equal(unknown.code, Code.NotFound);
    assert.match(unknown.message, /runs\[2\]: workflow no-such-workflow is not registered/);

    // The same key twice in one call: one run, created once.
    const a = started(results[3], "runs[3]");
    const b = started(results[4], "runs[4]");
    assert.equal(a.id, b.id);
    assert.deepEqual([a.created, b.created].sort(), [false, true]);

    const nan = failed(results[5], "runs[5]");
    assert.equal(nan.code, Code.InvalidArgument);
    assert.ok(
      nan.fields.every((f) => f.startsWith("runs[5].input")),
      nan.fields.join(),
    );

    const full = failed(results[6], "runs[6]");
    assert.equal(full.code, Code.InvalidArgument);
    assert.deepEqual(full.fields, ["runs[6].view"]);

    assert.deepEqual(failed(results[7], "runs[7]").fields, ["runs[7].workflow_name"]);

    // The started runs run; the answers carried BASIC runs (no tasks).
    assert.equal(results[0]?.result.case === "started" ? results[0].result.value.run?.tasks.length : -1, 0);
    for (const id of [first.id, a.id])
      assert.equal((await waitForRun(client, id)).status, RunStatus.SUCCEEDED);
    const { run } = await client.getRun({ runId: first.id });
    assert.deepEqual(run?.labels, { batch: "1" });

    // The key holds across calls too.
    const again = await client.startRuns({
      runs: [item({ input: jsonToValue({ orderId: "o-2" }), idempotencyKey: key })],
    });
    assert.deepEqual(started(again.results[0], "again"), { id: a.id, created: false });
  });

  it("fails the whole call only for no items or too many", async () => {
    const empty = await client.startRuns({ runs: [] }).then(
      () => assert.fail("expected INVALID_ARGUMENT"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(empty.code, Code.InvalidArgument);
    assert.deepEqual(
      empty.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field)),
      ["runs"],
    );
    const many = await client
      .startRuns({ runs: Array.from({ length: 1001 }, () => item({ input: jsonToValue({ orderId: "x" }) })) })
      .then(
        () => assert.fail("expected INVALID_ARGUMENT"),
        (e: unknown) => ConnectError.from(e),
      );
    assert.equal(many.code, Code.InvalidArgument);
    assert.match(many.rawMessage, /at most 1000 runs per call; got 1001/);
  });

  it("starts a thousand runs in one call, all of them run", async () => {
    const { results } = await client.startRuns({
      runs: Array.from({ length: 1000 }, (_, i) => item({ input: jsonToValue({ orderId: `k-${i}` }) })),
    });
    const ids = results.map((r, i) => started(r, `runs[${i}]`).id);
    assert.equal(new Set(ids).size, 1000);
    for (const id of [ids[0] ?? "", ids[999] ?? ""])
      assert.equal((await waitForRun(client, id)).status, RunStatus.SUCCEEDED);
  });
});
