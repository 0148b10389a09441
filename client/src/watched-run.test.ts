/**
 * A run sent by WatchRun without its values (values_omitted: too large for a client's usual
 * limits) merged with the values read before (mergeWatchedRun), and waitForRun over such messages:
 * its updates keep the values of earlier messages, and the run it returns is whole (GetRun, once,
 * when the last message came without the values). Before, waitForRun returned the last message's
 * run as it came: a large run's output was lost (the CLI's summary printed none).
 */
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { create, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  AttemptSchema,
  RunSchema,
  RunSignalSchema,
  RunStatus,
  TaskErrorSchema,
  TaskRunSchema,
  TaskStatus,
  WorkflowService,
  type Run,
  type WatchRunResponse,
} from "@nexusflow/gen";
import { NexusflowClient, runOutput } from "./client.js";
import { mergeWatchedRun } from "./watched-run.js";

const RUN_ID = "0194b3c2-6a8e-7b3c-9d4e-5f6a7b8c9d0e";
const value = (json: JsonValue) => fromJson(ValueSchema, json);
const json = (v: Parameters<typeof runOutput>[0]["input"]) =>
  v === undefined ? undefined : (runOutput(create(RunSchema, { output: v })) as unknown);

/** The run with its values: a failed first attempt of "a" (retrying), "b" done, a signal. */
function whole(): Run {
  return create(RunSchema, {
    id: RUN_ID,
    status: RunStatus.RUNNING,
    input: value({ blob: "in" }),
    tasks: [
      create(TaskRunSchema, {
        id: "ta",
        stepId: "a",
        status: TaskStatus.RETRY_WAIT,
        input: value({ a: 1 }),
        error: create(TaskErrorSchema, { type: "T", message: "boom", details: value({ why: 1 }) }),
        attempts: [
          create(AttemptSchema, {
            number: 1,
            status: TaskStatus.FAILED,
            error: create(TaskErrorSchema, { type: "T", message: "boom", details: value({ why: 1 }) }),
          }),
        ],
      }),
      create(TaskRunSchema, {
        id: "tb",
        stepId: "b",
        status: TaskStatus.SUCCEEDED,
        input: value({ b: 1 }),
        output: value({ b: "out" }),
      }),
    ],
    signals: [
      create(RunSignalSchema, {
        name: "go",
        idempotencyKey: "k",
        payload: value({ p: 1 }),
        receiveTime: timestampFromMs(1_000),
      }),
    ],
  });
}

/** `run` without its values, as the scheduler sends it (convert.ts's leanRun). */
function lean(run: Run): Run {
  const noDetails = <E extends { details?: unknown }>(e: E | undefined): E | undefined =>
    e === undefined ? undefined : { ...e, details: undefined };
  return {
    ...run,
    input: undefined,
    output: undefined,
    error: noDetails(run.error),
    tasks: run.tasks.map((t) => ({
      ...t,
      input: undefined,
      output: undefined,
      error: noDetails(t.error),
      attempts: t.attempts.map((a) => ({ ...a, error: noDetails(a.error) })),
    })),
    signals: run.signals.map((s) => ({ ...s, payload: undefined })),
  };
}

