/**
 * A rerun across a scheduler SIGKILLed (a real process, no shutdown code runs): the rerun answered
 * by RerunRun is committed with its taken-over steps and its chosen step's new input, so the next
 * scheduler recovers it like any run and it finishes without calling the upstream handlers again.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { Executor } from "@nexusflow/executor";
import { RunStatus, TaskStatus, type Run } from "@nexusflow/gen";
import { killAll, startSchedulerProcess } from "../e2e/processes.js";
import { startTestDatabase, testLogger, waitFor, waitForRun, workflowClient } from "../support.js";

type Client = ReturnType<typeof workflowClient>;

function task(run: Run, stepId: string) {
  const t = run.tasks.find((x) => x.stepId === stepId);
  assert.ok(t, `task ${stepId}`);
  return t;
}

describe("a rerun across a scheduler SIGKILL", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let executor: Executor | undefined;
  const calls = new Map<string, number>();
  const inputs = new Map<string, unknown[]>();
  const broken = new Set<string>(["c"]);

  /** An in-process executor counting its handler's calls, attached to `address`. */
  const attach = async (address: string): Promise<Executor> => {
    const e = new Executor({
      schedulerAddress: address,
      executorId: "rerun-kill",
      slots: 4,
      builtins: false,
      logger: testLogger("executor"),
      reconnect: { initialDelayMs: 20, maxDelayMs: 500 },
    }).register("rk.step", (input: { name: string }) => {
      calls.set(input.name, (calls.get(input.name) ?? 0) + 1);
      inputs.set(input.name, [...(inputs.get(input.name) ?? []), input]);
      if (broken.has(input.name)) throw new Error(`${input.name} is broken`);
      return { value: `${input.name}-out` };
    });
    await e.start();
    return e;
  };

  before(async () => {
    db = await startTestDatabase();
  });

  after(async () => {
    await executor?.stop("test over");
    await killAll();
    await db?.close();
  });

  it(
    "recovers the rerun, with its new step input, and finishes it without the upstream handlers",
    { timeout: 180_000 },
    async () => {
      const first = await startSchedulerProcess("sched-rerun-1", db.url, 0);
      let client: Client = workflowClient(first.address);
      await client.registerWorkflow({
        definition: {
          case: "specJson",
          value: JSON.stringify({
            name: "rk-chain",
            version: 1,
            defaults: { retry: { maxAttempts: 1 } },
            steps: ["a", "b", "c", "d"].map((id, i, all) => ({
              id,
              type: "rk.step",
              dependsOn: i === 0 ? [] : [all[i - 1]],
              input: { name: id },
            })),
          }),
        },
      });
      executor = await attach(first.address);
      const { run } = await client.startRun({ workflowName: "rk-chain", input: jsonToValue({}) });
      assert.ok(run);
      const original = await waitForRun(client, run.id, 60_000);
      assert.equal(original.status, RunStatus.FAILED);
      await executor.stop("the rerun waits in the queue while the scheduler dies");
      executor = undefined;
      broken.delete("c");

      const { run: answer } = await client.rerunRun({
        runId: original.id,
        fromStep: "c",
        stepInput: jsonToValue({ name: "c", patched: true }),
      });
      assert.ok(answer);
      assert.equal(task(answer, "c").status, TaskStatus.QUEUED);
      await first.process.kill();

      const second = await startSchedulerProcess("sched-rerun-2", db.url, 0);
      client = workflowClient(second.address);
      executor = await attach(second.address);
      const rerun = await waitFor(
        "the rerun to finish after the restart",
        async () => {
          const { run: r } = await client.getRun({ runId: answer.id });
          return r?.status === RunStatus.SUCCEEDED || r?.status === RunStatus.FAILED ? r : undefined;
        },
        60_000,
      );
      assert.equal(rerun.status, RunStatus.SUCCEEDED);
      assert.deepEqual(Object.fromEntries(calls), { a: 1, b: 1, c: 2, d: 1 });
      assert.deepEqual(inputs.get("c")?.at(-1), { name: "c", patched: true });
      assert.deepEqual(valueToJson(task(rerun, "c").input), { name: "c", patched: true });
      assert.equal(rerun.rerunOf, original.id);
      assert.equal(task(rerun, "a").reusedFrom, task(original, "a").id);
      const { run: source } = await client.getRun({ runId: original.id });
      assert.deepEqual(source?.reruns, [rerun.id]);
    },
  );
});
