/**
 * The executor session protocol against a real scheduler and PostgreSQL, driven by raw sessions:
 * leases, fencing, stale and hostile reports, lease expiry and re-lease.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ConnectError, Code } from "@connectrpc/connect";
import pg from "pg";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { RunStatus, TaskStatus } from "@nexusflow/gen";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import type { Scheduler } from "../src/scheduler.js";
import {
  RawSession,
  outboxEvents,
  startTestDatabase,
  startTestScheduler,
  waitForRun,
  workflowClient,
} from "./support.js";

describe("executor session protocol", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: ReturnType<typeof workflowClient>;
  const sessions: RawSession[] = [];
  const open = (): RawSession => {
    const s = new RawSession(scheduler.address);
    sessions.push(s);
    return s;
  };
  /** A session attached as `executorId`, for proto-task, with one slot. */
  const attached = async (executorId: string): Promise<RawSession> => {
    const s = open();
    s.send({ case: "attach", value: { executorId, taskTypes: ["proto-task"], slots: 1 } });
    await s.next("attachAck");
    return s;
  };
  /** Starts a proto-one run with input `x` and takes its lease on `s` (one credit). */
  const startAndLease = async (s: RawSession, x: number) => {
    const { run } = await client.startRun({ workflowName: "proto-one", input: jsonToValue({ x }) });
    assert.ok(run);
    s.send({ case: "credit", value: { n: 1 } });
    return { run, lease: await s.next("lease") };
  };

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    await client.registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({
          name: "proto-one",
          version: 1,
          steps: [
            {
              id: "only",
              type: "proto-task",
              input: { x: "{{ input.x }}" },
              retry: { maxAttempts: 3, initialInterval: "10ms" },
            },
          ],
          output: { got: "{{ steps.only.output.y }}" },
        }),
      },
    });
  });

  after(async () => {
    for (const s of sessions) s.close();
    await scheduler?.stop();
    await db?.close();
  });

  it("leases a task to an attached session with credit and accepts its result once", async () => {
    const s = open();
    s.send({ case: "attach", value: { executorId: "raw-1", taskTypes: ["proto-task"], slots: 1 } });
    const ack = await s.next("attachAck");
    assert.ok(ack.sessionId.length > 0);
    const { run, lease } = await startAndLease(s, 41);
    assert.equal(lease.runId, run.id);
    assert.equal(lease.stepId, "only");
    assert.equal(lease.key?.attempt, 1);
    assert.deepEqual(lease.input?.kind.case, "structValue");
    s.send({ case: "started", value: { key: lease.key } });
    s.send({ case: "started", value: { key: lease.key } });
    const dup = await s.next("rejected");
    assert.equal(dup.code, "FAILED_PRECONDITION");
    s.send({ case: "completed", value: { key: lease.key, output: jsonToValue({ y: 42 }) } });
    const done = await waitForRun(client, run.id);
    assert.equal(done.status, RunStatus.SUCCEEDED);
    assert.deepEqual(valueToJson(done.output), { got: 42 });
    // A second completion of the same lease is rejected and changes nothing.
    s.send({ case: "completed", value: { key: lease.key } });
    const again = await s.next("rejected");
    assert.match(again.code, /NOT_FOUND|FAILED_PRECONDITION/);
    const { run: after2 } = await client.getRun({ runId: run.id });
    assert.equal(after2?.tasks[0]?.attempts.length, 1);
    assert.equal(after2?.tasks[0]?.status, TaskStatus.SUCCEEDED);
  });

  it("acknowledges a session's reports once what they changed is committed, rejected ones included", async () => {
    const s = await attached("raw-acked");
    const { run, lease } = await startAndLease(s, 3);
    s.send({ case: "completed", value: { key: lease.key, output: jsonToValue({ y: 4 }) } });
    const first = await s.next("acked");
    assert.equal(first.through, 1n);
    // Acknowledged means stored: the task's success is in PostgreSQL already.
    const pool = new pg.Pool({ connectionString: db.url });
    try {
      const stored = await pool.query<{ status: string }>("SELECT status FROM task_runs WHERE run_id = $1", [
        run.id,
      ]);
      assert.deepEqual(
        stored.rows.map((r) => r.status),
        ["SUCCEEDED"],
      );
    } finally {
      await pool.end();
    }
    // A report that changes nothing (the same completion again) still counts.
    s.send({ case: "completed", value: { key: lease.key } });
    await s.next("rejected");
    assert.equal((await s.next("acked")).through, 2n);
  });

  it("takes a Completed without a Started as both: the attempt has a start time and taskStarted precedes taskSucceeded", async () => {
    const s = await attached("raw-fast");
    const { run, lease } = await startAndLease(s, 7);
    s.send({ case: "completed", value: { key: lease.key, output: jsonToValue({ y: 8 }) } });
    const done = await waitForRun(client, run.id);
    assert.equal(done.status, RunStatus.SUCCEEDED);
    const attempt = done.tasks[0]?.attempts[0];
    assert.ok(attempt?.startTime !== undefined, "the attempt has a start time");
    assert.equal(attempt?.status, TaskStatus.SUCCEEDED);
    const pool = new pg.Pool({ connectionString: db.url });
    try {
      const events = await outboxEvents(pool, [run.id]);
      assert.deepEqual(
        events.map((e) => e.type),
        ["runStarted", "taskLeased", "taskStarted", "taskSucceeded", "runCompleted"],
      );
    } finally {
      await pool.end();
    }
  });

  it("expires the leases of a lost session, re-leases with a new fencing token, and rejects the stale completion", async () => {
    const a = await attached("raw-a");
    const { run, lease: first } = await startAndLease(a, 1);
    a.send({ case: "started", value: { key: first.key } });
    a.close(); // the executor vanishes mid-task

    const b = await attached("raw-b");
    b.send({ case: "credit", value: { n: 1 } });
    const second = await b.next("lease", 15_000);
    assert.equal(second.runId, run.id);
    assert.equal(second.key?.attempt, 2);
    assert.ok((second.key?.fencingToken ?? 0n) > (first.key?.fencingToken ?? 0n));

    // The old executor comes back and reports its (stale) result: rejected, nothing changes.
    const a2 = open();
    a2.send({
      case: "attach",
      value: {
        executorId: "raw-a",
        taskTypes: ["proto-task"],
        slots: 1,
        heldLeases: first.key ? [first.key] : [],
      },
    });
    const ack = await a2.next("attachAck");
    assert.equal(ack.revoked.length, 1);
    a2.send({ case: "completed", value: { key: first.key } });
    const rejected = await a2.next("rejected");
    assert.equal(rejected.code, "FAILED_PRECONDITION");
    assert.match(rejected.message, /stale lease/);

    b.send({ case: "completed", value: { key: second.key, output: jsonToValue({ y: 2 }) } });
    const done = await waitForRun(client, run.id);
    assert.equal(
      done.status,
      RunStatus.SUCCEEDED,
      JSON.stringify(done.error) +
        JSON.stringify(done.tasks.map((t) => t.attempts.map((a) => [a.status, a.error?.type]))),
    );
    const attempts = done.tasks[0]?.attempts ?? [];
    assert.equal(attempts.length, 2);
    assert.equal(attempts[0]?.status, TaskStatus.FAILED);
    assert.equal(attempts[0]?.error?.type, "LEASE_EXPIRED");
    assert.equal(attempts[0]?.executorId, "raw-a");
    assert.equal(attempts[1]?.status, TaskStatus.SUCCEEDED);
    assert.equal(attempts[1]?.executorId, "raw-b");
  });

  it("rejects hostile reports without changing state", async () => {
    const s = await attached("raw-h");
    s.send({
      case: "completed",
      value: { key: { taskRunId: "00000000-0000-4000-8000-000000000000", attempt: 1, fencingToken: 1n } },
    });
    assert.equal((await s.next("rejected")).code, "NOT_FOUND");
    s.send({ case: "started", value: {} });
    assert.equal((await s.next("rejected")).code, "INVALID_ARGUMENT");
    s.send({ case: "credit", value: { n: 0 } });
    assert.equal((await s.next("rejected")).code, "INVALID_ARGUMENT");
    s.send({ case: "credit", value: { n: 1 } });
    const { run } = await client.startRun({ workflowName: "proto-one", input: jsonToValue({ x: 2 }) });
    const lease = await s.next("lease");
    assert.equal(lease.runId, run?.id);
    const wrong = { ...lease.key!, fencingToken: lease.key!.fencingToken + 7n };
    s.send({ case: "completed", value: { key: wrong } });
    assert.equal((await s.next("rejected")).code, "FAILED_PRECONDITION");
    const { run: mid } = await client.getRun({ runId: lease.runId });
    assert.equal(mid?.status, RunStatus.RUNNING);
    s.send({
      case: "failed",
      value: { key: lease.key, error: { type: "BOOM", message: "terminal", retryable: false } },
    });
    const done = await waitForRun(client, lease.runId);
    assert.equal(done.status, RunStatus.FAILED);
    assert.equal(done.error?.type, "BOOM");
  });

  it("refuses a result PostgreSQL cannot store (U+0000) naming the field, and keeps a failure's text readable", async () => {
    const s = await attached("raw-nul");
    const { run, lease } = await startAndLease(s, 3);
    s.send({ case: "completed", value: { key: lease.key, output: jsonToValue({ y: ["ok", "a\u0000"] }) } });
    const rejected = await s.next("rejected");
    assert.equal(rejected.code, "INVALID_ARGUMENT");
    assert.match(rejected.message, /completed\.output\.y\[1\]/);
    // Still leased, nothing stored; a failure whose message holds one is kept with U+FFFD instead.
    const { run: mid } = await client.getRun({ runId: run.id });
    assert.equal(mid?.status, RunStatus.RUNNING);
    s.send({
      case: "failed",
      value: {
        key: lease.key,
        error: {
          type: "EXIT_1",
          message: "stderr: \u0000 bytes",
          retryable: false,
          details: jsonToValue({ ["k\u0000"]: "v\u0000" }),
        },
      },
    });
    const done = await waitForRun(client, run.id);
    assert.equal(done.status, RunStatus.FAILED);
    const error = done.tasks[0]?.error;
    assert.equal(error?.message, "stderr: \ufffd bytes");
    assert.deepEqual(valueToJson(error?.details), { ["k\ufffd"]: "v\ufffd" });
  });

  it("refuses a session whose first message is not attach", async () => {
    const s = open();
    s.send({ case: "credit", value: { n: 1 } });
    const status = await new Promise<{ code: number; details: string }>((resolve) =>
      s.stream.on("status", resolve),
    );
    assert.equal(status.code, 9);
    assert.match(status.details, /first message of a session must be attach/);
  });

  it("rejects invalid definitions with every problem and its JSON path, storing nothing", async () => {
    const err = await client
      .registerWorkflow({
        definition: {
          case: "specJson",
          value: JSON.stringify({
            name: "bad",
            version: 1,
            steps: [
              { id: "a", type: "noop", dependsOn: ["c"] },
              { id: "b", type: "noop", dependsOn: ["a"], input: "{{ steps.z.output }}" },
              { id: "c", type: "noop", dependsOn: ["b"], timeouts: { startToClose: "soon" } },
              { id: "a", type: "noop" },
              { id: "d", type: "noop", dependsOn: ["nope"] },
            ],
          }),
        },
      })
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    assert.ok(err);
    assert.equal(err.code, Code.InvalidArgument);
    const violations = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
    const text = violations.map((v) => `${v.field} ${v.description}`).join("\n");
    assert.match(text, /a -> c -> b -> a|a -> b -> c -> a|cycle/);
    assert.match(text, /\$\.steps\[3\]\.id/);
    assert.match(text, /\$\.steps\[4\]\.dependsOn\[0\]/);
    assert.match(text, /startToClose/);
    await assert.rejects(
      client.getWorkflow({ name: "bad" }),
      (e: unknown) => ConnectError.from(e).code === Code.NotFound,
    );
  });

  it("keeps definitions immutable per version", async () => {
    const spec = { name: "immut", version: 1, steps: [{ id: "a", type: "noop" }] };
    const first = await client.registerWorkflow({
      definition: { case: "specJson", value: JSON.stringify(spec) },
    });
    assert.equal(first.created, true);
    const again = await client.registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({ steps: spec.steps, version: 1, name: "immut" }),
      },
    });
    assert.equal(again.created, false);
    await assert.rejects(
      client.registerWorkflow({
        definition: {
          case: "specJson",
          value: JSON.stringify({ ...spec, steps: [{ id: "b", type: "noop" }] }),
        },
      }),
      (e: unknown) => ConnectError.from(e).code === Code.AlreadyExists,
    );
  });
});
