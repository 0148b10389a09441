/**
 * End to end through the real pieces in one process: a scheduler on port 0 over a real embedded
 * PostgreSQL, and real `Executor`s of the executor package attached over gRPC. Each test registers
 * a workflow, runs it, and checks what a user sees (GetRun, ListRuns, WatchRun) against what was
 * committed (the tables).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { Executor, TaskError, type ExecutorOptions } from "@nexusflow/executor";
import { RunStatus, RunView, TaskStatus, type Run } from "@nexusflow/gen";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Scheduler } from "../../src/scheduler.js";
import {
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";
import {
  RunTables,
  assertOneAcceptedCompletion,
  assertOutboxContiguous,
  date,
  describeRun,
  registerSpec,
  task,
  type WorkflowClient,
} from "./harness.js";

/** The handlers of the two general-purpose executors (besides the built-ins). */
function registerMath(executor: Executor): Executor {
  return executor
    .register("math.double", async (input: { x: number }, ctx) => {
      // Simulated work, so that b and c genuinely overlap and d has something to wait for.
      await delay(30, undefined, { signal: ctx.signal });
      return { y: input.x * 2 };
    })
    .register("math.inc", (input: { x: number }) => ({ z: input.x + 1 }))
    .register("square", (input: { i: number }) => ({ i: input.i, v: input.i * input.i }))
    .register("collect", (input: { values: number[] }) => ({
      count: input.values.length,
      distinct: new Set(input.values).size,
      sum: input.values.reduce((a, b) => a + b, 0),
    }))
    .register("explode", () => {
      throw TaskError.terminal("KABOOM", "the reactor exploded");
    });
}

