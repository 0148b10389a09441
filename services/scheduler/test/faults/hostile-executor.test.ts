/**
 * A hostile executor on a raw session (issue 4): reports for leases it does not hold, wrong fencing
 * tokens and attempts, malformed messages, Started for tasks never leased to it, and a claim of
 * another executor's lease at attach. Each is answered with Rejected and the right code, and
 * nothing changes: GetRun, the outbox and the attempts are the same before and after. A failure's
 * type and message are kept cut to their bounds.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { toJson } from "@bufbuild/protobuf";
import { jsonToValue } from "@nexusflow/common";
import { RunSchema, RunStatus, TaskStatus, type LeaseKey } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import {
  RawSession,
  outboxEvents,
  startTestDatabase,
  startTestScheduler,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";
import { registerSpec } from "../e2e/harness.js";
import { FaultTables } from "./invariants.js";
import { startRun } from "./support.js";

type KeyInit = { taskRunId: string; attempt: number; fencingToken: bigint };

describe("fault injection: hostile executor", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let tables: FaultTables;
  let scheduler: Scheduler;
  let client: ReturnType<typeof workflowClient>;
  const sessions: RawSession[] = [];
  const open = (executorId: string, heldLeases: KeyInit[] = []): RawSession => {
    const s = new RawSession(scheduler.address);
    sessions.push(s);
    s.send({ case: "attach", value: { executorId, taskTypes: ["hostile.task"], slots: 1, heldLeases } });
    return s;
  };

  before(async () => {
    db = await startTestDatabase();
    tables = new FaultTables(db.url);
    scheduler = await startTestScheduler(db.url, { heartbeatIntervalMs: 200, sessionTimeoutMs: 2000 });
    client = workflowClient(scheduler.address);
  });

  after(async () => {
    for (const s of sessions) s.close();
    await scheduler?.stop();
    await tables?.close();
    await db?.close();
  });

  it("rejects every report it has no right to make, with the right code, and changes nothing", async () => {
    await registerSpec(client, {
      name: "hostile",
      version: 1,
      steps: ["p1", "p2", "p3"].map((id) => ({
        id,
        type: "hostile.task",
        input: { step: id },
        retry: { maxAttempts: 2, initialInterval: "10ms" },
      })),
    });
    const runId = await startRun(client, "hostile", {});

    const honest = open("honest");
    await honest.next("attachAck");
    honest.send({ case: "credit", value: { n: 1 } });
    const mine = await honest.next("lease");
    assert.ok(mine.key);
    honest.send({ case: "started", value: { key: mine.key } });

    const hostile = open("hostile");
    await hostile.next("attachAck");
    hostile.send({ case: "credit", value: { n: 1 } });
    const own = await hostile.next("lease");
    assert.ok(own.key);
    hostile.send({ case: "started", value: { key: own.key } });

    // Both leases RUNNING and committed, the third task queued: the state every report must leave alone.
    const settled = await waitFor("two tasks RUNNING and one QUEUED", async () => {
      const { run } = await client.getRun({ runId });
      const statuses = run?.tasks.map((t) => t.status).sort();
      return JSON.stringify(statuses) ===
        JSON.stringify([TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.RUNNING].sort())
        ? run
        : undefined;
    });
    const queued = settled.tasks.find((t) => t.status === TaskStatus.QUEUED);
    assert.ok(queued);
    const snapshot = async (): Promise<unknown> => {
      const { run } = await client.getRun({ runId });
      assert.ok(run);
      const { rows } = await tables.pool.query<{ seq: string; attempts: string }>(
        `SELECT r.event_seq::text AS seq,
                (SELECT count(*) FROM task_attempts a WHERE a.run_id = r.id)::text AS attempts
           FROM workflow_runs r WHERE r.id = $1`,
        [runId],
      );
      const events = (await outboxEvents(tables.pool, [runId])).length;
      // A queued task's pending_reason is the scheduler's live view of its sessions (it counts the
      // hostile executor too once it attaches), not stored state: left out of the comparison.
      for (const task of run.tasks) task.pendingReason = "";
      return { run: toJson(RunSchema, run), db: rows[0], events };
    };
    const beforeState = await snapshot();

    const theirs: KeyInit = { ...(mine.key as KeyInit) };
    const ours: KeyInit = { ...(own.key as KeyInit) };
    const reports: [string, Parameters<RawSession["send"]>[0], string, RegExp?][] = [
      // Leases it does not hold: the honest executor's, with its exact key.
      [
        "completed for another session's lease",
        { case: "completed", value: { key: theirs } },
        "FAILED_PRECONDITION",
        /not leased to this session/,
      ],
      [
        "failed for another session's lease",
        { case: "failed", value: { key: theirs, error: { type: "X", message: "x", retryable: false } } },
        "FAILED_PRECONDITION",
        /not leased to this session/,
      ],
      [
        "heartbeat for another session's lease",
        { case: "heartbeat", value: { key: theirs } },
        "FAILED_PRECONDITION",
        /not leased to this session/,
      ],
      [
        "release of another session's lease",
        { case: "release", value: { key: theirs, reason: "mine now" } },
        "FAILED_PRECONDITION",
        /not leased to this session/,
      ],
      [
        "started for another session's lease",
        { case: "started", value: { key: theirs } },
        "FAILED_PRECONDITION",
      ],
      // Its own lease with a wrong fencing token or attempt.
      [
        "completed with a higher fencing token",
        { case: "completed", value: { key: { ...ours, fencingToken: ours.fencingToken + 1n } } },
        "FAILED_PRECONDITION",
        /stale lease/,
      ],
      [
        "completed with a lower fencing token",
        { case: "completed", value: { key: { ...ours, fencingToken: ours.fencingToken - 1n } } },
        "FAILED_PRECONDITION",
        /stale lease/,
      ],
      [
        "completed with a negative fencing token",
        { case: "completed", value: { key: { ...ours, fencingToken: -1n } } },
        "FAILED_PRECONDITION",
        /stale lease/,
      ],
      [
        "failed with the next attempt's number",
        {
          case: "failed",
          value: {
            key: { ...ours, attempt: ours.attempt + 1 },
            error: { type: "X", message: "x", retryable: true },
          },
        },
        "FAILED_PRECONDITION",
        /stale lease/,
      ],
      [
        "release with a wrong fencing token",
        { case: "release", value: { key: { ...ours, fencingToken: ours.fencingToken + 5n } } },
        "FAILED_PRECONDITION",
        /stale lease/,
      ],
      // Started for a task never leased to anyone (more Started than credit), guessing its key.
      [
        "started for a queued task (attempt 0)",
        { case: "started", value: { key: { taskRunId: queued.id, attempt: 0, fencingToken: 0n } } },
        "FAILED_PRECONDITION",
      ],
      [
        "started for a queued task (guessed attempt 1)",
        { case: "started", value: { key: { taskRunId: queued.id, attempt: 1, fencingToken: 1n } } },
        "FAILED_PRECONDITION",
      ],
      [
        "completed for a queued task",
        { case: "completed", value: { key: { taskRunId: queued.id, attempt: 0, fencingToken: 0n } } },
        "FAILED_PRECONDITION",
      ],
      // Unknown tasks.
      [
        "completed for an unknown task",
        {
          case: "completed",
          value: { key: { taskRunId: "00000000-0000-4000-8000-000000000000", attempt: 1, fencingToken: 1n } },
        },
        "NOT_FOUND",
      ],
      [
        "failed for a task id that is not a uuid",
        {
          case: "failed",
          value: { key: { taskRunId: "'; DROP TABLE task_runs; --", attempt: 1, fencingToken: 1n } },
        },
        "NOT_FOUND",
      ],
      // Malformed messages.
      [
        "failed without a key",
        { case: "failed", value: { error: { type: "X", message: "x", retryable: false } } },
        "INVALID_ARGUMENT",
      ],
      [
        "completed without a key",
        { case: "completed", value: { output: jsonToValue({ stolen: true }) } },
        "INVALID_ARGUMENT",
      ],
      ["started without a key", { case: "started", value: {} }, "INVALID_ARGUMENT"],
      [
        "release with an empty task id",
        { case: "release", value: { key: { taskRunId: "", attempt: 1, fencingToken: 1n } } },
        "INVALID_ARGUMENT",
      ],
      [
        "heartbeat with an empty task id",
        { case: "heartbeat", value: { key: { taskRunId: "", attempt: 1, fencingToken: 1n } } },
        "INVALID_ARGUMENT",
      ],
      ["negative credit", { case: "credit", value: { n: -5 } }, "INVALID_ARGUMENT"],
      ["zero credit", { case: "credit", value: { n: 0 } }, "INVALID_ARGUMENT"],
      ["credit above the per-message limit", { case: "credit", value: { n: 100_001 } }, "INVALID_ARGUMENT"],
      ["an empty message", undefined, "INVALID_ARGUMENT"],
      [
        "a second attach",
        { case: "attach", value: { executorId: "honest", taskTypes: ["hostile.task"], slots: 100 } },
        "FAILED_PRECONDITION",
      ],
    ];
    for (const [what, message, code, text] of reports) {
      hostile.send(message);
      const rejected = await hostile.next("rejected", 5_000).catch((e: unknown) => {
        throw new Error(`${what}: no Rejected`, { cause: e });
      });
      assert.equal(rejected.code, code, `${what}: ${rejected.code} ${rejected.message}`);
      if (text !== undefined) assert.match(rejected.message, text, what);
      const sentKey = (message?.value as { key?: LeaseKey } | undefined)?.key;
      if (sentKey !== undefined && sentKey.taskRunId !== "")
        assert.equal(rejected.key?.taskRunId, sentKey.taskRunId, `${what}: the rejection names the lease`);
    }

    // Claiming the honest executor's lease at attach under another executor id: revoked, not moved.
    const thief = open("thief", [theirs]);
    const ack = await thief.next("attachAck");
    assert.deepEqual(
      ack.revoked.map((k) => k.taskRunId),
      [theirs.taskRunId],
      "the claimed lease is revoked for the thief",
    );
    thief.send({ case: "completed", value: { key: theirs } });
    assert.equal((await thief.next("rejected")).code, "FAILED_PRECONDITION");

    // Credit piled up past the session limit (on a type nothing uses, so no lease follows).
    const greedy = new RawSession(scheduler.address);
    sessions.push(greedy);
    greedy.send({ case: "attach", value: { executorId: "greedy", taskTypes: ["hostile.none"], slots: 1 } });
    await greedy.next("attachAck");
    for (let i = 0; i < 11; i++) greedy.send({ case: "credit", value: { n: 100_000 } });
    const exhausted = await greedy.next("rejected");
    assert.equal(exhausted.code, "RESOURCE_EXHAUSTED", exhausted.message);

    assert.deepEqual(await snapshot(), beforeState, "no hostile report changed the run");
    // The honest executor still holds its lease: its heartbeat is accepted (no Rejected follows a
    // report that is rejected right after it), and its completion counts.
    honest.send({ case: "heartbeat", value: { key: mine.key } });
    honest.send({ case: "credit", value: { n: 0 } });
    assert.match((await honest.next("rejected")).message, /credit must be between/);

    honest.send({ case: "completed", value: { key: mine.key, output: jsonToValue({ by: "honest" }) } });
    hostile.send({ case: "completed", value: { key: own.key, output: jsonToValue({ by: "hostile" }) } });
    honest.send({ case: "credit", value: { n: 1 } });
    const last = await honest.next("lease");
    assert.equal(last.key?.taskRunId, queued.id);
    assert.equal(last.key?.attempt, 1, "the queued task's first real lease is attempt 1");
    honest.send({ case: "completed", value: { key: last.key } });

    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.SUCCEEDED);
    for (const t of run.tasks) assert.equal(t.attempts.length, 1, `${t.stepId} ran once`);
    await tables.assertInvariants([runId]);
  });

  it("keeps a failure's type and message cut to their bounds, whatever an executor sends", async () => {
    await registerSpec(client, {
      name: "hostile-loud",
      version: 1,
      steps: [{ id: "a", type: "hostile.task", retry: { maxAttempts: 1 } }],
    });
    const runId = await startRun(client, "hostile-loud", {});
    const loud = open("loud");
    await loud.next("attachAck");
    loud.send({ case: "credit", value: { n: 1 } });
    const leased = await loud.next("lease");
    assert.ok(leased.key);
    loud.send({ case: "started", value: { key: leased.key } });
    loud.send({
      case: "failed",
      value: {
        key: leased.key,
        error: { type: "T".repeat(10_000), message: "m".repeat(4 * 1024 * 1024), retryable: false },
      },
    });
    const run = await waitForRun(client, runId);
    assert.equal(run.status, RunStatus.FAILED);
    const error = run.tasks[0]?.error;
    assert.equal(error?.type, `${"T".repeat(256)}… (9744 more characters)`);
    assert.equal(error?.message, `${"m".repeat(16_384)}… (${4 * 1024 * 1024 - 16_384} more characters)`);
  });
});