describe("mergeWatchedRun", () => {
  it("keeps the values read before and takes the states of the message", () => {
    const next = lean(whole());
    const a = next.tasks[0];
    assert.ok(a !== undefined);
    // "a" ran its second attempt, which is running now.
    a.status = TaskStatus.RUNNING;
    a.attempts.push(create(AttemptSchema, { number: 2, status: TaskStatus.RUNNING }));
    const merged = mergeWatchedRun(whole(), next);
    assert.equal(merged.tasks[0]?.status, TaskStatus.RUNNING);
    assert.deepEqual(
      merged.tasks[0]?.attempts.map((at) => [at.number, TaskStatus[at.status], json(at.error?.details)]),
      [
        [1, "FAILED", { why: 1 }],
        [2, "RUNNING", undefined],
      ],
    );
    assert.deepEqual(json(merged.input), { blob: "in" });
    assert.deepEqual(json(merged.tasks[0]?.input), { a: 1 });
    assert.deepEqual(json(merged.tasks[0]?.error?.details), { why: 1 }, "the same error: its details");
    assert.deepEqual(json(merged.tasks[1]?.output), { b: "out" });
    assert.deepEqual(json(merged.signals[0]?.payload), { p: 1 });
  });

  it("keeps no details of an error that is not the one the message has", () => {
    const next = lean(whole());
    const a = next.tasks[0];
    assert.ok(a?.error !== undefined);
    a.error = { ...a.error, message: "another boom" };
    const merged = mergeWatchedRun(whole(), next);
    assert.equal(merged.tasks[0]?.error?.message, "another boom");
    assert.equal(merged.tasks[0]?.error?.details, undefined);
  });

  it("takes a task or a signal it has not seen as it comes, and the message as it is without a run before", () => {
    const next = lean(whole());
    next.tasks.push(create(TaskRunSchema, { id: "tc", stepId: "c", status: TaskStatus.QUEUED }));
    next.signals.push(create(RunSignalSchema, { name: "go", idempotencyKey: "k2" }));
    const merged = mergeWatchedRun(whole(), next);
    assert.equal(merged.tasks[2]?.id, "tc");
    assert.equal(merged.tasks[2]?.input, undefined);
    assert.equal(merged.signals[1]?.payload, undefined);
    assert.equal(mergeWatchedRun(undefined, next), next);
    assert.equal(mergeWatchedRun({ ...whole(), id: "another" }, next), next);
  });

  it("keeps the tasks read before when the message is in the BASIC view (no tasks)", () => {
    const basic = { ...lean(whole()), status: RunStatus.CANCELLED, tasks: [], signals: [] };
    const merged = mergeWatchedRun(whole(), basic);
    assert.equal(merged.status, RunStatus.CANCELLED);
    assert.deepEqual(
      merged.tasks.map((t) => t.id),
      ["ta", "tb"],
    );
    assert.deepEqual(json(merged.signals[0]?.payload), { p: 1 });
  });
});

describe("waitForRun of a run sent without its values", () => {
  let server: http2.Http2Server;
  let client: NexusflowClient;
  const calls: string[] = [];
  const ended = (): Run => {
    const run = lean(whole());
    run.status = RunStatus.SUCCEEDED;
    for (const t of run.tasks) t.status = TaskStatus.SUCCEEDED;
    return run;
  };

  before(async () => {
    const routes = (router: ConnectRouter): void => {
      router.service(WorkflowService, {
        async *watchRun() {
          calls.push("WatchRun");
          // Whole first (it fitted), then too large: its states alone.
          yield { run: whole() };
          await new Promise<void>((resolve) => setImmediate(resolve));
          const running = lean(whole());
          running.tasks[0] = { ...running.tasks[0], status: TaskStatus.RUNNING } as Run["tasks"][0];
          yield { run: running, valuesOmitted: true, changedTaskIds: ["ta"] };
          yield { run: ended(), valuesOmitted: true, changedTaskIds: ["ta"] };
        },
        getRun() {
          calls.push("GetRun");
          const run = whole();
          run.status = RunStatus.SUCCEEDED;
          run.output = value({ report: "done" });
          return { run };
        },
      });
    };
    server = http2.createServer({}, connectNodeAdapter({ routes }));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    client = new NexusflowClient({
      baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    });
  });

  after(async () => {
    client?.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("updates with the values of earlier messages, and returns the whole run read once with GetRun", async () => {
    const updates: Run[] = [];
    const messages: WatchRunResponse[] = [];
    const done = await client.waitForRun(RUN_ID, {
      onUpdate: (r) => updates.push(r),
      onMessage: (m) => messages.push(m),
    });
    assert.deepEqual(calls, ["WatchRun", "GetRun"]);
    assert.deepEqual(
      updates.map((r) => [TaskStatus[r.tasks[0]?.status ?? 0], json(r.input), json(r.tasks[1]?.output)]),
      [
        ["RETRY_WAIT", { blob: "in" }, { b: "out" }],
        ["RUNNING", { blob: "in" }, { b: "out" }],
      ],
    );
    assert.deepEqual(
      messages.map((m) => m.valuesOmitted),
      [false, true, true],
      "the messages as they came",
    );
    assert.equal(messages[1]?.run?.input, undefined);
    assert.equal(done.status, RunStatus.SUCCEEDED);
    assert.deepEqual(runOutput(done), { report: "done" });
  });
});
