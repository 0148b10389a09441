/** The example workflows register cleanly, and the trip-booking saga rolls back a declined card. */
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { Executor } from "@nexusflow/executor";
import { RunStatus, TaskKind, TaskStatus } from "@nexusflow/gen";
import registerExamples from "../../../../examples/handlers.js";
import type { Scheduler } from "../../src/scheduler.js";
import { startTestDatabase, startTestScheduler, testLogger, waitForRun, workflowClient } from "../support.js";

const EXAMPLES = join(import.meta.dirname, "../../../../examples");

describe("examples", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let executor: Executor;
  let client: ReturnType<typeof workflowClient>;

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "examples",
      logger: testLogger("executor"),
    });
    registerExamples(executor.registry);
    await executor.start();
  });

  after(async () => {
    await executor?.stop();
    await scheduler?.stop();
    await db?.close();
  });

  it("registers every example definition", async () => {
    const files = (await readdir(EXAMPLES)).filter((f) => f.endsWith(".json") && !f.endsWith(".input.json"));
    assert.ok(files.length >= 3);
    for (const f of files) {
      const res = await client.registerWorkflow({
        definition: { case: "specJson", value: await readFile(join(EXAMPLES, f), "utf8") },
      });
      assert.ok(res.workflow, f);
    }
  });

  it("trip-booking books, then rolls back in reverse order when the card is declined", async () => {
    const ok = await client.startRun({
      workflowName: "trip-booking",
      input: jsonToValue({
        traveller: "Ada",
        destination: "Lisbon",
        card: "4242-4242-4242-4242",
        amount: 420,
      }),
    });
    const booked = await waitForRun(client, ok.run!.id);
    assert.equal(booked.status, RunStatus.SUCCEEDED);
    assert.match(JSON.stringify(valueToJson(booked.output)), /"payment":"pay_FL-\d+\/HT-\d+"/);

    const bad = await client.startRun({
      workflowName: "trip-booking",
      input: jsonToValue({
        traveller: "Ada",
        destination: "Lisbon",
        card: "4000-0000-0000-0002",
        amount: 420,
      }),
    });
    const rolledBack = await waitForRun(client, bad.run!.id);
    assert.equal(rolledBack.status, RunStatus.COMPENSATED);
    assert.equal(rolledBack.error?.type, "CARD_DECLINED");
    const charge = rolledBack.tasks.find((t) => t.stepId === "charge" && t.kind === TaskKind.STEP);
    assert.equal(charge?.attempts.length, 1, "CARD_DECLINED is not retried");
    const compensations = rolledBack.tasks.filter((t) => t.kind === TaskKind.COMPENSATION);
    assert.deepEqual(compensations.map((t) => t.stepId).sort(), ["flight", "hotel"]);
    assert.ok(compensations.every((t) => t.status === TaskStatus.SUCCEEDED));
  });
});
