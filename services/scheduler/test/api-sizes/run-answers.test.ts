/**
 * Answers that carry a run stay readable by a client with gRPC's usual 4 MiB receive limit and
 * protobuf's usual 100 nested messages, against a real scheduler and PostgreSQL: StartRun (FULL by
 * default), RerunRun and CancelRun answer a run too large (or too deep) to read in the BASIC view,
 * a ListRuns page in FULL carries such a run alone in the BASIC view and pages on past it, and
 * GetRun answers the whole run. Before, a run with a 2.5 MB input templated into its step was
 * created, yet its StartRun answer (5 MB) failed RESOURCE_EXHAUSTED at the client, as did every
 * FULL page holding it (so no client with the usual limit could page past it).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import {
  ListRunsResponseSchema,
  RunStatus,
  RunView,
  StartRunResponseSchema,
  WorkflowService,
  type Run,
} from "@nexusflow/gen";
import { MAX_RUN_ANSWER_BYTES } from "../../src/api/convert.js";
import type { Scheduler } from "../../src/scheduler.js";
import { registerSpec, startTestDatabase, startTestScheduler, workflowClient } from "../support.js";

/** gRPC's default receive limit (grpc-js, grpcio, grpcurl). */
const GRPC_DEFAULT_MAX = 4 * 1024 * 1024;
/** A run input that, with the step input it is templated into, makes a 5 MB run. */
const BLOB = "x".repeat(2_500_000);

/** `levels` levels of objects around 1. */
function nested(levels: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < levels; i++) v = { k: v };
  return v;
}

/** Whether `run` is in the BASIC view (every run has a task, so FULL always lists some). */
const isBasic = (run: Run | undefined): boolean =>
  run !== undefined && run.tasks.length === 0 && run.input === undefined && run.output === undefined;

