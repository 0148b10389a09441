/**
 * A concurrency key that reads an offloaded output, across a scheduler restart, on a real
 * scheduler, executor and PostgreSQL (core/unread-keys.ts): step a's output is stored as an
 * artifact (a claim check), step b's key reads it. After the restart, while the outputs are being
 * read back (held by the test), no queued b is leased, ExplainPending says it waits for the read,
 * and the leased b it held before the restart runs on; once read, the key holds in queue order:
 * never two b of the key at once (checked over the attempts' lease and end times), all finish.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { jsonToValue } from "@nexusflow/common";
import { FilesystemArtifactStore } from "@nexusflow/common/artifacts";
import { Executor, type TaskContext } from "@nexusflow/executor";
import { RunStatus, TaskStatus, type Run } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import { date, registerSpec, task, type WorkflowClient } from "../e2e/harness.js";
import {
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
  maxOverlap,
} from "../support.js";

/** A filesystem store whose reads wait while the test holds them (`hold`, `release`). */
class GatedStore extends FilesystemArtifactStore {
  reads = 0;
  private gate: Promise<void> | null = null;
  private open: () => void = () => undefined;

  hold(): void {
    this.gate = new Promise((resolve) => (this.open = resolve));
  }

  release(): void {
    this.gate = null;
    this.open();
  }

  override async get(key: string): Promise<Readable> {
    this.reads++;
    if (this.gate !== null) await this.gate;
    return super.get(key);
  }
}

describe("a concurrency key reading an offloaded output, across a restart", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let root: string;
  let scheduler: Scheduler;
  let client: WorkflowClient;
  let executor: Executor;
  /** Handlers of b waiting to be let go, by their input id; none wait once `auto` is set. */
  const held = new Map<string, () => void>();
  let auto = false;

  before(async () => {
    db = await startTestDatabase();
    root = await mkdtemp(join(tmpdir(), "nf-offloaded-keys-"));
    // A long session timeout: the lease held across the restart is reclaimed, never expired.
    scheduler = await startTestScheduler(db.url, {
      sessionTimeoutMs: 10_000,
      artifacts: new FilesystemArtifactStore({ root }),
    });
    client = workflowClient(scheduler.address);
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "ok-exec",
      slots: 8,
      builtins: false,
      logger: testLogger("executor"),
      reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
      artifacts: new FilesystemArtifactStore({ root }),
      offloadThresholdBytes: 16 * 1024,
    });
    // Well over the offload threshold: reported as a claim check (output_ref).
    executor.register("ok.big", (input: unknown) => ({
      c: (input as { c: string }).c,
      pad: "x".repeat(40_000),
    }));
    executor.register("ok.hold", async (input: unknown, ctx: TaskContext) => {
      const { id } = input as { id: string };
      // A few milliseconds of work, so that two b of a key would overlap if nothing stopped them.
      if (auto) return sleep(5).then(() => ({ id }));
      return new Promise((resolve, reject) => {
        held.set(id, () => resolve({ id }));
        ctx.signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true });
      });
    });
    await executor.start();
    await registerSpec(client, {
      name: "ok-keyed",
      version: 1,
      steps: [
        { id: "a", type: "ok.big", input: { c: "{{ input.c }}" } },
        {
          id: "b",
          type: "ok.hold",
          dependsOn: ["a"],
          input: { id: "{{ input.id }}" },
          concurrency: [{ key: "steps.a.output.c", limit: 1 }],
        },
      ],
    });
  });

  after(async () => {
    await executor?.stop();
    await scheduler?.stop();
    await db?.close();
    if (root !== undefined) await rm(root, { recursive: true, force: true });
  });

  const start = async (input: unknown): Promise<string> => {
    const { run } = await client.startRun({ workflowName: "ok-keyed", input: jsonToValue(input) });
    assert.ok(run);
    return run.id;
  };

  const explainB = (runId: string) => client.explainPending({ runId, stepId: "b" });

  it("no b is leased until the keys are read back, then one at a time in queue order; all finish", async () => {
    const first = await start({ c: "k", id: "r1" });
    await waitFor("r1's b running", () => (held.has("r1") ? true : undefined), 30_000);
    const others: string[] = [];
    for (const id of ["r2", "r3", "r4"]) others.push(await start({ c: "k", id }));
    const ids = [first, ...others];
    // r2, r3 and r4's b wait in the key's queue, behind r1's.
    await waitFor("the last b third in the key's queue", async () => {
      const g = (await explainB(others[2] as string)).gates.find(
        (x) => x.gate.case === "concurrencyKey",
      )?.gate;
      return g?.case === "concurrencyKey" && g.value.position === 3 ? true : undefined;
    });

    // Restart (same database and port) with the read-back of offloaded outputs held.
    const port = Number(scheduler.address.slice(scheduler.address.lastIndexOf(":") + 1));
    await scheduler.stop();
    const store = new GatedStore({ root });
    store.hold();
    scheduler = await startTestScheduler(db.url, { sessionTimeoutMs: 10_000, port, artifacts: store });
    await waitFor("the four outputs being read", () => (store.reads >= 4 ? true : undefined), 30_000);
    await waitFor(
      "the executor back, its lease reclaimed",
      () =>
        scheduler.engine.sessions().some((s) => s.executorId === "ok-exec" && s.leases.size >= 1) ||
        undefined,
      30_000,
    );
    // The dispatcher passed over the queued b (none is left in its type's queue): none was leased.
    await waitFor("the queued b passed over", () =>
      scheduler.engine.waitingTasks("ok.hold").length === 0 ? true : undefined,
    );
    for (const runId of others) {
      const r = await explainB(runId);
      assert.equal(r.status, TaskStatus.QUEUED, "not leased while its key is not known");
      const deps = r.gates.find((x) => x.gate.case === "dependencies")?.gate;
      assert.ok(deps?.case === "dependencies", "ExplainPending names the read");
      assert.deepEqual(deps.value.readingOutputStepIds, ["a"]);
    }
    assert.deepEqual([...held.keys()], ["r1"], "only r1's b runs");
    const { run } = await client.getRun({ runId: others[0] as string });
    assert.match(
      run?.tasks.find((t) => t.stepId === "b")?.pendingReason ?? "",
      /reading the offloaded output of a/,
    );

    // Read back: r1's b holds the key, the others wait in its queue in their order.
    store.release();
    await waitFor("r4's b third in the key's queue again, behind r1's", async () => {
      const g = (await explainB(others[2] as string)).gates.find(
        (x) => x.gate.case === "concurrencyKey",
      )?.gate;
      return g?.case === "concurrencyKey" && g.value.position === 3 && g.value.holders[0]?.runId === first
        ? true
        : undefined;
    });
    assert.deepEqual([...held.keys()], ["r1"]);
    auto = true;
    held.get("r1")?.();
    const runs: Run[] = await Promise.all(ids.map((id) => waitForRun(client, id, 60_000)));
    assert.deepEqual(
      runs.filter((r) => r.status !== RunStatus.SUCCEEDED).map((r) => r.id),
      [],
      "every run succeeds",
    );
    const spans = runs.flatMap((r) =>
      task(r, "b").attempts.map((a): [number, number] => [
        date(a.leaseTime, "lease time").getTime(),
        date(a.endTime, "end time").getTime(),
      ]),
    );
    assert.equal(spans.length, 4, "one attempt each");
    assert.equal(maxOverlap(spans), 1, "never two b of the key at once");
  });
});
