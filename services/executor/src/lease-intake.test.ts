import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { createLogger } from "@nexusflow/common";
import { type Lease, type LeaseKey, LeaseSchema } from "@nexusflow/gen";
import { LeaseIntake, type LeaseIntakeOptions } from "./lease-intake.js";
import { MemoryLogSink } from "./log-sink.js";
import { type Link, newLink } from "./replica-links.js";
import { ReplicaRouting } from "./replica-routing.js";
import { TaskAttempt } from "./task-attempt.js";

const logger = createLogger("test", "silent");
/** Never connected: grpc-js clients connect on first use, and nothing here sends. */
const client = new grpc.Client("127.0.0.1:1", grpc.credentials.createInsecure());

function lease(n: number): Lease & { key: LeaseKey } {
  const value = create(LeaseSchema, {
    key: { taskRunId: `task-run-${n}`, attempt: 1, fencingToken: BigInt(n) },
    runId: `run-${n}`,
    taskType: "noop",
  });
  return value as Lease & { key: LeaseKey };
}

/** Attempts that are made, never run: the intake only starts them and keeps their slots. */
class FakeTasks {
  readonly running = new Map<string, TaskAttempt>();
  get size(): number {
    return this.running.size;
  }
  get(key: LeaseKey): TaskAttempt | undefined {
    return [...this.running.values()].find((a) => a.key.taskRunId === key.taskRunId);
  }
  start(l: Lease & { key: LeaseKey }): TaskAttempt {
    const attempt = new TaskAttempt(l, {
      logSink: new MemoryLogSink(),
      logger: () => logger,
      maxPayloadBytes: 1024,
      sendHeartbeat: () => {},
    });
    this.running.set(attempt.id, attempt);
    return attempt;
  }
}

/** An intake over one (detached) session, with what it did in view. */
function setup(slots = 2): {
  intake: LeaseIntake;
  link: Link;
  routing: ReplicaRouting;
  tasks: FakeTasks;
  turn: { started: TaskAttempt[]; freed: number };
  control: { stopping: string | undefined; takesWork: boolean };
} {
  const routing = new ReplicaRouting({ discovering: () => false, askSoon: () => {} });
  const link = newLink("primary", true, "127.0.0.1:1", client, new AbortController());
  routing.add(link);
  const tasks = new FakeTasks();
  const turn = { started: [] as TaskAttempt[], freed: 0 };
  const control = { stopping: undefined as string | undefined, takesWork: true };
  const options: LeaseIntakeOptions = {
    logger,
    slots,
    tasks,
    routing,
    turn: { started: (a) => turn.started.push(a), slotFreed: () => turn.freed++ },
    refusing: () => control.stopping,
    takesWork: () => control.takesWork,
  };
  return { intake: new LeaseIntake(options), link, routing, tasks, turn, control };
}

/** The reports queued on `link` (no session: nothing went out), as "case task-run reason". */
function queued(link: Link): string[] {
  const out: string[] = [];
  link.ledger.resend((r) => {
    out.push(
      `${r.case} ${r.value.key?.taskRunId ?? "?"} ${r.case === "release" ? r.value.reason : ""}`.trim(),
    );
    return true;
  });
  link.ledger.detach(); // as if that session had ended: they are queued again
  return out;
}

describe("LeaseIntake", () => {
  after(() => client.close());

  it("starts a lease's task, spending a credit of its session, its reports routed from that session", () => {
    const { intake, link, routing, turn } = setup();
    link.credit = 2;
    const outcome = intake.take(link, lease(1));
    assert.equal(outcome.t, "started");
    const attempt = outcome.t === "started" ? outcome.attempt : undefined;
    assert.ok(attempt !== undefined);
    assert.deepEqual([link.credit, link.running], [1, 1]);
    assert.equal(routing.routes.get(attempt.id)?.origin, link);
    assert.equal(routing.routes.get(attempt.id)?.runId, "run-1");
    assert.deepEqual(turn.started, [attempt], "its Started goes at the end of the turn");
  });

  it("ignores a lease it holds: its task running, or its report awaiting acknowledgement", () => {
    const { intake, link, tasks, control } = setup();
    intake.take(link, lease(1));
    assert.deepEqual(intake.take(link, lease(1)), { t: "ignored", why: "duplicate" });
    assert.equal(tasks.size, 1, "not run twice");

    control.stopping = "SIGTERM";
    assert.equal(intake.take(link, lease(2)).t, "released");
    control.stopping = undefined;
    assert.deepEqual(
      intake.take(link, lease(2)),
      { t: "ignored", why: "duplicate" },
      "its Release is not delivered yet",
    );
    assert.equal(tasks.size, 1);
    assert.deepEqual(queued(link), ["release task-run-2 executor draining (SIGTERM)"]);
  });

  it("releases a lease beyond its slots, and every lease while the executor drains, saying why", () => {
    const { intake, link, tasks, control } = setup(1);
    assert.equal(intake.take(link, lease(1)).t, "started");
    assert.deepEqual(intake.take(link, lease(2)), { t: "released", reason: "no free slot" });
    control.stopping = "stop";
    assert.deepEqual(intake.take(link, lease(3)), { t: "released", reason: "executor draining (stop)" });
    assert.equal(tasks.size, 1);
    assert.deepEqual(queued(link), [
      "release task-run-2 no free slot",
      "release task-run-3 executor draining (stop)",
    ]);
  });

  it("ignores a lease without a key, which still spends a credit", () => {
    const { intake, link, tasks } = setup();
    link.credit = 1;
    const keyless = create(LeaseSchema, { runId: "run-1", taskType: "noop" });
    assert.deepEqual(intake.take(link, keyless), { t: "ignored", why: "no key" });
    assert.deepEqual([link.credit, tasks.size, queued(link).length], [0, 0, 0]);
  });

  it("frees an ended attempt's slot once, counted for a grant only while the executor takes work", () => {
    const { intake, link, routing, tasks, turn, control } = setup();
    const [a, b] = [intake.take(link, lease(1)), intake.take(link, lease(2))];
    assert.ok(a.t === "started" && b.t === "started");
    tasks.running.delete(a.attempt.id);
    intake.free(a.attempt);
    intake.free(a.attempt);
    assert.deepEqual([link.running, turn.freed, routing.routes.has(a.attempt.id)], [1, 1, false]);

    control.takesWork = false; // detached or draining: the next AttachAck grants every free slot
    tasks.running.delete(b.attempt.id);
    intake.free(b.attempt);
    assert.deepEqual([link.running, turn.freed], [0, 1]);
  });
});
