/**
 * Answers that carry a run stay readable by a client with gRPC's usual 4 MiB receive limit and
 * protobuf's usual 100 nested messages, against a real scheduler and PostgreSQL: StartRun (FULL by
 * default), RerunRun and CancelRun answer a run too large (or too deep) to read in the BASIC view,
 * a ListRuns page in FULL carries such a run alone in the BASIC view and pages on past it, and
 * GetRun answers the whole run. Before, a run with a 2.5 MB input templated into its step was
 * created, yet its StartRun answer (5 MB) failed RESOURCE_EXHAUSTED at the client, as did every
 * FULL page holding it (so no client with the usual limit could page past it). WatchRun sends
 * such a run without its values, saying so (values_omitted), its tasks' states kept; before, a
 * grpc-js client with its default limits was answered RESOURCE_EXHAUSTED on every watch of it.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { clientConstructor, jsonToValue, valueToJson } from "@nexusflow/common";
import {
  ListRunsResponseSchema,
  RunStatus,
  RunView,
  StartRunResponseSchema,
  TaskStatus,
  WatchRunRequestSchema,
  WatchRunResponseSchema,
  WorkflowService,
  type Run,
  type WatchRunRequest,
  type WatchRunResponse,
} from "@nexusflow/gen";
import { MAX_RUN_ANSWER_BYTES } from "../../src/api/convert.js";
import { FORWARDED_BY_HEADER } from "../../src/cluster/replica-router.js";
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

/** A WatchRun stream of a grpc-js client: what it received, and how it ended. */
interface GrpcWatch {
  messages: WatchRunResponse[];
  /** The first message; rejects when the stream ends without one. */
  first: Promise<WatchRunResponse>;
  /** Resolves when the stream ends: null when it ended OK, else its error. */
  ended: Promise<grpc.ServiceError | null>;
  cancel(): void;
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

  /** Opens WatchRun of `runId` with a grpc-js client left with its default limits (4 MiB received). */
  const grpcWatch = (grpcClient: grpc.Client, runId: string): GrpcWatch => {
    const messages: WatchRunResponse[] = [];
    const stream = (
      grpcClient as unknown as { watchRun(req: WatchRunRequest): grpc.ClientReadableStream<WatchRunResponse> }
    ).watchRun(create(WatchRunRequestSchema, { runId }));
    let gotFirst: (m: WatchRunResponse) => void = () => {};
    const first = new Promise<WatchRunResponse>((resolve) => (gotFirst = resolve));
    stream.on("data", (m: WatchRunResponse) => {
      messages.push(m);
      gotFirst(m);
    });
    const ended = new Promise<grpc.ServiceError | null>((resolve) => {
      stream.on("error", (e: grpc.ServiceError) => resolve(e));
      stream.on("end", () => resolve(null));
    });
    return {
      messages,
      first: Promise.race([
        first,
        ended.then((e) => assert.fail(`the watch ended without a message: ${e?.message ?? "OK"}`)),
      ]),
      ended,
      cancel: () => stream.cancel(),
    };
  };

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

  it("WatchRun sends a run too large to read without its values, saying so, its tasks' states kept", async () => {
    const Client = clientConstructor(WorkflowService);
    // grpc-js with its defaults: 4 MiB received at most.
    const grpcClient = new Client(scheduler.address, grpc.credentials.createInsecure());
    try {
      const { run } = await client.startRun({
        workflowName: "echo-big",
        input: jsonToValue({ blob: BLOB }),
        view: RunView.BASIC,
      });
      const id = run?.id ?? "";
      const watch = grpcWatch(grpcClient, id);
      const first = await watch.first;
      assert.equal(first.valuesOmitted, true, "the message says the values were left out");
      assert.equal(first.run?.id, id);
      assert.equal(first.run?.status, RunStatus.RUNNING);
      assert.equal(first.run?.input, undefined, "the run's input left out");
      assert.deepEqual(
        first.run?.tasks.map((t) => [t.stepId, TaskStatus[t.status], t.input === undefined]),
        [["only", "QUEUED", true]],
      );
      assert.ok(toBinary(WatchRunResponseSchema, first).length <= MAX_RUN_ANSWER_BYTES);

      // A watch forwarded by another replica (whose client reads any size) gets the whole run:
      // that replica leaves the values out for its own caller.
      const forwarded = new AbortController();
      for await (const m of client.watchRun(
        { runId: id },
        { signal: forwarded.signal, headers: { [FORWARDED_BY_HEADER]: "another-replica" } },
      )) {
        forwarded.abort();
        assert.equal(m.valuesOmitted, false);
        assert.equal((valueToJson(m.run?.input) as { blob: string }).blob.length, BLOB.length);
        break;
      }

      // The run moves on (cancelled): the watch follows it to its end, values still left out.
      await client.cancelRun({ runId: id, reason: "watched" });
      assert.equal(await watch.ended, null, "the stream ends OK after the run's end");
      const last = watch.messages.at(-1);
      assert.ok(watch.messages.length >= 2, "a message for the run's end");
      assert.equal(last?.valuesOmitted, true);
      assert.equal(last?.run?.status, RunStatus.CANCELLED);
      assert.deepEqual(
        last?.run?.tasks.map((t) => [t.stepId, TaskStatus[t.status], t.input === undefined]),
        [["only", "CANCELLED", true]],
      );
      assert.deepEqual(last?.changedTaskIds, [last?.run?.tasks[0]?.id]);
      // GetRun has the values.
      const whole = await client.getRun({ runId: id });
      assert.equal((valueToJson(whole.run?.input) as { blob: string }).blob.length, BLOB.length);

      // A run that fits goes whole, the flag unset.
      const small = await client.startRun({
        workflowName: "echo-big",
        input: jsonToValue({ blob: "small" }),
        view: RunView.BASIC,
      });
      const smallWatch = grpcWatch(grpcClient, small.run?.id ?? "");
      const fits = await smallWatch.first;
      smallWatch.cancel();
      assert.equal(fits.valuesOmitted, false);
      assert.deepEqual(valueToJson(fits.run?.input), { blob: "small" });
      assert.deepEqual(valueToJson(fits.run?.tasks[0]?.input), { blob: "small" });
      await client.cancelRun({ runId: small.run?.id ?? "" });
    } finally {
      grpcClient.close();
    }
  });

  it("WatchRun sends a run nesting deeper than clients decode without its values, saying so", async () => {
    const { run } = await client.startRun({
      workflowName: "echo-deep",
      input: jsonToValue({ a: nested(47) }),
      view: RunView.BASIC,
    });
    const abort = new AbortController();
    let first: WatchRunResponse | undefined;
    for await (const m of limited.watchRun({ runId: run?.id ?? "" }, { signal: abort.signal })) {
      first = m;
      abort.abort();
      break;
    }
    assert.equal(first?.valuesOmitted, true);
    assert.equal(first?.run?.input, undefined);
    assert.equal(first?.run?.tasks[0]?.status, TaskStatus.QUEUED);
    assert.equal(first?.run?.tasks[0]?.input, undefined);
    await client.cancelRun({ runId: run?.id ?? "" });
  });
});
