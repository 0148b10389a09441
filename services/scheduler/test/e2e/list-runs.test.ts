/**
 * ListRuns views and page bound (issue #19), against a real scheduler and PostgreSQL: lists are
 * BASIC unless FULL is asked for, and a FULL page of big runs stays under LIST_RUNS_PAGE_BYTES, so
 * a client with gRPC's usual 4 MiB receive limit pages through every run via next_page_token.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import type { Executor } from "@nexusflow/executor";
import { ListRunsResponseSchema, RunStatus, RunView, WorkflowService } from "@nexusflow/gen";
import { LIST_RUNS_PAGE_BYTES } from "../../src/api/workflow-service.js";
import type { Scheduler } from "../../src/scheduler.js";
import {
  startTestDatabase,
  startTestExecutor,
  startTestScheduler,
  waitForRun,
  workflowClient,
} from "../support.js";
import { describeRun, registerSpec, type WorkflowClient } from "./harness.js";

/** gRPC's default receive limit (grpc-js, grpcio, grpcurl). */
const GRPC_DEFAULT_MAX = 4 * 1024 * 1024;

describe("ListRuns views and page bound", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: WorkflowClient;
  let executor: Executor;

  /** Starts a run (answer in BASIC, to keep big inputs off the wire) and waits until it ends. */
  const run = async (input: unknown, labels: Record<string, string>): Promise<string> => {
    const { run } = await client.startRun({
      workflowName: "list-view",
      input: jsonToValue(input),
      labels,
      view: RunView.BASIC,
    });
    assert.ok(run);
    const done = await waitForRun(client, run.id, 60_000);
    assert.equal(done.status, RunStatus.SUCCEEDED, describeRun(done));
    return run.id;
  };

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    executor = await startTestExecutor(scheduler, { executorId: "list-view", slots: 4 });
    await registerSpec(client, {
      name: "list-view",
      version: 1,
      steps: [{ id: "only", type: "noop", input: { n: "{{ input.n }}" } }],
      output: { n: "{{ steps.only.output.n }}" },
    });
  });

  after(async () => {
    await executor?.stop("test over");
    await scheduler?.stop();
    await db?.close();
  });

  it("refuses a forged page token naming what PostgreSQL cannot read, naming page_token", async () => {
    const token = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString("base64url");
    const now = new Date().toISOString();
    const forged = [
      ["listRuns", token({ t: "garbage", id: "00000000-0000-4000-8000-000000000000" })],
      ["listRuns", token({ t: now, id: "not-a-uuid" })],
      ["listRuns", token({ t: now, id: "\u0000" })],
      ["listWorkflows", token({ id: 1.5 })],
      ["listWorkflows", token({ id: 1e300 })],
    ] as const;
    for (const [rpc, pageToken] of forged) {
      const err = await client[rpc]({ pageToken }).then(
        () => assert.fail(`${rpc} accepted ${pageToken}`),
        (e: unknown) => ConnectError.from(e),
      );
      assert.equal(Code[err.code], Code[Code.InvalidArgument], `${rpc}: ${err.rawMessage}`);
      assert.match(err.rawMessage, /^page_token: /);
    }
  });

  it("binds a page token to the filters it was returned for: other filters are INVALID_ARGUMENT", async () => {
    const ids = [await run({ n: 1 }, { suite: "bound" }), await run({ n: 2 }, { suite: "bound" })];
    const first = await client.listRuns({ labels: { suite: "bound" }, pageSize: 1 });
    assert.deepEqual(
      first.runs.map((r) => r.id),
      [ids[1]],
    );
    assert.notEqual(first.nextPageToken, "");
    // The same filters (labels in any order, another page size): the next page.
    const second = await client.listRuns({
      labels: { suite: "bound" },
      statuses: [],
      pageSize: 5,
      pageToken: first.nextPageToken,
    });
    assert.deepEqual(
      second.runs.map((r) => r.id),
      [ids[0]],
    );
    for (const other of [
      { labels: { suite: "view" } },
      { labels: { suite: "bound" }, workflowName: "list-view" },
      { labels: { suite: "bound" }, statuses: [RunStatus.SUCCEEDED] },
      { labels: { suite: "bound" }, createdAfter: { seconds: 1n, nanos: 0 } },
    ]) {
      const err = await client.listRuns({ ...other, pageToken: first.nextPageToken }).then(
        () =>
          assert.fail(
            `accepted the token with ${JSON.stringify(other, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`,
          ),
        (e: unknown) => ConnectError.from(e),
      );
      assert.equal(Code[err.code], Code[Code.InvalidArgument]);
      assert.match(err.rawMessage, /^page_token: was returned for other filters/);
    }
    // ListWorkflows: bound to its name and latest_only.
    for (const version of [1, 2])
      await registerSpec(client, { name: "bound-wf", version, steps: [{ id: "a", type: "noop" }] });
    const workflows = await client.listWorkflows({ name: "bound-wf", pageSize: 1 });
    assert.notEqual(workflows.nextPageToken, "");
    const rest = await client.listWorkflows({ name: "bound-wf", pageToken: workflows.nextPageToken });
    assert.deepEqual(
      rest.workflows.map((w) => w.version),
      [1],
    );
    for (const other of [{ name: "list-view" }, { name: "bound-wf", latestOnly: true }]) {
      const err = await client.listWorkflows({ ...other, pageToken: workflows.nextPageToken }).then(
        () => assert.fail(`ListWorkflows accepted the token with ${JSON.stringify(other)}`),
        (e: unknown) => ConnectError.from(e),
      );
      assert.equal(Code[err.code], Code[Code.InvalidArgument]);
      assert.match(
        err.rawMessage,
        /^page_token: was returned for other filters: list with the same name and latest_only/,
      );
    }
    // A token from before tokens were bound (no digest) still continues the listing.
    const unbound = JSON.parse(Buffer.from(first.nextPageToken, "base64url").toString("utf8")) as Record<
      string,
      unknown
    >;
    delete unbound["f"];
    const old = await client.listRuns({
      labels: { suite: "bound" },
      pageToken: Buffer.from(JSON.stringify(unbound)).toString("base64url"),
    });
    assert.deepEqual(
      old.runs.map((r) => r.id),
      [ids[0]],
    );
  });

  it("lists runs in the BASIC view by default, and with input, output and tasks in FULL", async () => {
    const id = await run({ n: 7, note: "kept out of lists" }, { suite: "view" });

    for (const view of [undefined, RunView.UNSPECIFIED, RunView.BASIC]) {
      const page = await client.listRuns({
        labels: { suite: "view" },
        ...(view === undefined ? {} : { view }),
      });
      assert.deepEqual(
        page.runs.map((r) => r.id),
        [id],
      );
      const [basic] = page.runs;
      assert.ok(basic);
      assert.equal(basic.status, RunStatus.SUCCEEDED);
      assert.equal(basic.workflowName, "list-view");
      assert.deepEqual(basic.labels, { suite: "view" });
      assert.ok(basic.createTime && basic.endTime);
      assert.equal(basic.input, undefined, `view ${String(view)}: no input`);
      assert.equal(basic.output, undefined, `view ${String(view)}: no output`);
      assert.deepEqual(basic.tasks, [], `view ${String(view)}: no tasks`);
    }

    const { runs } = await client.listRuns({ labels: { suite: "view" }, view: RunView.FULL });
    const [full] = runs;
    assert.ok(full);
    assert.equal(full.id, id);
    assert.deepEqual(valueToJson(full.input), { n: 7, note: "kept out of lists" });
    assert.deepEqual(valueToJson(full.output), { n: 7 });
    assert.deepEqual(
      full.tasks.map((t) => [t.stepId, t.attempts.length]),
      [["only", 1]],
    );
    assert.deepEqual(valueToJson(full.tasks[0]?.output), { n: 7 });

    await assert.rejects(client.listRuns({ view: 99 as RunView }), /view/);
  });

  it("keeps FULL pages of 1.5 MB runs under the bound and pages through all of them", async () => {
    // A client that, like grpcurl and grpcio, refuses a message over 4 MiB.
    const limited = createClient(
      WorkflowService,
      createGrpcTransport({ baseUrl: `http://${scheduler.address}`, readMaxBytes: GRPC_DEFAULT_MAX }),
    );
    const blob = "x".repeat(1_500_000);
    const ids: string[] = [];
    for (let n = 0; n < 5; n++) ids.push(await run({ n, blob }, { suite: "big" }));

    const pages: string[][] = [];
    let token = "";
    do {
      const page = await limited.listRuns({
        labels: { suite: "big" },
        view: RunView.FULL,
        pageSize: 100,
        pageToken: token,
      });
      const bytes = toBinary(ListRunsResponseSchema, page).length;
      assert.ok(bytes <= LIST_RUNS_PAGE_BYTES, `page ${pages.length} is ${bytes} bytes`);
      assert.ok(page.runs.length >= 1, "every page carries a run");
      for (const r of page.runs) {
        assert.equal((valueToJson(r.input) as { blob: string }).blob.length, blob.length, "input kept whole");
        assert.equal(r.tasks.length, 1);
      }
      pages.push(page.runs.map((r) => r.id));
      token = page.nextPageToken;
      assert.ok(pages.length <= ids.length, "pagination does not end");
    } while (token !== "");

    // Two 1.5 MB runs fit in 3 MiB, a third does not: the bound, not page_size, cut the pages.
    assert.deepEqual(
      pages.map((p) => p.length),
      [2, 2, 1],
    );
    const listed = pages.flat();
    assert.equal(new Set(listed).size, listed.length, `repeated across pages: ${JSON.stringify(pages)}`);
    assert.deepEqual(listed, [...ids].reverse(), "every run, newest first");

    // BASIC pages of the same runs are small and whole.
    const basic = await limited.listRuns({ labels: { suite: "big" } });
    assert.deepEqual(
      basic.runs.map((r) => r.id),
      listed,
    );
    assert.equal(basic.nextPageToken, "");
  });

  it("carries one run alone when it is larger than the bound, and continues after it", async () => {
    const older = await run({ n: 1 }, { suite: "huge" });
    const huge = await run({ n: 2, blob: "y".repeat(3_500_000) }, { suite: "huge" });
    const first = await client.listRuns({ labels: { suite: "huge" }, view: RunView.FULL });
    assert.deepEqual(
      first.runs.map((r) => r.id),
      [huge],
    );
    assert.notEqual(first.nextPageToken, "");
    const second = await client.listRuns({
      labels: { suite: "huge" },
      view: RunView.FULL,
      pageToken: first.nextPageToken,
    });
    assert.deepEqual(
      second.runs.map((r) => r.id),
      [older],
    );
    assert.equal(second.nextPageToken, "");
  });
});
