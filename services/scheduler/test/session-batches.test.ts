/**
 * Batched session frames (issue 28) against a real scheduler and PostgreSQL, driven by raw
 * sessions: a version 2 session gets the leases of one pass in one LeaseBatch and may send several
 * reports in one Reports, each item judged and counted as if it had come alone; a client that
 * names no version (an older executor, grpcurl) is version 1 and gets single leases only; a
 * version the scheduler does not speak ends the stream with FAILED_PRECONDITION naming both.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import { MAX_BATCH_ITEMS, SESSION_PROTOCOL_VERSION, jsonToValue } from "@nexusflow/common";
import {
  RunStatus,
  SessionRequestSchema,
  TaskStatus,
  type Lease,
  type ReportSchema,
  type SessionResponse,
} from "@nexusflow/gen";
import type { Scheduler } from "../src/scheduler.js";
import {
  RawSession,
  startTestDatabase,
  startTestScheduler,
  waitFor,
  waitForRun,
  workflowClient,
} from "./support.js";

type ReportInit = NonNullable<MessageInitShape<typeof ReportSchema>["report"]>;

const list = (v: Value): Value =>
  create(ValueSchema, { kind: { case: "listValue", value: { values: [v] } } });
/** `[[[...1]]]`, `depth` lists deep. */
const nested = (depth: number): Value => {
  let v = create(ValueSchema, { kind: { case: "numberValue", value: 1 } });
  for (let i = 0; i < depth; i++) v = list(v);
  return v;
};

