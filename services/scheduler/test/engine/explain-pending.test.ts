/**
 * ExplainPending (issue #27) against a real scheduler and PostgreSQL: one step of a run is held,
 * in turn, by its dependency, by no executor advertising its type, by the credit of the only
 * executor that does being in use, and by its retry backoff (with the time of the next attempt);
 * at each point GetRun's one-line pending_reason says the same. A leased or finished task answers
 * with its state; bad input is refused with the right code, naming the field or the step.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import { Executor } from "@nexusflow/executor";
import {
  RunStatus,
  TaskKind,
  TaskStatus,
  type ExplainPendingResponse,
  type PendingGate,
  type Run,
} from "@nexusflow/gen";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import type { Scheduler } from "../../src/scheduler.js";
import { describeRun, registerSpec, task, type WorkflowClient } from "../e2e/harness.js";
import {
  RawSession,
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  workflowClient,
} from "../support.js";

/** The gate cases of a response, in order. */
const cases = (r: ExplainPendingResponse): (PendingGate["gate"]["case"] | undefined)[] =>
  r.gates.map((g) => g.gate.case);

type Gates = Exclude<PendingGate["gate"], { case: undefined }>;
/** Each gate's value by its case. */
type GateValue = { [G in Gates as G["case"]]: G["value"] };

/** The value of the response's gate of `kind`. */
function gate<K extends keyof GateValue>(r: ExplainPendingResponse, kind: K): GateValue[K] {
  const g = r.gates.find((x) => x.gate.case === kind);
  assert.ok(g, `no ${kind} gate in ${JSON.stringify(cases(r))}`);
  return g.gate.value as GateValue[K];
}

async function rejection(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  assert.fail("expected the call to fail");
}

