/**
 * ClusterService.ListExecutors against a real scheduler: the sessions attached now, what each
 * advertised, the leases each holds by type, draining, paging, and bad requests refused with
 * INVALID_ARGUMENT naming the field. An executor that says too much of itself is cut short, one
 * advertising more than 1,000 task types is refused, and a page stays within its byte bound.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ClusterService, ListExecutorsResponseSchema, type ExecutorSession } from "@nexusflow/gen";
import { LIST_EXECUTORS_PAGE_BYTES } from "../src/api/cluster-service.js";
import { MAX_ATTACH_TASK_TYPES } from "../src/api/executor-session.js";
import type { Scheduler } from "../src/index.js";
import { RawSession, startTestDatabase, startTestScheduler, waitFor, workflowClient } from "./support.js";

describe("ClusterService.ListExecutors", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let cluster: Client<typeof ClusterService>;
  const sessions: RawSession[] = [];

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    cluster = createClient(ClusterService, createGrpcTransport({ baseUrl: `http://${scheduler.address}` }));
  });

  after(async () => {
    for (const s of sessions) s.close();
    await scheduler?.stop();
    await db?.close();
  });

  const attach = async (
    executorId: string,
    taskTypes: string[],
    more: { slots?: number; labels?: Record<string, string>; version?: string } = {},
  ): Promise<RawSession> => {
    const s = new RawSession(scheduler.address);
    sessions.push(s);
    s.send({ case: "attach", value: { executorId, taskTypes, protocolVersion: 2, ...more } });
    await s.next("attachAck");
    return s;
  };

  const list = async (taskType = ""): Promise<ExecutorSession[]> =>
    (await cluster.listExecutors({ taskType })).executors;

  it("shows each session, what it advertised and the leases it holds by type", async () => {
    const beforeAttach = Date.now();
    const a = await attach("cl-a", ["cl.work", "cl.other"], {
      slots: 4,
      labels: { region: "eu", pool: "gpu" },
      version: "1.2.3",
    });
    await attach("cl-b", ["cl.other"]);
    const wf = workflowClient(scheduler.address);
    await wf.registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({
          name: "cluster-list",
          version: 1,
          steps: [
            { id: "one", type: "cl.work" },
            { id: "two", type: "cl.work" },
          ],
        }),
      },
    });
    await wf.startRun({ workflowName: "cluster-list" });
    // One lease only: the other task of the type waits in the queue.
    a.send({ case: "credit", value: { n: 1 } });

    const [ea, eb] = await waitFor("cl-a to hold a lease", async () => {
      const found = await list();
      return found.find((e) => e.executorId === "cl-a")?.slotsInUse === 1 ? found : undefined;
    });
    assert.deepEqual([ea?.executorId, eb?.executorId], ["cl-a", "cl-b"], "ordered by executor id");
    assert.ok(ea !== undefined && eb !== undefined);
    assert.match(ea.sessionId, /^[0-9a-f-]{36}$/);
    assert.equal(ea.protocolVersion, 2);
    assert.equal(ea.slots, 4);
    assert.equal(ea.credit, 0);
    assert.equal(ea.draining, false);
    assert.deepEqual(ea.labels, { pool: "gpu", region: "eu" });
    assert.equal(ea.version, "1.2.3");
    assert.deepEqual(
      ea.taskTypes.map((t) => [t.name, t.slotsInUse, t.queued]),
      [
        ["cl.other", 0, 0],
        ["cl.work", 1, 1],
      ],
    );
    assert.ok(ea.attachTime !== undefined && timestampMs(ea.attachTime) >= beforeAttach - 1000);
    assert.ok(ea.lastSeenTime !== undefined && timestampMs(ea.lastSeenTime) <= Date.now() + 1000);
    assert.equal(eb.slots, 0);
    assert.equal(eb.slotsInUse, 0);

    // Filtered by a task type only cl-a advertises.
    assert.deepEqual(
      (await list("cl.work")).map((e) => e.executorId),
      ["cl-a"],
    );
    assert.deepEqual(await list("cl.nobody"), []);

    // Draining is shown.
    a.send({ case: "drain", value: {} });
    await a.next("drainAck");
    assert.equal((await list("cl.work"))[0]?.draining, true);
  });

  it("pages by executor id and session id", async () => {
    const all = await list();
    assert.ok(all.length >= 2);
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await cluster.listExecutors({ pageSize: 1, pageToken });
      assert.ok(page.executors.length <= 1);
      seen.push(...page.executors.map((e) => e.sessionId));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    assert.deepEqual(
      seen,
      all.map((e) => e.sessionId),
    );
    // A token continues its own listing: for another task type it is refused, naming the field.
    const first = await cluster.listExecutors({ pageSize: 1 });
    await assert.rejects(
      cluster.listExecutors({ taskType: "noop", pageToken: first.nextPageToken }),
      (e: unknown) => {
        assert.ok(e instanceof ConnectError);
        assert.equal(e.code, Code.InvalidArgument, e.message);
        assert.match(
          e.rawMessage,
          /^page_token: was returned for other filters: list with the same task_type/,
        );
        return true;
      },
    );
  });

  it("refuses bad fields with INVALID_ARGUMENT naming them", async () => {
    const refused = async (
      req: Parameters<typeof cluster.listExecutors>[0],
      field: string,
    ): Promise<void> => {
      await assert.rejects(cluster.listExecutors(req), (e: unknown) => {
        assert.ok(e instanceof ConnectError);
        assert.equal(e.code, Code.InvalidArgument, e.message);
        assert.match(e.rawMessage, new RegExp(`^${field}: `));
        return true;
      });
    };
    await refused({ taskType: "Not A Type" }, "task_type");
    await refused({ taskType: "x".repeat(100_000) }, "task_type");
    await refused({ pageSize: -1 }, "page_size");
    await refused({ pageSize: 1001 }, "page_size");
    await refused({ pageToken: "not-ours" }, "page_token");
    await refused({ pageToken: "!!" }, "page_token");
    await refused({ pageToken: Buffer.from('{"a":1}').toString("base64url") }, "page_token");
    await refused({ pageToken: "A".repeat(10_000) }, "page_token");
    // Still answering.
    assert.ok((await list()).length >= 2);
  });

  it("cuts short what an executor says of itself, and forgets a session that ends", async () => {
    const labels: Record<string, string> = {};
    for (let i = 0; i < 100; i++) labels[`k${String(i).padStart(3, "0")}`] = "v".repeat(10_000);
    const loud = await attach("cl-loud", ["cl.loud"], {
      slots: -5,
      labels,
      version: "\u0000".repeat(5000),
    });
    const [shown] = await list("cl.loud");
    assert.ok(shown !== undefined);
    assert.equal(shown.slots, 0);
    assert.equal(Object.keys(shown.labels).length, 32);
    assert.equal(shown.labels["k000"]?.length, 256);
    assert.equal(shown.version.length, 256);
    loud.close();
    await waitFor("cl-loud's session to go", async () =>
      (await list("cl.loud")).length === 0 ? true : undefined,
    );
  });

  it("refuses an Attach advertising more task types than it bounds, naming attach.task_types", async () => {
    const s = new RawSession(scheduler.address);
    sessions.push(s);
    const types = Array.from({ length: MAX_ATTACH_TASK_TYPES + 1 }, (_, i) => `cl.many-${i}`);
    s.send({ case: "attach", value: { executorId: "cl-many", taskTypes: types, protocolVersion: 2 } });
    const status = await waitFor("the session refused", () => s.status);
    assert.equal(status.code, grpc.status.INVALID_ARGUMENT, status.details);
    assert.match(status.details, /^attach\.task_types: at most 1000 task types, got 1001/);
    assert.deepEqual(await list("cl.many-0"), []);
  });

  it("cuts a page at its byte bound and goes on from there, however much each session advertises", async () => {
    // 20 sessions of 1,000 long type names each (~70 kB a session): ~1.4 MB in all.
    const long = (i: number) => `cl.wide.${"x".repeat(48)}${String(i).padStart(4, "0")}`;
    const types = Array.from({ length: MAX_ATTACH_TASK_TYPES }, (_, i) => long(i));
    const wide: RawSession[] = [];
    for (let i = 0; i < 20; i++) wide.push(await attach(`cl-wide-${String(i).padStart(2, "0")}`, types));
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await cluster.listExecutors({ taskType: long(0), pageToken });
      const bytes = toBinary(ListExecutorsResponseSchema, page).length;
      assert.ok(bytes <= LIST_EXECUTORS_PAGE_BYTES + 1024, `a page of ${bytes} bytes`);
      seen.push(...page.executors.map((e) => e.executorId));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "");
    assert.ok(pages >= 2, `${pages} page(s)`);
    assert.deepEqual(
      seen,
      wide.map((_, i) => `cl-wide-${String(i).padStart(2, "0")}`),
    );
    for (const w of wide) w.close();
  });
});