describe("batched session frames", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: ReturnType<typeof workflowClient>;
  const sessions: RawSession[] = [];

  /** A raw session that records every message's case, attached for `type` with `protocolVersion`. */
  const attach = async (executorId: string, type: string, protocolVersion?: number) => {
    const s = new RawSession(scheduler.address);
    sessions.push(s);
    const cases: string[] = [];
    s.stream.on("data", (m: SessionResponse) => {
      if (m.message.case !== "ping") cases.push(m.message.case ?? "none");
    });
    s.send({
      case: "attach",
      value: {
        executorId,
        taskTypes: [type],
        slots: 100,
        ...(protocolVersion === undefined ? {} : { protocolVersion }),
      },
    });
    const ack = await s.next("attachAck");
    return { s, ack, cases };
  };

  /** Starts `n` one-step runs of `type` and waits until each task is queued. */
  const queued = async (type: string, n: number): Promise<string[]> => {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const { run } = await client.startRun({ workflowName: `batch-${type}`, input: jsonToValue({ i }) });
      assert.ok(run);
      ids.push(run.id);
    }
    await waitFor("every task queued", async () => {
      for (const runId of ids) {
        const { run } = await client.getRun({ runId });
        if (run?.tasks[0]?.status !== TaskStatus.QUEUED) return false;
      }
      return true;
    });
    return ids;
  };

  /** Waits for the session's status (the stream ended). */
  const statusOf = (s: RawSession): Promise<grpc.StatusObject> =>
    waitFor("the session's status", () => s.status).then(() => s.status as grpc.StatusObject);

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    for (const type of ["v2", "v1", "hostile"]) {
      await client.registerWorkflow({
        definition: {
          case: "specJson",
          value: JSON.stringify({
            name: `batch-${type}`,
            version: 1,
            steps: [{ id: "only", type: `batch.${type}`, input: { i: "{{ input.i }}" } }],
          }),
        },
      });
    }
  });

  after(async () => {
    for (const s of sessions) s.close();
    await scheduler?.stop();
    await db?.close();
  });

  it("sends a version 2 session the leases of one pass in one LeaseBatch and takes its Reports item by item", async () => {
    const { s, ack, cases } = await attach("batch-v2", "batch.v2", SESSION_PROTOCOL_VERSION);
    assert.equal(ack.protocolVersion, SESSION_PROTOCOL_VERSION);
    const runIds = await queued("v2", 5);
    s.send({ case: "credit", value: { n: 5 } });
    const batch = await s.next("leases");
    assert.equal(batch.leases.length, 5);
    assert.deepEqual(new Set(batch.leases.map((l) => l.runId)), new Set(runIds));
    assert.deepEqual(
      cases.filter((c) => c === "lease" || c === "leases"),
      ["leases"],
    );
    const [a, b, c, d, e] = batch.leases as [Lease, Lease, Lease, Lease, Lease];
    const items: ReportInit[] = [
      { case: "started", value: { key: a.key } },
      { case: "heartbeat", value: { key: a.key } },
      { case: "completed", value: { key: a.key, output: jsonToValue({ by: "batch" }) } },
      { case: "completed", value: { key: b.key, output: jsonToValue({ by: "batch" }) } },
      { case: "failed", value: { key: c.key, error: { type: "BOOM", message: "no", retryable: false } } },
      {
        case: "completed",
        value: { key: d.key, output: create(ValueSchema, { kind: { case: "numberValue", value: NaN } }) },
      },
      { case: "completed", value: { key: { ...a.key!, fencingToken: a.key!.fencingToken + 9n } } },
      { case: "release", value: { key: e.key, reason: "batched release" } },
    ];
    s.send({ case: "reports", value: { items: items.map((report) => ({ report })) } });
    // Every bad item is rejected on its own, naming its place, in order; the stream stays open.
    const nan = await s.next("rejected");
    assert.equal(nan.code, "INVALID_ARGUMENT");
    assert.equal(nan.message, "reports.items[5].completed.output: NaN has no JSON form");
    assert.equal(nan.key?.taskRunId, d.key?.taskRunId);
    const stale = await s.next("rejected");
    assert.equal(stale.code, "FAILED_PRECONDITION");
    assert.match(stale.message, /^reports\.items\[6\]: /);
    // Acked counts the items that are reports, rejected ones included: 3 completed, 1 failed, 1 release.
    let through = 0n;
    while (through < 6n) through = (await s.next("acked")).through;
    assert.equal(through, 6n);

    assert.equal((await waitForRun(client, a.runId)).status, RunStatus.SUCCEEDED);
    assert.equal((await waitForRun(client, b.runId)).status, RunStatus.SUCCEEDED);
    assert.equal((await waitForRun(client, c.runId)).status, RunStatus.FAILED);
    const { run: dRun } = await client.getRun({ runId: d.runId });
    assert.equal(dRun?.status, RunStatus.RUNNING, "the rejected item changed nothing");
    // The released lease comes back: with credit it is leased again, alone, as a plain Lease.
    s.send({ case: "credit", value: { n: 1 } });
    const again = await s.next("lease");
    assert.equal(again.runId, e.runId);
    // A single report still works on a version 2 session.
    s.send({ case: "completed", value: { key: d.key, output: jsonToValue({ by: "single" }) } });
    s.send({ case: "completed", value: { key: again.key, output: jsonToValue({ by: "single" }) } });
    assert.equal((await waitForRun(client, d.runId)).status, RunStatus.SUCCEEDED);
    assert.equal((await waitForRun(client, e.runId)).status, RunStatus.SUCCEEDED);
    while (through < 8n) through = (await s.next("acked")).through;
    assert.equal(through, 8n);
  });

  it("treats a client that names no version as version 1: single leases only, single reports", async () => {
    const { s, ack, cases } = await attach("batch-v1", "batch.v1");
    assert.equal(ack.protocolVersion, 1);
    const runIds = await queued("v1", 3);
    s.send({ case: "credit", value: { n: 3 } });
    const leases = [await s.next("lease"), await s.next("lease"), await s.next("lease")];
    assert.deepEqual(new Set(leases.map((l) => l.runId)), new Set(runIds));
    assert.ok(!cases.includes("leases"), `a version 1 session got a batch: ${cases.join(", ")}`);
    for (const lease of leases) {
      s.send({ case: "started", value: { key: lease.key } });
      s.send({ case: "completed", value: { key: lease.key, output: jsonToValue({ ok: true }) } });
    }
    for (const runId of runIds) assert.equal((await waitForRun(client, runId)).status, RunStatus.SUCCEEDED);
    let through = 0n;
    while (through < 3n) through = (await s.next("acked")).through;
    assert.equal(through, 3n);
  });

  it("ends a session of a version it does not speak with FAILED_PRECONDITION naming both versions", async () => {
    const s = new RawSession(scheduler.address);
    sessions.push(s);
    s.send({
      case: "attach",
      value: { executorId: "batch-v99", taskTypes: ["batch.v2"], slots: 1, protocolVersion: 99 },
    });
    const status = await statusOf(s);
    assert.equal(status.code, grpc.status.FAILED_PRECONDITION);
    assert.match(
      status.details,
      new RegExp(
        `^attach\\.protocol_version: the executor speaks session protocol version 99, this scheduler versions 1 to ${SESSION_PROTOCOL_VERSION};`,
      ),
    );

    const negative = new RawSession(scheduler.address);
    sessions.push(negative);
    negative.send({
      case: "attach",
      value: { executorId: "batch-neg", taskTypes: ["batch.v2"], slots: 1, protocolVersion: -1 },
    });
    const refused = await statusOf(negative);
    assert.equal(refused.code, grpc.status.INVALID_ARGUMENT);
    assert.match(refused.details, /^attach\.protocol_version: /);
  });

  it("refuses hostile batches with a clear Rejected and keeps the count in step", async () => {
    const { s } = await attach("batch-hostile", "batch.hostile", SESSION_PROTOCOL_VERSION);
    const bogus = { taskRunId: "00000000-0000-4000-8000-000000000000", attempt: 1, fencingToken: 1n };
    s.send({ case: "reports", value: { items: [] } });
    assert.equal(
      (await s.next("rejected")).message,
      "reports.items: a Reports message needs at least one item",
    );
    s.send({
      case: "reports",
      value: { items: [{}, { report: { case: "release", value: { key: bogus } } }] },
    });
    assert.equal((await s.next("rejected")).message, "reports.items[0]: no report set");
    const unknown = await s.next("rejected");
    assert.equal(unknown.code, "NOT_FOUND");
    assert.match(unknown.message, /^reports\.items\[1\]: /);
    assert.equal((await s.next("acked")).through, 1n);
    const huge = Array.from({ length: MAX_BATCH_ITEMS + 1 }, () => ({
      report: { case: "completed" as const, value: { key: bogus } },
    }));
    s.send({ case: "reports", value: { items: huge } });
    const tooMany = await s.next("rejected");
    assert.equal(tooMany.code, "INVALID_ARGUMENT");
    assert.equal(
      tooMany.message,
      `reports.items: ${MAX_BATCH_ITEMS + 1} items, more than the ${MAX_BATCH_ITEMS} a Reports message may hold`,
    );
    let through = 0n;
    while (through < BigInt(MAX_BATCH_ITEMS + 2)) through = (await s.next("acked")).through;
    assert.equal(through, BigInt(MAX_BATCH_ITEMS + 2), "the refused batch's reports are counted");
    const [runId] = await queued("hostile", 1);
    s.send({ case: "credit", value: { n: 1 } });
    const lease = await s.next("lease");
    assert.equal(lease.runId, runId);
  });

  it("handles the other items of a batch that cannot be decoded as a whole, each as if alone", async () => {
    // The deepest output a Completed of its own may hold, and one deeper still.
    let fits = 1;
    const single = (depth: number): Uint8Array =>
      toBinary(
        SessionRequestSchema,
        create(SessionRequestSchema, { message: { case: "completed", value: { output: nested(depth) } } }),
      );
    for (;;) {
      try {
        fromBinary(SessionRequestSchema, single(fits + 1));
        fits++;
      } catch {
        break;
      }
    }
    const { s } = await attach("batch-deep", "batch.v2", SESSION_PROTOCOL_VERSION);
    const runIds = await queued("v2", 2);
    s.send({ case: "credit", value: { n: 2 } });
    const { leases } = await s.next("leases");
    const [a, b] = leases as [Lease, Lease];
    // In a batch the output sits two messages deeper: the batch cannot be decoded, its items can.
    s.send({
      case: "reports",
      value: {
        items: [
          { report: { case: "completed", value: { key: a.key, output: nested(fits) } } },
          { report: { case: "completed", value: { key: b.key, output: nested(fits + 5) } } },
          { report: { case: "started", value: { key: b.key } } },
        ],
      },
    });
    const rejected = await s.next("rejected");
    assert.equal(rejected.code, "INVALID_ARGUMENT");
    assert.match(
      rejected.message,
      /^reports\.items\[1\]: the message is not a valid nexusflow\.v1\.Report: .*maximum recursion depth/,
    );
    let through = 0n;
    while (through < 2n) through = (await s.next("acked")).through;
    assert.equal(through, 2n);
    // Its output is too deep for GetRun's answer: read what was stored.
    const pool = new pg.Pool({ connectionString: db.url });
    try {
      await waitFor("the deep completion stored", async () => {
        const { rows } = await pool.query<{ status: string }>(
          "SELECT status FROM task_runs WHERE run_id = $1",
          [a.runId],
        );
        return rows[0]?.status === "SUCCEEDED";
      });
    } finally {
      await pool.end();
    }
    await waitFor("the started item taken", async () => {
      const { run } = await client.getRun({ runId: b.runId });
      return run?.tasks[0]?.status === TaskStatus.RUNNING;
    });
    assert.deepEqual(new Set(runIds), new Set([a.runId, b.runId]));
  });
});