describe("answers carrying a run stay readable", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  /** A client with no practical limits, to read whole runs with GetRun. */
  let client: ReturnType<typeof workflowClient>;
  /** A client with the limits of gRPC and protobuf clients by default. */
  let limited: ReturnType<typeof workflowClient>;

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    limited = createClient(
      WorkflowService,
      createGrpcTransport({ baseUrl: `http://${scheduler.address}`, readMaxBytes: GRPC_DEFAULT_MAX }),
    );
    // No executor serves "nobody": runs stay active with their step queued.
    await registerSpec(client, {
      name: "echo-big",
      version: 1,
      steps: [{ id: "only", type: "nobody", input: { blob: "{{ input.blob }}" } }],
    });
    await registerSpec(client, {
      name: "echo-deep",
      version: 1,
      steps: [{ id: "only", type: "nobody", input: { x: { y: "{{ input.a }}" } } }],
    });
  });

  after(async () => {
    await scheduler?.stop();
    await db?.close();
  });

  it("StartRun answers a run too large to read in the BASIC view; GetRun answers it whole", async () => {
    const start = (input: unknown, extra: { idempotencyKey?: string; view?: RunView } = {}) =>
      limited.startRun({
        workflowName: "echo-big",
        input: jsonToValue(input),
        labels: { suite: "start" },
        ...extra,
      });

    const first = await start({ blob: BLOB }, { idempotencyKey: "big-1" });
    assert.equal(first.created, true);
    assert.ok(isBasic(first.run), "the BASIC view");
    const id = first.run?.id ?? "";
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.equal(first.run?.workflowName, "echo-big");
    assert.deepEqual(first.run?.labels, { suite: "start" });
    assert.ok(toBinary(StartRunResponseSchema, first).length <= MAX_RUN_ANSWER_BYTES);

    // Retried with its key: the same run, readable again.
    const again = await start({ blob: BLOB }, { idempotencyKey: "big-1" });
    assert.equal(again.created, false);
    assert.equal(again.run?.id, id);
    assert.ok(isBasic(again.run));

    // Asked for FULL explicitly: the same.
    assert.ok(isBasic((await start({ blob: BLOB }, { view: RunView.FULL })).run));

    // A run that fits comes whole, as before.
    const small = await start({ blob: "small" });
    assert.equal(small.run?.tasks.length, 1);
    assert.deepEqual(valueToJson(small.run?.input), { blob: "small" });

    // GetRun answers the whole run: its input, and its step's rendered input.
    const { run } = await client.getRun({ runId: id });
    assert.equal((valueToJson(run?.input) as { blob: string }).blob.length, BLOB.length);
    assert.equal((valueToJson(run?.tasks[0]?.input) as { blob: string }).blob.length, BLOB.length);
    // ... which a client with a 4 MiB limit cannot read: it must raise its limit.
    const err = await limited.getRun({ runId: id }).then(
      () => assert.fail("a 5 MB GetRun answer was read under a 4 MiB limit"),
      (e: unknown) => ConnectError.from(e),
    );
    assert.equal(err.code, Code.ResourceExhausted);
  });

  it("StartRun answers a run whose step input nests deeper than clients decode in the BASIC view", async () => {
    // The run's input is 48 levels deep (readable); its step's input 50 (not, in any answer).
    const { run, created } = await limited.startRun({
      workflowName: "echo-deep",
      input: jsonToValue({ a: nested(47) }),
    });
    assert.equal(created, true);
    assert.ok(isBasic(run));
    const shallow = await limited.startRun({
      workflowName: "echo-deep",
      input: jsonToValue({ a: nested(40) }),
    });
    assert.equal(shallow.run?.tasks.length, 1);
  });

  it("CancelRun and RerunRun answer a run too large to read in the BASIC view", async () => {
    const { run } = await limited.startRun({
      workflowName: "echo-big",
      input: jsonToValue({ blob: BLOB }),
      view: RunView.BASIC,
    });
    const id = run?.id ?? "";
    const cancelled = await limited.cancelRun({ runId: id, reason: "too big to answer" });
    assert.equal(cancelled.run?.id, id);
    assert.equal(cancelled.run?.status, RunStatus.CANCELLED);
    assert.ok(isBasic(cancelled.run));

    const rerun = await limited.rerunRun({ runId: id, fromStep: "only" });
    assert.equal(rerun.created, true);
    assert.ok(isBasic(rerun.run));
    assert.equal(rerun.run?.rerunOf, id);
    const whole = await client.getRun({ runId: rerun.run?.id ?? "" });
    assert.equal((valueToJson(whole.run?.input) as { blob: string }).blob.length, BLOB.length);
    await limited.cancelRun({ runId: rerun.run?.id ?? "" });
  });

  it("ListRuns in FULL carries a run too large for a page alone, in the BASIC view, and pages on past it", async () => {
    const start = async (input: unknown): Promise<string> => {
      const { run } = await limited.startRun({
        workflowName: "echo-big",
        input: jsonToValue(input),
        labels: { suite: "list" },
        view: RunView.BASIC,
      });
      return run?.id ?? "";
    };
    const oldest = await start({ blob: "a" });
    const big = await start({ blob: BLOB });
    const newest = await start({ blob: "b" });

    const pages: Run[][] = [];
    let token = "";
    do {
      const page = await limited.listRuns({
        labels: { suite: "list" },
        view: RunView.FULL,
        pageToken: token,
      });
      assert.ok(toBinary(ListRunsResponseSchema, page).length <= MAX_RUN_ANSWER_BYTES);
      pages.push(page.runs);
      token = page.nextPageToken;
      assert.ok(pages.length <= 3, "pagination does not end");
    } while (token !== "");
    assert.deepEqual(
      pages.map((p) => p.map((r) => r.id)),
      [[newest], [big], [oldest]],
    );
    assert.ok(isBasic(pages[1]?.[0]), "the large run, in the BASIC view");
    assert.equal(pages[0]?.[0]?.tasks.length, 1, "the others in FULL");
    assert.equal(pages[2]?.[0]?.tasks.length, 1);
  });
});
