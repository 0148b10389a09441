/**
 * Rerun from a step (RerunRun, issue #26) on a real scheduler, executor and PostgreSQL: handlers
 * count their calls, so a rerun is shown to run exactly the chosen step and what is downstream of
 * it while the steps upstream keep their stored outputs (offloaded ones by reference); a diamond
 * rerun from one branch, a new input for the chosen step, idempotent reruns, hostile requests, and
 * a rerun that goes on across a scheduler restart.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, type ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { FilesystemArtifactStore } from "@nexusflow/common/artifacts";
import { Executor } from "@nexusflow/executor";
import { RunStatus, TaskStatus, type Run } from "@nexusflow/gen";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import { describeRun, registerSpec, task, type WorkflowClient } from "../e2e/harness.js";
import {
  failure,
  outboxEvents,
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

function fields(e: ConnectError): string[] {
  return e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
}

/** What the counting handler is given: its name, and whatever the template adds. */
interface StepInput {
  name: string;
  [key: string]: unknown;
}

/** A step of type rr.step named `id` (its input names it), after `dependsOn`. */
function step(id: string, dependsOn: string[] = [], input: Record<string, unknown> = {}) {
  return { id, type: "rr.step", dependsOn, input: { name: id, ...input } };
}

describe("rerun from a step", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let root: string;
  let scheduler: Scheduler;
  let executor: Executor | undefined;
  let client: WorkflowClient;
  let sql: pg.Client;
  /** Calls of each step name, over every run. */
  const calls = new Map<string, number>();
  /** Step names whose handler fails (the "bug"); removed to "fix" it. */
  const broken = new Set<string>();
  /** Inputs each step name was called with, in order. */
  const inputs = new Map<string, unknown[]>();

  const called = (name: string): number => calls.get(name) ?? 0;

  const startScheduler = async (): Promise<void> => {
    scheduler = await startTestScheduler(db.url, {
      artifacts: new FilesystemArtifactStore({ root }),
    });
    client = workflowClient(scheduler.address);
  };

  const startExecutor = async (): Promise<void> => {
    const e = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "rerun-tests",
      slots: 8,
      builtins: false,
      logger: testLogger("executor"),
      reconnect: { initialDelayMs: 20, maxDelayMs: 500 },
      artifacts: new FilesystemArtifactStore({ root }),
      offloadThresholdBytes: 16 * 1024,
    })
      .register("rr.step", (input: StepInput) => {
        calls.set(input.name, called(input.name) + 1);
        inputs.set(input.name, [...(inputs.get(input.name) ?? []), input]);
        if (broken.has(input.name)) throw new Error(`${input.name} is broken`);
        return { value: `${input.name}-out`, input };
      })
      .register("rr.big", (input: StepInput) => {
        calls.set(input.name, called(input.name) + 1);
        // Well over the offload threshold: reported as a claim check (output_ref).
        return { items: Array.from({ length: 2000 }, (_, i) => ({ i, tag: `item-${i}` })) };
      })
      .register("rr.count", (input: StepInput & { items?: unknown[] }) => {
        calls.set(input.name, called(input.name) + 1);
        if (broken.has(input.name)) throw new Error(`${input.name} is broken`);
        return { count: input.items?.length ?? -1 };
      });
    await e.start();
    await waitFor("the executor's session", () =>
      scheduler.engine.sessions().some((s) => s.executorId === "rerun-tests" && s.credit > 0),
    );
    executor = e;
  };

  const start = async (workflowName: string, input: unknown = {}): Promise<string> => {
    const { run } = await client.startRun({ workflowName, input: jsonToValue(input) });
    assert.ok(run);
    return run.id;
  };

  const getRun = async (runId: string): Promise<Run> => {
    const { run } = await client.getRun({ runId });
    assert.ok(run);
    return run;
  };

  /** A run of `workflowName` that failed at the broken step `at`. */
  const failedAt = async (workflowName: string, at: string): Promise<Run> => {
    broken.add(at);
    const run = await waitForRun(client, await start(workflowName, { order: 7 }));
    broken.delete(at);
    assert.equal(run.status, RunStatus.FAILED, describeRun(run));
    assert.equal(task(run, at).status, TaskStatus.FAILED, describeRun(run));
    return run;
  };

  before(async () => {
    db = await startTestDatabase();
    root = await mkdtemp(join(tmpdir(), "nf-reruns-"));
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    await startScheduler();
    await startExecutor();
    const once = { retry: { maxAttempts: 1 } };
    await registerSpec(client, {
      name: "rr-chain",
      version: 1,
      defaults: once,
      steps: [
        step("a", [], { order: "{{ input.order }}" }),
        step("b", ["a"], { a: "{{ steps.a.output.value }}" }),
        step("c", ["b"], { a: "{{ steps.a.output.value }}", b: "{{ steps.b.output.value }}" }),
        step("d", ["c"], { c: "{{ steps.c.output.value }}" }),
      ],
      output: { d: "{{ steps.d.output.value }}" },
    });
    await registerSpec(client, {
      name: "rr-diamond",
      version: 1,
      defaults: once,
      steps: [
        step("s"),
        step("l", ["s"], { s: "{{ steps.s.output.value }}" }),
        step("r", ["s"], { s: "{{ steps.s.output.value }}" }),
        step("j", ["l", "r"], { l: "{{ steps.l.output.value }}", r: "{{ steps.r.output.value }}" }),
      ],
    });
    await registerSpec(client, {
      name: "rr-offload",
      version: 1,
      defaults: once,
      steps: [
        { id: "big", type: "rr.big", input: { name: "big" } },
        {
          id: "use",
          type: "rr.count",
          dependsOn: ["big"],
          input: { name: "use", items: "{{ steps.big.output.items }}" },
        },
      ],
    });
    await registerSpec(client, {
      name: "rr-waiting",
      version: 1,
      steps: [{ id: "w", wait: { signal: "go" } }],
    });
  });

  after(async () => {
    await executor?.stop("test over");
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
    await rm(root, { recursive: true, force: true });
  });

  it("reruns a 4-step chain from its failed step: c and d run, a and b keep their outputs", async () => {
    const original = await failedAt("rr-chain", "c");
    assert.equal(task(original, "d").status, TaskStatus.SKIPPED);
    const before = { a: called("a"), b: called("b"), c: called("c"), d: called("d") };
    const { run: answer, created } = await client.rerunRun({ runId: original.id, fromStep: "c" });
    assert.ok(answer);
    assert.equal(created, true);
    assert.notEqual(answer.id, original.id);
    const rerun = await waitForRun(client, answer.id);
    assert.equal(rerun.status, RunStatus.SUCCEEDED, describeRun(rerun));
    // Exactly c and d ran again.
    assert.deepEqual(
      { a: called("a"), b: called("b"), c: called("c"), d: called("d") },
      { a: before.a, b: before.b, c: before.c + 1, d: before.d + 1 },
    );
    // c's template saw a's and b's stored outputs.
    assert.deepEqual(valueToJson(task(rerun, "c").input), { name: "c", a: "a-out", b: "b-out" });
    assert.deepEqual(valueToJson(rerun.output), { d: "d-out" });
    // Same version and input; reused steps name the original's tasks and ran no attempt.
    assert.equal(rerun.workflowVersion, original.workflowVersion);
    assert.deepEqual(valueToJson(rerun.input), valueToJson(original.input));
    for (const id of ["a", "b"]) {
      assert.equal(task(rerun, id).status, TaskStatus.SUCCEEDED);
      assert.equal(task(rerun, id).reusedFrom, task(original, id).id);
      assert.equal(task(rerun, id).attempts.length, 0);
      assert.deepEqual(valueToJson(task(rerun, id).output), valueToJson(task(original, id).output));
    }
    for (const id of ["c", "d"]) {
      assert.equal(task(rerun, id).reusedFrom, "");
      assert.equal(task(rerun, id).attempts.length, 1);
    }
    // Linked both ways, labelled.
    assert.equal(rerun.rerunOf, original.id);
    assert.equal(rerun.rerunFromStep, "c");
    assert.equal(rerun.labels["rerun-of"], original.id);
    assert.deepEqual((await getRun(original.id)).reruns, [rerun.id]);
    // Its events: started as a rerun, then the reused steps' successes, before any lease.
    const events = await waitFor("the rerun's events", async () => {
      const list = await outboxEvents(sql, [rerun.id]);
      return list.some((e) => e.type === "runCompleted") ? list : undefined;
    });
    const started = events[0]?.message.event;
    assert.equal(started?.case, "runStarted");
    assert.equal(started.value.rerunOf, original.id);
    assert.equal(started.value.rerunFromStep, "c");
    const reused = events.flatMap((e) =>
      e.message.event.case === "taskSucceeded" && e.message.event.value.reusedFrom !== ""
        ? [e.message.event.value.stepId]
        : [],
    );
    assert.deepEqual(reused, ["a", "b"]);
    const firstLease = events.findIndex((e) => e.type === "taskLeased");
    assert.ok(firstLease > 2, events.map((e) => e.type).join());
  });

  it("reruns a diamond from one branch: the other branch is reused, the join runs", async () => {
    const original = await failedAt("rr-diamond", "l");
    assert.equal(task(original, "r").status, TaskStatus.SUCCEEDED);
    const before = { s: called("s"), l: called("l"), r: called("r"), j: called("j") };
    const { run } = await client.rerunRun({ runId: original.id, fromStep: "l" });
    assert.ok(run);
    const rerun = await waitForRun(client, run.id);
    assert.equal(rerun.status, RunStatus.SUCCEEDED, describeRun(rerun));
    assert.deepEqual(
      { s: called("s"), l: called("l"), r: called("r"), j: called("j") },
      { s: before.s, l: before.l + 1, r: before.r, j: before.j + 1 },
    );
    assert.equal(task(rerun, "r").reusedFrom, task(original, "r").id);
    assert.deepEqual(valueToJson(task(rerun, "j").input), { name: "j", l: "l-out", r: "r-out" });
    // From the branch's top: both branches and the join run, s is reused.
    const again = await client.rerunRun({ runId: rerun.id, fromStep: "s" });
    assert.ok(again.run);
    const third = await waitForRun(client, again.run.id);
    assert.equal(third.status, RunStatus.SUCCEEDED, describeRun(third));
    assert.deepEqual(
      { s: called("s"), l: called("l"), r: called("r"), j: called("j") },
      { s: before.s + 1, l: before.l + 2, r: before.r + 1, j: before.j + 2 },
    );
  });

  it("runs the chosen step with a new input instead of its template", async () => {
    const original = await failedAt("rr-chain", "c");
    const a = called("a");
    const { run } = await client.rerunRun({
      runId: original.id,
      fromStep: "c",
      stepInput: jsonToValue({ name: "c", a: "patched", b: "by hand" }),
    });
    assert.ok(run);
    const rerun = await waitForRun(client, run.id);
    assert.equal(rerun.status, RunStatus.SUCCEEDED, describeRun(rerun));
    assert.deepEqual(valueToJson(task(rerun, "c").input), { name: "c", a: "patched", b: "by hand" });
    assert.deepEqual(inputs.get("c")?.at(-1), { name: "c", a: "patched", b: "by hand" });
    // d's template renders as usual, from c's new output.
    assert.deepEqual(valueToJson(task(rerun, "d").input), { name: "d", c: "c-out" });
    assert.equal(called("a"), a);
  });

  it("reuses an offloaded output by its claim check", async () => {
    const original = await failedAt("rr-offload", "use");
    const ref = task(original, "big").outputRef;
    assert.ok(ref !== undefined && ref.key !== "", "big's output was offloaded");
    const big = called("big");
    const { run } = await client.rerunRun({ runId: original.id, fromStep: "use" });
    assert.ok(run);
    const rerun = await waitForRun(client, run.id);
    assert.equal(rerun.status, RunStatus.SUCCEEDED, describeRun(rerun));
    assert.equal(called("big"), big, "big did not run again");
    assert.equal(task(rerun, "big").outputRef?.key, ref.key, "the same claim check");
    assert.deepEqual(valueToJson(task(rerun, "use").output), { count: 2000 });
  });

  it("answers a repeated idempotency key with the same rerun, another request with ALREADY_EXISTS", async () => {
    const original = await failedAt("rr-chain", "c");
    const first = await client.rerunRun({ runId: original.id, fromStep: "c", idempotencyKey: "fix-1" });
    const second = await client.rerunRun({ runId: original.id, fromStep: "c", idempotencyKey: "fix-1" });
    assert.ok(first.run && second.run);
    assert.equal(first.created, true);
    assert.equal(second.created, false);
    assert.equal(second.run.id, first.run.id);
    await waitForRun(client, first.run.id);
    const later = await client.rerunRun({ runId: original.id, fromStep: "c", idempotencyKey: "fix-1" });
    assert.equal(later.run?.id, first.run.id, "after the rerun ended too");
    const other = await failure(
      client.rerunRun({ runId: original.id, fromStep: "d", idempotencyKey: "fix-1" }),
    );
    assert.equal(other.code, Code.AlreadyExists, other.message);
    assert.deepEqual((await getRun(original.id)).reruns, [first.run.id]);
  });

  it("refuses bad requests with the right code, naming the field or the step", async () => {
    const original = await failedAt("rr-chain", "c");
    const invalid = async (req: Parameters<WorkflowClient["rerunRun"]>[0], field: string): Promise<void> => {
      const e = await failure(client.rerunRun(req));
      assert.equal(e.code, Code.InvalidArgument, e.message);
      assert.deepEqual(fields(e), [field], e.message);
    };
    await invalid({ runId: "", fromStep: "c" }, "run_id");
    await invalid({ runId: "not-a-run", fromStep: "c" }, "run_id");
    await invalid({ runId: original.id, fromStep: "" }, "from_step");
    await invalid({ runId: original.id, fromStep: "x".repeat(64) }, "from_step");
    await invalid({ runId: original.id, fromStep: "c\u0000" }, "from_step");
    await invalid({ runId: original.id, fromStep: "c", idempotencyKey: "k".repeat(201) }, "idempotency_key");
    await invalid(
      {
        runId: original.id,
        fromStep: "c",
        stepInput: create(ValueSchema, { kind: { case: "nullValue", value: 0 } }),
      },
      "step_input",
    );
    await invalid(
      {
        runId: original.id,
        fromStep: "c",
        stepInput: create(ValueSchema, { kind: { case: "numberValue", value: NaN } }),
      },
      "step_input",
    );
    const missing = await failure(
      client.rerunRun({ runId: "00000000-0000-4000-8000-000000000000", fromStep: "c" }),
    );
    assert.equal(missing.code, Code.NotFound, missing.message);
    const noStep = await failure(client.rerunRun({ runId: original.id, fromStep: "nope" }));
    assert.equal(noStep.code, Code.NotFound, noStep.message);
    assert.match(noStep.message, /no step "nope"/);
    // d's upstream step c failed: rerun from c (or above), not from d.
    const upstream = await failure(client.rerunRun({ runId: original.id, fromStep: "d" }));
    assert.equal(upstream.code, Code.FailedPrecondition, upstream.message);
    assert.match(upstream.message, /step c, upstream of d, did not succeed/);
    // A run still active.
    const waiting = await start("rr-waiting");
    await waitFor("the wait", async () =>
      task(await getRun(waiting), "w").status === TaskStatus.WAITING ? true : undefined,
    );
    const active = await failure(client.rerunRun({ runId: waiting, fromStep: "w" }));
    assert.equal(active.code, Code.FailedPrecondition, active.message);
    assert.match(active.message, /still active/);
    await client.cancelRun({ runId: waiting, reason: "test over" });
    // Nothing was started by any of them.
    assert.deepEqual((await getRun(original.id)).reruns, []);
  });

  it("carries a rerun (and its chosen step's new input) across a scheduler restart", async () => {
    const original = await failedAt("rr-chain", "c");
    const a = called("a");
    const b = called("b");
    // No executor: the rerun's c stays queued while the scheduler restarts.
    await executor?.stop("restart test");
    executor = undefined;
    const { run } = await client.rerunRun({
      runId: original.id,
      fromStep: "c",
      stepInput: jsonToValue({ name: "c", a: "after", b: "restart" }),
    });
    assert.ok(run);
    await waitFor("c queued", async () =>
      task(await getRun(run.id), "c").status === TaskStatus.QUEUED ? true : undefined,
    );
    await scheduler.stop();
    await startScheduler();
    await startExecutor();
    const rerun = await waitForRun(client, run.id);
    assert.equal(rerun.status, RunStatus.SUCCEEDED, describeRun(rerun));
    assert.equal(called("a"), a);
    assert.equal(called("b"), b);
    assert.deepEqual(inputs.get("c")?.at(-1), { name: "c", a: "after", b: "restart" });
    assert.equal(rerun.rerunOf, original.id);
    assert.equal(task(rerun, "b").reusedFrom, task(original, "b").id);
  });
});