describe("ExplainPending", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: WorkflowClient;
  let firsts: Executor | undefined;
  const raw: RawSession[] = [];
  /** Releases the `first` steps held by the gated executor. */
  const releases: (() => void)[] = [];

  const getRun = async (runId: string): Promise<Run> => {
    const { run } = await client.getRun({ runId });
    assert.ok(run);
    return run;
  };

  /** Waits until ExplainPending of `step` in `runId` satisfies `ok`, and returns the answer. */
  const explainUntil = (
    what: string,
    runId: string,
    stepId: string,
    ok: (r: ExplainPendingResponse) => boolean,
  ): Promise<ExplainPendingResponse> =>
    waitFor(`${stepId} of ${runId}: ${what}`, async () => {
      const r = await client.explainPending({ runId, stepId });
      return ok(r) ? r : undefined;
    });

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    await registerSpec(client, {
      name: "xp-order",
      version: 1,
      steps: [
        { id: "first", type: "xp.first" },
        {
          id: "charge",
          type: "xp.charge",
          dependsOn: ["first"],
          retry: { maxAttempts: 3, initialInterval: "1h", maxInterval: "2h", jitter: "none" },
          timeouts: { scheduleToStart: "1h" },
        },
      ],
    });
    // Its steps wait until the test releases them.
    firsts = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "xp-firsts",
      slots: 4,
      builtins: false,
      logger: testLogger("executor"),
    }).register("xp.first", () => new Promise<object>((resolve) => releases.push(() => resolve({}))));
    await firsts.start();
  });

  after(async () => {
    for (const release of releases) release();
    for (const s of raw) s.close();
    await firsts?.stop("test over");
    await scheduler?.stop();
    await db?.close();
  });

  it("names each gate holding a step in turn, and GetRun's reason says the same", async () => {
    const start = async (): Promise<string> => {
      const { run } = await client.startRun({ workflowName: "xp-order", input: jsonToValue({}) });
      assert.ok(run);
      return run.id;
    };
    const runA = await start();
    const runB = await start();

    // 1. Its dependency runs (held by the gated executor): waiting on it, by name.
    await waitFor("both first steps running", async () =>
      (await Promise.all([getRun(runA), getRun(runB)])).every(
        (r) => task(r, "first").status === TaskStatus.RUNNING,
      ),
    );
    const deps = await client.explainPending({ runId: runA, stepId: "charge" });
    assert.equal(deps.status, TaskStatus.PENDING);
    assert.equal(deps.runStatus, RunStatus.RUNNING);
    assert.equal(deps.kind, TaskKind.STEP);
    assert.deepEqual(cases(deps), ["dependencies"]);
    assert.deepEqual(gate(deps, "dependencies").stepIds, ["first"]);
    assert.equal(deps.pendingReason, "unfinished dependencies: first");
    const a1 = await getRun(runA);
    assert.equal(task(a1, "charge").pendingReason, deps.pendingReason, describeRun(a1));
    assert.equal(task(a1, "charge").id, deps.taskRunId);
    assert.equal(task(a1, "first").pendingReason, "", "a running task carries no reason");

    // 2. The dependency finishes; no executor advertises xp.charge. Both charges wait, one ahead
    // of the other; the schedule-to-start deadline is there too.
    for (const release of releases.splice(0)) release();
    const noExec = 'no executor advertises type "xp.charge"';
    const [qa, qb] = await Promise.all(
      [runA, runB].map((id) => explainUntil("no executor", id, "charge", (r) => r.pendingReason === noExec)),
    );
    assert.ok(qa && qb);
    assert.deepEqual(cases(qa), ["noExecutor", "scheduleToStart"]);
    assert.equal(gate(qa, "noExecutor").type, "xp.charge");
    assert.deepEqual(
      [gate(qa, "noExecutor").ahead, gate(qb, "noExecutor").ahead].sort(),
      [0, 1],
      "one charge is ahead of the other in the queue",
    );
    const a2 = await getRun(runA);
    const charge2 = task(a2, "charge");
    assert.equal(charge2.status, TaskStatus.QUEUED);
    assert.equal(charge2.pendingReason, noExec);
    const sts = gate(qa, "scheduleToStart");
    assert.equal(sts.timeoutMs, 3_600_000n);
    assert.ok(sts.deadline);
    // The deadline is one hour after the task was queued (when the dependency finished).
    const firstEnd = task(a2, "first").endTime;
    assert.ok(firstEnd);
    const queuedFor = timestampDate(sts.deadline).getTime() - 3_600_000 - timestampDate(firstEnd).getTime();
    assert.ok(queuedFor >= 0 && queuedFor < 5_000, `queued ${queuedFor} ms after first ended`);

    // 3. One executor for xp.charge with one slot: it takes the older charge, and its credit is
    // in use while it holds it: the other waits for it, busy.
    const session = new RawSession(scheduler.address);
    raw.push(session);
    session.send({ case: "attach", value: { executorId: "xp-charger", taskTypes: ["xp.charge"] } });
    await session.next("attachAck");
    session.send({ case: "credit", value: { n: 1 } });
    const lease = await session.next("lease");
    assert.ok(lease.key);
    const leasedRun = lease.runId;
    const waitingRun = leasedRun === runA ? runB : runA;
    assert.equal(
      (leasedRun === runA ? gate(qa, "noExecutor") : gate(qb, "noExecutor")).ahead,
      0,
      "the one that was ahead is leased first",
    );
    const busyReason = 'the one executor for type "xp.charge" is busy (no credit)';
    const busy = await explainUntil("busy", waitingRun, "charge", (r) => r.pendingReason === busyReason);
    assert.deepEqual(cases(busy), ["executorsBusy", "scheduleToStart"]);
    assert.deepEqual(
      { ...gate(busy, "executorsBusy"), since: undefined, $typeName: undefined },
      {
        $typeName: undefined,
        type: "xp.charge",
        executors: 1,
        draining: 0,
        ahead: 0,
        since: undefined,
      },
    );
    assert.ok(gate(busy, "executorsBusy").since, "since when it has been busy");
    assert.equal(task(await getRun(waitingRun), "charge").pendingReason, busyReason);
    const leased = await explainUntil("leased", leasedRun, "charge", (r) => r.status !== TaskStatus.QUEUED);
    assert.equal(leased.status, TaskStatus.LEASED);
    assert.deepEqual(leased.gates, [], "a leased task has no gates");
    assert.equal(leased.pendingReason, "");

    // 4. Its attempt fails, retryable: it waits out a backoff of one hour, by the time GetRun shows.
    session.send({
      case: "failed",
      value: { key: lease.key, error: { type: "PSP_DOWN", message: "try later", retryable: true } },
    });
    const retry = await explainUntil(
      "retry backoff",
      leasedRun,
      "charge",
      (r) => r.status === TaskStatus.RETRY_WAIT,
    );
    assert.deepEqual(cases(retry), ["retryBackoff"]);
    const backoff = gate(retry, "retryBackoff");
    assert.equal(backoff.nextAttempt, 2);
    assert.equal(backoff.maxAttempts, 3);
    assert.equal(backoff.lastError?.type, "PSP_DOWN");
    assert.ok(backoff.nextAttemptTime);
    // GetRun reads what is committed: the retry's row may lag ExplainPending's live answer by a commit.
    const stored = await waitFor("GetRun to show the retry's due time", async () => {
      const t = task(await getRun(leasedRun), "charge");
      return t.nextAttemptTime === undefined ? undefined : t;
    });
    assert.ok(stored.nextAttemptTime);
    assert.equal(
      timestampDate(backoff.nextAttemptTime).getTime(),
      timestampDate(stored.nextAttemptTime).getTime(),
    );
    const due = timestampDate(backoff.nextAttemptTime);
    assert.ok(Math.abs(due.getTime() - Date.now() - 3_600_000) < 60_000, `due at ${due.toISOString()}`);
    assert.equal(retry.pendingReason, `retry (attempt 2 of 3) due at ${due.toISOString()}`);
    assert.equal(stored.pendingReason, retry.pendingReason);
    // The other charge still waits for the executor's credit (the executor has not granted more).
    assert.equal(task(await getRun(waitingRun), "charge").pendingReason, busyReason);

    // Cancelled runs: their tasks answer with their state, once ended, from storage.
    await client.cancelRun({ runId: runA, reason: "test over" });
    await client.cancelRun({ runId: runB, reason: "test over" });
    const ended = await explainUntil(
      "cancelled and forgotten",
      runA,
      "charge",
      (r) => r.runStatus === RunStatus.CANCELLED && !scheduler.engine.isActive(runA),
    );
    assert.equal(ended.status, TaskStatus.CANCELLED);
    assert.deepEqual(ended.gates, []);
    const done = await client.explainPending({ runId: runA, stepId: "first" });
    assert.equal(done.status, TaskStatus.SUCCEEDED);
    assert.deepEqual(done.gates, []);
  });

  it("refuses bad input with the right code, naming the field or the step", async () => {
    const field = async (req: Parameters<WorkflowClient["explainPending"]>[0], name: string) => {
      const err = await rejection(client.explainPending(req));
      assert.equal(err.code, Code.InvalidArgument, err.message);
      const violations = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
      assert.deepEqual(
        violations.map((v) => v.field),
        [name],
        err.message,
      );
    };
    await field({ runId: "", stepId: "charge" }, "run_id");
    await field({ runId: "not-a-run", stepId: "charge" }, "run_id");
    const { run } = await client.startRun({ workflowName: "xp-order", input: jsonToValue({}) });
    assert.ok(run);
    await field({ runId: run.id, stepId: "" }, "step_id");
    await field({ runId: run.id, stepId: "x".repeat(1025) }, "step_id");

    const missingRun = await rejection(
      client.explainPending({ runId: "00000000-0000-4000-8000-000000000000", stepId: "charge" }),
    );
    assert.equal(missingRun.code, Code.NotFound);
    assert.match(missingRun.message, /00000000-0000-4000-8000-000000000000/);
    const missingStep = await rejection(client.explainPending({ runId: run.id, stepId: "refund" }));
    assert.equal(missingStep.code, Code.NotFound);
    assert.match(missingStep.message, /no step "refund"/);
    const noUndo = await rejection(
      client.explainPending({ runId: run.id, stepId: "charge", compensation: true }),
    );
    assert.equal(noUndo.code, Code.NotFound);
    assert.match(noUndo.message, /step "charge" .* has no compensation task/);
    await client.cancelRun({ runId: run.id, reason: "test over" });
    // Ended (answered from storage): still NOT_FOUND for a step the run does not have.
    await waitFor("the run to leave memory", () => !scheduler.engine.isActive(run.id));
    const afterEnd = await rejection(client.explainPending({ runId: run.id, stepId: "refund" }));
    assert.equal(afterEnd.code, Code.NotFound);
    assert.match(afterEnd.message, /no step "refund"/);
  });
});