describe("DAG execution end to end", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: WorkflowClient;
  let tables: RunTables;
  const executors: Executor[] = [];

  const executor = (options: ExecutorOptions, setup: (e: Executor) => Executor = (e) => e): Executor => {
    const e = setup(
      new Executor({
        schedulerAddress: scheduler.address,
        logger: testLogger("executor"),
        reconnect: { initialDelayMs: 20, maxDelayMs: 500 },
        drainTimeoutMs: 2000,
        ...options,
      }),
    );
    executors.push(e);
    return e;
  };

  const start = async (
    workflowName: string,
    input: unknown = {},
    labels: Record<string, string> = {},
  ): Promise<string> => {
    const { run } = await client.startRun({ workflowName, input: jsonToValue(input), labels });
    assert.ok(run);
    return run.id;
  };

  const finished = async (runId: string, status = RunStatus.SUCCEEDED): Promise<Run> => {
    const run = await waitForRun(client, runId, 60_000);
    assert.equal(run.status, status, describeRun(run));
    return run;
  };

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    tables = new RunTables(db.url);
    // Two interchangeable general-purpose executors, and two specialists for the routing test.
    const general = [
      executor({ executorId: "general-1", slots: 8 }, registerMath),
      executor({ executorId: "general-2", slots: 8 }, registerMath),
    ];
    const alpha = executor({ executorId: "only-alpha", slots: 2, builtins: false }, (e) =>
      e.register("alpha", (input: unknown) => ({ ranBy: "only-alpha", input })),
    );
    const beta = executor({ executorId: "only-beta", slots: 2, builtins: false }, (e) =>
      e.register("beta", (input: unknown) => ({ ranBy: "only-beta", input })),
    );
    await Promise.all([...general, alpha, beta].map((e) => e.start()));
    // Attached and holding credit: work started from now on can go to any of them.
    await waitFor("four sessions with credit", () =>
      [...scheduler.engine.sessions()].filter((s) => s.credit > 0).length === 4 ? true : undefined,
    );
  });

  after(async () => {
    await Promise.all(executors.map((e) => e.stop("test over")));
    await tables?.close();
    await scheduler?.stop();
    await db?.close();
  });

  it("runs a diamond, passing outputs downstream through templates, in dependency order", async () => {
    await registerSpec(client, {
      name: "e2e-diamond",
      version: 1,
      steps: [
        { id: "a", type: "noop", input: { x: "{{ input.x }}" } },
        { id: "b", type: "math.double", dependsOn: ["a"], input: { x: "{{ steps.a.output.x }}" } },
        { id: "c", type: "math.inc", dependsOn: ["a"], input: { x: "{{ steps.a.output.x }}" } },
        {
          id: "d",
          type: "noop",
          dependsOn: ["b", "c"],
          input: {
            sum: "{{ steps.b.output.y + steps.c.output.z }}",
            label: "b={{ steps.b.output.y }} c={{ steps.c.output.z }}",
          },
        },
      ],
      output: {
        result: "{{ steps.d.output.sum }}",
        label: "{{ steps.d.output.label }}",
        doubled: "{{ steps.b.output.y }}",
      },
    });
    const runId = await start("e2e-diamond", { x: 20 });
    const run = await finished(runId);

    assert.deepEqual(valueToJson(run.output), { result: 61, label: "b=40 c=21", doubled: 40 });
    assert.deepEqual(valueToJson(task(run, "b").output), { y: 40 });
    assert.deepEqual(valueToJson(task(run, "c").output), { z: 21 });
    assert.deepEqual(valueToJson(task(run, "d").input), { sum: 61, label: "b=40 c=21" });
    for (const t of run.tasks) {
      assert.equal(t.status, TaskStatus.SUCCEEDED, describeRun(run));
      assert.equal(t.attempts.length, 1, describeRun(run));
      assert.equal(t.attempts[0]?.status, TaskStatus.SUCCEEDED);
    }
    // d was leased only once both b and c had ended; b and c only after a had ended.
    const ended = (id: string): number => date(task(run, id).attempts[0]?.endTime, `${id} end`).getTime();
    const leased = (id: string): number =>
      date(task(run, id).attempts[0]?.leaseTime, `${id} lease`).getTime();
    const started = (id: string): number =>
      date(task(run, id).attempts[0]?.startTime, `${id} start`).getTime();
    assert.ok(leased("b") >= ended("a") && leased("c") >= ended("a"), describeRun(run));
    assert.ok(leased("d") >= Math.max(ended("b"), ended("c")), describeRun(run));
    assert.ok(started("d") >= Math.max(ended("b"), ended("c")), describeRun(run));

    await assertOneAcceptedCompletion(tables, runId);
    const events = await assertOutboxContiguous(tables, runId);
    assert.equal(events.filter((e) => e.type === "taskSucceeded").length, 4);
  });

  it("fans out to 100 tasks over two executors and fans their outputs back in", async () => {
    const width = 100;
    const fan = Array.from({ length: width }, (_, i) => ({
      id: `f${i}`,
      type: "square",
      dependsOn: ["root"],
      input: { i: `{{ steps.root.output.offset + ${i} }}` },
    }));
    await registerSpec(client, {
      name: "e2e-fan",
      version: 1,
      steps: [
        { id: "root", type: "noop", input: { offset: "{{ input.offset }}" } },
        ...fan,
        {
          id: "join",
          type: "collect",
          dependsOn: fan.map((f) => f.id),
          input: { values: fan.map((f) => `{{ steps.${f.id}.output.v }}`) },
        },
      ],
      output: { count: "{{ steps.join.output.count }}", sum: "{{ steps.join.output.sum }}" },
    });
    const runId = await start("e2e-fan", { offset: 0 });
    const run = await finished(runId);

    assert.equal(run.tasks.length, width + 2);
    assert.ok(
      run.tasks.every((t) => t.status === TaskStatus.SUCCEEDED && t.attempts.length === 1),
      describeRun(run),
    );
    const sumOfSquares = Array.from({ length: width }, (_, i) => i * i).reduce((a, b) => a + b, 0);
    assert.deepEqual(valueToJson(task(run, "join").output), {
      count: width,
      distinct: width,
      sum: sumOfSquares,
    });
    assert.deepEqual(valueToJson(run.output), { count: width, sum: sumOfSquares });
    const byExecutor = new Map<string, number>();
    for (const t of run.tasks) {
      const id = t.attempts[0]?.executorId ?? "";
      byExecutor.set(id, (byExecutor.get(id) ?? 0) + 1);
    }
    assert.deepEqual(
      [...byExecutor.keys()].sort(),
      ["general-1", "general-2"],
      JSON.stringify([...byExecutor]),
    );
    await assertOneAcceptedCompletion(tables, runId);
  });

  it("runs a chain of 100 steps, each adding one to its predecessor's output", async () => {
    const length = 100;
    await registerSpec(client, {
      name: "e2e-chain",
      version: 1,
      steps: Array.from({ length }, (_, i) =>
        i === 0
          ? { id: "s1", type: "noop", input: { n: "{{ input.n + 1 }}" } }
          : {
              id: `s${i + 1}`,
              type: "noop",
              dependsOn: [`s${i}`],
              input: { n: `{{ steps.s${i}.output.n + 1 }}` },
            },
      ),
      output: { n: `{{ steps.s${length}.output.n }}` },
    });
    const runId = await start("e2e-chain", { n: 0 });
    const run = await finished(runId);
    assert.deepEqual(valueToJson(run.output), { n: 100 });
    assert.deepEqual(valueToJson(task(run, "s57").output), { n: 57 });
    assert.ok(
      run.tasks.every((t) => t.status === TaskStatus.SUCCEEDED && t.attempts.length === 1),
      describeRun(run),
    );
    await assertOneAcceptedCompletion(tables, runId);
  });

  it("routes every step to an executor that advertises its type", async () => {
    await registerSpec(client, {
      name: "e2e-routing",
      version: 1,
      steps: [
        { id: "a1", type: "alpha", input: { n: 1 } },
        { id: "b1", type: "beta", dependsOn: ["a1"], input: { from: "{{ steps.a1.output.ranBy }}" } },
        { id: "a2", type: "alpha", dependsOn: ["b1"], input: { from: "{{ steps.b1.output.ranBy }}" } },
        { id: "b2", type: "beta", input: { n: 2 } },
        { id: "a3", type: "alpha", input: { n: 3 } },
      ],
    });
    const runId = await start("e2e-routing");
    const run = await finished(runId);
    for (const t of run.tasks) {
      const owner = t.type === "alpha" ? "only-alpha" : "only-beta";
      assert.deepEqual(
        t.attempts.map((a) => a.executorId),
        [owner],
        describeRun(run),
      );
      assert.equal((valueToJson(t.output) as { ranBy: string }).ranBy, owner);
    }
    assert.deepEqual(valueToJson(task(run, "b1").input), { from: "only-alpha" });
    assert.deepEqual(valueToJson(task(run, "a2").input), { from: "only-beta" });
  });

  it("skips a branch whose condition is false and still runs the join", async () => {
    await registerSpec(client, {
      name: "e2e-branch",
      version: 1,
      steps: [
        { id: "decide", type: "noop", input: { express: "{{ input.express }}" } },
        {
          id: "fast",
          type: "noop",
          dependsOn: ["decide"],
          when: "steps.decide.output.express",
          input: { carrier: "rocket" },
        },
        {
          id: "slow",
          type: "noop",
          dependsOn: ["decide"],
          when: "!steps.decide.output.express",
          input: { carrier: "snail" },
        },
        { id: "after_slow", type: "noop", dependsOn: ["slow"] },
        {
          id: "ship",
          type: "noop",
          dependsOn: ["fast", "slow"],
          input: { carrier: "{{ steps.fast.output.carrier || steps.slow.output.carrier }}" },
        },
      ],
      output: { carrier: "{{ steps.ship.output.carrier }}" },
    });
    const runId = await start("e2e-branch", { express: true });
    const run = await finished(runId);
    assert.deepEqual(valueToJson(run.output), { carrier: "rocket" });
    assert.equal(task(run, "fast").status, TaskStatus.SUCCEEDED);
    assert.equal(task(run, "slow").status, TaskStatus.SKIPPED);
    assert.equal(task(run, "slow").skipReason, "condition");
    assert.equal(task(run, "slow").attempts.length, 0);
    // A step whose only dependency was not taken is not taken either.
    assert.equal(task(run, "after_slow").status, TaskStatus.SKIPPED);
    assert.equal(task(run, "after_slow").skipReason, "condition");
    assert.equal(task(run, "ship").status, TaskStatus.SUCCEEDED);

    const other = await finished(await start("e2e-branch", { express: false }));
    assert.deepEqual(valueToJson(other.output), { carrier: "snail" });
    assert.equal(task(other, "fast").skipReason, "condition");
    assert.equal(task(other, "after_slow").status, TaskStatus.SUCCEEDED);
  });

  it("fails the run on a terminal task error, skipping its dependents as upstream", async () => {
    await registerSpec(client, {
      name: "e2e-failure",
      version: 1,
      steps: [
        { id: "prepare", type: "noop", input: { ok: true } },
        {
          id: "reactor",
          type: "explode",
          dependsOn: ["prepare"],
          retry: { maxAttempts: 3, initialInterval: "10ms" },
        },
        { id: "cool_down", type: "noop", dependsOn: ["reactor"] },
        { id: "report", type: "noop", dependsOn: ["cool_down", "prepare"] },
        { id: "independent", type: "noop", dependsOn: ["prepare"] },
      ],
    });
    const runId = await start("e2e-failure");
    const run = await finished(runId, RunStatus.FAILED);
    const reactor = task(run, "reactor");
    assert.equal(reactor.status, TaskStatus.FAILED);
    // Terminal: not retried despite maxAttempts 3.
    assert.equal(reactor.attempts.length, 1, describeRun(run));
    assert.equal(reactor.error?.type, "KABOOM");
    for (const id of ["cool_down", "report"]) {
      assert.equal(task(run, id).status, TaskStatus.SKIPPED, describeRun(run));
      assert.equal(task(run, id).skipReason, "upstream", describeRun(run));
    }
    assert.equal(task(run, "independent").status, TaskStatus.SUCCEEDED, "an independent branch still runs");
    assert.equal(run.error?.type, "KABOOM");
    assert.match(run.error?.message ?? "", /\breactor\b/);
    assert.match(run.error?.message ?? "", /the reactor exploded/);
  });

  it("streams a run's updates with WatchRun until it is terminal", async () => {
    await registerSpec(client, {
      name: "e2e-watch",
      version: 1,
      steps: [
        { id: "a", type: "noop" },
        { id: "b", type: "sleep", dependsOn: ["a"], input: { duration: "100ms" } },
        { id: "c", type: "math.inc", dependsOn: ["a"], input: { x: 1 } },
        { id: "d", type: "noop", dependsOn: ["b", "c"] },
      ],
    });
    const runId = await start("e2e-watch");
    const seen: Run[] = [];
    for await (const m of client.watchRun({ runId }, { signal: AbortSignal.timeout(30_000) })) {
      assert.ok(m.run);
      seen.push(m.run);
    }
    assert.ok(seen.length >= 2, `only ${seen.length} updates`);
    const last = seen.at(-1) as Run;
    assert.equal(last.status, RunStatus.SUCCEEDED, describeRun(last));
    assert.ok(last.tasks.every((t) => t.status === TaskStatus.SUCCEEDED));
    const terminal = new Set([
      RunStatus.SUCCEEDED,
      RunStatus.FAILED,
      RunStatus.CANCELLED,
      RunStatus.TIMED_OUT,
    ]);
    assert.ok(
      seen.slice(0, -1).every((r) => !terminal.has(r.status)),
      "only the last update is terminal",
    );
    // Without retries a task only moves forward: PENDING < QUEUED < LEASED < RUNNING < SUCCEEDED.
    const history = new Map<string, TaskStatus[]>();
    for (const r of seen)
      for (const t of r.tasks) history.set(t.stepId, [...(history.get(t.stepId) ?? []), t.status]);
    for (const [step, statuses] of history) {
      assert.ok(
        statuses.every((s, i) => i === 0 || s >= (statuses[i - 1] as TaskStatus)),
        `${step} went ${statuses.map((s) => TaskStatus[s]).join(" -> ")}`,
      );
    }
    // The final state equals what GetRun says.
    const { run } = await client.getRun({ runId });
    assert.deepEqual(
      run?.tasks.map((t) => [t.stepId, t.status, t.attempts.length]),
      last.tasks.map((t) => [t.stepId, t.status, t.attempts.length]),
    );
  });

  it("pages ListRuns without duplicates, filters by label, and dedupes concurrent StartRun by idempotency key", async () => {
    await registerSpec(client, { name: "e2e-list", version: 1, steps: [{ id: "only", type: "noop" }] });
    const suite = `list-${Date.now()}`;
    // Concurrent starts: several runs may share a created_at millisecond, which the page token must handle.
    const ids = await Promise.all(
      Array.from({ length: 7 }, (_, i) =>
        start("e2e-list", { i }, { suite, parity: i % 2 === 0 ? "even" : "odd" }),
      ),
    );
    await Promise.all(ids.map((id) => finished(id)));

    const pages: string[][] = [];
    let token = "";
    do {
      const page = await client.listRuns({ labels: { suite }, pageSize: 3, pageToken: token });
      pages.push(page.runs.map((r) => r.id));
      for (const r of page.runs) assert.equal(r.labels["suite"], suite);
      token = page.nextPageToken;
      assert.ok(pages.length <= 5, "pagination does not end");
    } while (token !== "");
    assert.deepEqual(
      pages.map((p) => p.length),
      [3, 3, 1],
    );
    const listed = pages.flat();
    assert.equal(new Set(listed).size, listed.length, `duplicates across pages: ${JSON.stringify(pages)}`);
    assert.deepEqual([...listed].sort(), [...ids].sort());

    // Newest first: creation times never increase down the pages.
    const all = await client.listRuns({ labels: { suite }, pageSize: 100 });
    const times = all.runs.map((r) => date(r.createTime, "create time").getTime());
    assert.ok(
      times.every((t, i) => i === 0 || t <= (times[i - 1] as number)),
      JSON.stringify(times),
    );
    assert.deepEqual(
      all.runs.map((r) => r.id),
      listed,
      "paging and one big page agree on the order",
    );

    const even = await client.listRuns({ labels: { suite, parity: "even" }, pageSize: 100 });
    assert.deepEqual(even.runs.map((r) => r.id).sort(), ids.filter((_, i) => i % 2 === 0).sort());
    const none = await client.listRuns({ labels: { suite: `${suite}-nope` } });
    assert.equal(none.runs.length, 0);

    const key = `idem-${suite}`;
    const [r1, r2] = await Promise.all([
      client.startRun({ workflowName: "e2e-list", input: jsonToValue({ k: 1 }), idempotencyKey: key }),
      client.startRun({ workflowName: "e2e-list", input: jsonToValue({ k: 1 }), idempotencyKey: key }),
    ]);
    assert.ok(r1.run && r2.run);
    assert.equal(r1.run.id, r2.run.id);
    assert.deepEqual([r1.created, r2.created].sort(), [false, true]);
    await finished(r1.run.id);
    const r3 = await client.startRun({
      workflowName: "e2e-list",
      input: jsonToValue({ k: 1 }),
      idempotencyKey: key,
    });
    assert.equal(r3.run?.id, r1.run.id);
    assert.equal(r3.created, false);
    const keyed = await client.listRuns({ workflowName: "e2e-list", pageSize: 100 });
    assert.equal(keyed.runs.filter((r) => r.idempotencyKey === key).length, 1);
  });

  it("answers StartRun with the BASIC view (no input, output or tasks), for new runs and repeated keys", async () => {
    await registerSpec(client, { name: "e2e-view", version: 1, steps: [{ id: "only", type: "noop" }] });
    const key = `view-${Date.now()}`;
    const request = {
      workflowName: "e2e-view",
      input: jsonToValue({ k: 2 }),
      idempotencyKey: key,
      labels: { view: "basic" },
      view: RunView.BASIC,
    };
    const fresh = await client.startRun(request);
    assert.equal(fresh.created, true);
    const run = fresh.run;
    assert.ok(run !== undefined && run.id !== "");
    assert.deepEqual(
      [run.workflowName, run.workflowVersion, run.idempotencyKey, run.labels, run.tasks.length],
      ["e2e-view", 1, key, { view: "basic" }, 0],
    );
    assert.equal(run.input, undefined);
    assert.ok(run.createTime !== undefined);
    assert.notEqual(run.status, RunStatus.UNSPECIFIED);
    await finished(run.id);
    // A repeated key answers from the stored row, in the same view.
    const again = await client.startRun(request);
    assert.equal(again.created, false);
    assert.equal(again.run?.id, run.id);
    assert.equal(again.run?.status, RunStatus.SUCCEEDED);
    assert.equal(again.run?.tasks.length, 0);
    assert.equal(again.run?.input, undefined);
    assert.ok(again.run?.endTime !== undefined);
    // The first answer came from memory, this one from the row: times survive the write to the millisecond.
    assert.equal(
      date(again.run.createTime, "stored create time").getTime(),
      date(run.createTime, "create time").getTime(),
    );
    // Unspecified means FULL: the same call without a view carries input and tasks.
    const full = await client.startRun({ ...request, view: RunView.UNSPECIFIED });
    assert.deepEqual(valueToJson(full.run?.input), { k: 2 });
    assert.equal(full.run?.tasks.length, 1);

    const err = await client.startRun({ ...request, view: 7 as RunView }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    assert.ok(err !== undefined, "an unknown view is refused");
    assert.equal(err.code, Code.InvalidArgument);
    assert.deepEqual(
      err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field)),
      ["view"],
    );
  });

  it("refuses text PostgreSQL cannot store (U+0000) where it enters, naming the field, and keeps committing", async () => {
    const refused = async (call: () => Promise<unknown>): Promise<string[]> => {
      const err = await call().then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      assert.ok(err !== undefined, "refused");
      assert.equal(err.code, Code.InvalidArgument, err.message);
      return err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
    };
    await registerSpec(client, {
      name: "e2e-nul",
      version: 1,
      steps: [{ id: "out", type: "nul.out", input: { n: 1 } }],
    });
    const base = { workflowName: "e2e-nul", input: jsonToValue({ ok: "yes" }) };
    assert.deepEqual(
      await refused(() => client.startRun({ ...base, input: jsonToValue({ a: [{ b: "x\u0000" }] }) })),
      ["input.a[0].b"],
    );
    assert.deepEqual(await refused(() => client.startRun({ ...base, labels: { team: "a\u0000" } })), [
      "labels[team]",
    ]);
    assert.deepEqual(await refused(() => client.startRun({ ...base, idempotencyKey: "k\u0000" })), [
      "idempotency_key",
    ]);
    assert.deepEqual(
      await refused(() =>
        client.registerWorkflow({
          definition: {
            case: "specJson",
            value: JSON.stringify({
              name: "e2e-nul2",
              version: 1,
              steps: [{ id: "s\u0000", type: "alpha" }],
            }),
          },
        }),
      ),
      ["spec_json.steps[0].id"],
    );

    // Reads that filter on text say so too, instead of failing inside PostgreSQL.
    assert.deepEqual(await refused(() => client.listRuns({ labels: { team: "a\u0000" } })), ["labels[team]"]);
    assert.deepEqual(await refused(() => client.getWorkflow({ name: "e2e\u0000" })), ["name"]);

    // A handler whose output holds one fails its task with a terminal error that says where.
    const nul = executor({ executorId: "nul-output", slots: 2, builtins: false }, (e) =>
      e.register("nul.out", () => ({ text: "a\u0000b" })),
    );
    await nul.start();
    const runId = await start("e2e-nul");
    const run = await finished(runId, RunStatus.FAILED);
    const failed = task(run, "out");
    assert.equal(failed.error?.type, "INVALID_OUTPUT", describeRun(run));
    assert.match(failed.error?.message ?? "", /output\.text/);
    assert.deepEqual(await refused(() => client.cancelRun({ runId, reason: "stop\u0000" })), ["reason"]);
    // The writer is not wedged: the next run commits and finishes.
    await registerSpec(client, {
      name: "e2e-after-nul",
      version: 1,
      steps: [{ id: "a", type: "alpha", input: { n: 1 } }],
    });
    await finished(await start("e2e-after-nul"));
  });

  it("contains data PostgreSQL refuses to one run: a new one is not created, a stored one ends FAILED, others go on", async () => {
    // Constraints stand in for any value PostgreSQL refuses (SQLSTATE class 23 here, 22 or 54 alike).
    await tables.exec(
      `ALTER TABLE workflow_runs ADD CONSTRAINT e2e_refuse_input CHECK (NOT coalesce(input @> '{"refuse": true}', false)) NOT VALID`,
    );
    await tables.exec(
      `ALTER TABLE task_runs ADD CONSTRAINT e2e_refuse_output CHECK (NOT coalesce(output @> '{"v": 9409}', false)) NOT VALID`,
    );
    try {
      await registerSpec(client, {
        name: "e2e-refused",
        version: 1,
        steps: [
          { id: "sq", type: "square", input: { i: "{{ input.i }}" } },
          { id: "after", type: "math.inc", dependsOn: ["sq"], input: { x: "{{ steps.sq.output.v }}" } },
        ],
      });
      // A new run the database refuses: the call says so and nothing of it exists.
      const err = await client
        .startRun({ workflowName: "e2e-refused", input: jsonToValue({ i: 1, refuse: true }) })
        .then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
      assert.ok(err !== undefined, "refused");
      assert.equal(err.code, Code.InvalidArgument);
      assert.match(err.message, /the run was not created: PostgreSQL refused/);
      // A stored run whose task output (97 * 97) is refused ends FAILED, its tasks cancelled, its
      // events contiguous; runs around it are untouched.
      const [poisoned, before, after] = await Promise.all([
        start("e2e-refused", { i: 97 }),
        start("e2e-refused", { i: 3 }),
        start("e2e-refused", { i: 4 }),
      ]);
      const run = await finished(poisoned, RunStatus.FAILED);
      assert.equal(run.error?.type, "STORAGE_REFUSED", describeRun(run));
      assert.match(run.error?.message ?? "", /e2e_refuse_output/);
      assert.equal(task(run, "sq").status, TaskStatus.CANCELLED);
      assert.equal(task(run, "after").status, TaskStatus.CANCELLED);
      const events = await assertOutboxContiguous(tables, poisoned);
      assert.equal(events.at(-1)?.type, "runCompleted");
      for (const id of [before, after]) await finished(id);
      assert.deepEqual(valueToJson(task(await finished(after), "after").output), { z: 17 });
      await finished(await start("e2e-refused", { i: 5 }));
      // The refused new run's lease was granted but never sent: its slot came back to the session.
      await waitFor(
        "every general slot free again",
        () =>
          [...scheduler.engine.sessions()]
            .filter((x) => x.executorId.startsWith("general-"))
            .every((x) => x.leases.size === 0 && x.credit === 8) || undefined,
      );
    } finally {
      await tables.exec("ALTER TABLE workflow_runs DROP CONSTRAINT e2e_refuse_input");
      await tables.exec("ALTER TABLE task_runs DROP CONSTRAINT e2e_refuse_output");
    }
  });
});
