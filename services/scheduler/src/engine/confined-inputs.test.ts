/**
 * Faults (throws) in the rules of runs reached otherwise than by a report, a timer or a call that
 * starts or cancels a run, through a whole Engine on the in-memory stores, each confined to the
 * run whose rules threw (faults.ts): an offloaded output read back (a promise's callback: never an
 * unhandled rejection), a signal (the call answers INTERNAL), an event applied to its waits, a
 * session's end and an executor's attach (each run of the session's leases on its own: the
 * others are handled), and a run's start before the run is in memory (nothing of it committed).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { ApiError, Code, createLogger } from "@nexusflow/common";
import { attemptPrefix } from "@nexusflow/common/artifacts";
import { waitFor } from "@nexusflow/common/testing";
import type { Lease, LeaseKey, SessionResponse } from "@nexusflow/gen";
import type { Core } from "../core/index.js";
import { ACTIVE_LEASE, TERMINAL_RUN_STATUSES, type RunState, type TaskState } from "../model/run-state.js";
import { MemoryDefinitionStore } from "../persistence/memory-definition-store.js";
import { MemoryEngineStore } from "../persistence/memory-engine-store.js";
import { Definitions } from "./definitions.js";
import type { SessionHandle } from "./dispatcher.js";
import { Engine } from "./engine.js";
import { throwOnce } from "../core/fault-injection.js";

/** A session that holds every lease it gets (no reports but the test's), by run id. */
class Holder implements SessionHandle {
  readonly types: ReadonlySet<string>;
  credit = 0;
  readonly leases = new Set<string>();
  draining = false;
  lastSeen = performance.now();
  readonly held = new Map<string, Lease>();

  constructor(
    readonly id: string,
    readonly executorId: string,
    type: string,
  ) {
    this.types = new Set([type]);
  }

  send(message: SessionResponse): void {
    if (message.message.case === "lease") this.held.set(message.message.value.runId, message.message.value);
  }

  close(): void {}
}

/** A proxy that throws `message` whenever it is read: a run's evaluation, so advancing it throws. */
const broken = (message: string): NonNullable<RunState["evaluation"]> =>
  new Proxy({} as NonNullable<RunState["evaluation"]>, {
    get: () => {
      throw new Error(message);
    },
  });

describe("faults in rules reached outside reports, timers and run calls, through an Engine", () => {
  const lines: { level: number; msg: string; run_id?: string; err?: { message?: string } }[] = [];
  const log = createLogger("confined-inputs", "error", {
    destination: { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[0]) },
  });
  /** Offloaded outputs asked for; `answer` settles a read with what `fn` returns or throws. */
  const reads: { ref: unknown; answer: (fn: () => unknown) => void }[] = [];
  const store = new MemoryEngineStore();
  const engine = new Engine({
    store,
    definitions: new Definitions(new MemoryDefinitionStore(), log),
    log,
    resolveOutput: (ref) =>
      new Promise<() => unknown>((answer) => reads.push({ ref, answer })).then((fn) => fn()),
  });
  const engineCore = (engine as unknown as { core: Core }).core;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
  const live = (runId: string): RunState => engine.activeRun(runId) as RunState;
  const taskOf = (runId: string, stepId: string): TaskState => live(runId).tasks.get(stepId) as TaskState;

  before(async () => {
    process.on("unhandledRejection", onUnhandled);
    await engine.start();
    const define = (name: string, steps: unknown[]) =>
      engine.definitions.register({ name, version: 1, steps });
    await define("c-out", [
      { id: "a", type: "c.out" },
      { id: "b", type: "c.out", dependsOn: ["a"] },
    ]);
    await define("c-signal", [{ id: "w", wait: { signal: "go" } }]);
    await define("c-event", [{ id: "e", wait: { event: "c.paid" } }]);
    await define("c-detach", [{ id: "only", type: "c.detach" }]);
    await define("c-attach", [{ id: "only", type: "c.attach" }]);
    await define("c-two", [
      { id: "x", type: "c.two" },
      { id: "y", type: "c.two" },
    ]);
  });

  after(async () => {
    await engine.stop();
    process.off("unhandledRejection", onUnhandled);
  });

  const start = (workflowName: string) =>
    engine.startRun({ workflowName, workflowVersion: 1, input: {}, idempotencyKey: "", labels: {} });

  /** The run's row once it is terminal in storage. */
  const stored = async (runId: string) => {
    await waitFor(
      `run ${runId} ended in storage`,
      () => TERMINAL_RUN_STATUSES.has(store.read().runs.get(runId)?.status ?? "PENDING"),
      5000,
    );
    await engine.whenCommitted();
    return store.read().runs.get(runId);
  };

  /** The run failed SCHEDULER_ERROR for `fault`, logged at error level with its id. */
  const assertFaulted = async (runId: string, fault: RegExp): Promise<void> => {
    const run = await stored(runId);
    assert.equal(run?.status, "FAILED");
    assert.equal(run?.error?.type, "SCHEDULER_ERROR");
    assert.match(run?.error?.message ?? "", fault);
    assert.ok(
      lines.some((l) => l.level === 50 && l.run_id === runId && fault.test(l.err?.message ?? "")),
      JSON.stringify(lines),
    );
  };

  /** The call's error: INTERNAL, naming SCHEDULER_ERROR and `fault`. */
  const internal = (fault: RegExp) => (e: unknown) => {
    assert.ok(e instanceof ApiError, String(e));
    assert.equal(e.code, Code.INTERNAL);
    assert.match(e.message, /SCHEDULER_ERROR/);
    assert.match(e.message, fault);
    return true;
  };

  /** A run of `c-out` whose step a completed with an offloaded output, its read asked for. */
  const offloaded = async () => {
    const { runId } = await start("c-out");
    const lease = await waitFor("a leased", () => outputs.held.get(runId));
    const key = lease.key as LeaseKey;
    const ref = { key: `${attemptPrefix(runId, "a", key.attempt)}output.json` };
    assert.equal(engine.onCompleted(outputs, key, null, ref, null), null);
    const read = reads.find((r) => r.ref === ref);
    assert.ok(read, "its output is read back");
    return { runId, task: taskOf(runId, "a"), read };
  };
  const outputs = new Holder("outputs-session", "outputs-executor", "c.out");

  it("fails the run whose rules fault once its offloaded output is read, with no unhandled rejection", async () => {
    assert.deepEqual(engine.attach(outputs, []), []);
    assert.equal(engine.onCredit(outputs, 10), null);
    const { runId, task, read } = await offloaded();
    let armed = false;
    throwOnce(task, "resolvedOutput", "set", () => armed, "injected output fault");
    read.answer(() => {
      armed = true;
      return { v: 1 };
    });
    await assertFaulted(runId, /injected output fault/);
    assert.deepEqual(unhandled, []);
  });

  it("fails the run whose rules fault once its offloaded output cannot be read, with no unhandled rejection", async () => {
    const { runId, task, read } = await offloaded();
    let armed = false;
    throwOnce(task, "status", "get", () => armed, "injected unavailable fault");
    read.answer(() => {
      armed = true;
      throw new Error("the object is gone");
    });
    await assertFaulted(runId, /injected unavailable fault/);
    assert.deepEqual(unhandled, []);
  });

  it("answers SignalRun INTERNAL when the signal's rules fault: the run fails SCHEDULER_ERROR", async () => {
    const { runId } = await start("c-signal");
    assert.equal(taskOf(runId, "w").status, "WAITING");
    live(runId).evaluation = broken("injected signal fault");
    await assert.rejects(
      engine.waits.signal(runId, { name: "go", key: null, payload: 1 }),
      internal(/injected signal fault/),
    );
    await assertFaulted(runId, /injected signal fault/);
  });

  it("fails the run whose rules fault as an event ends its wait; the event's other runs take it", async () => {
    const a = (await start("c-event")).runId;
    const b = (await start("c-event")).runId;
    const matches = await engine.waits.matchEvent({ key: "c.paid", payload: {} });
    const ordered = [a, b].map((id) => {
      const match = matches.find((m) => m.runId === id);
      assert.ok(match, `run ${id}'s wait matched`);
      return match;
    });
    live(a).evaluation = broken("injected event fault");
    const event = { eventId: randomUUID(), key: "c.paid", payload: {}, publishTime: new Date() };
    const outcomes = await engine.waits.applyEvent(event, ordered);
    // a's wait took the event, and then its run's rules faulted (evaluating it).
    assert.deepEqual(outcomes, ["applied", "applied"]);
    await assertFaulted(a, /injected event fault/);
    assert.equal((await stored(b))?.status, "SUCCEEDED");
    const waits = [...store.read().tasks.values()].filter((t) => t.runId === a || t.runId === b);
    assert.deepEqual(
      waits.map((t) => [t.runId, t.status, (t.output as { eventId?: unknown } | null)?.eventId]),
      [
        [a, "SUCCEEDED", event.eventId],
        [b, "SUCCEEDED", event.eventId],
      ],
    );
  });

  it("fails the run whose rules fault as its session ends; the session's other leases wait all the same", async () => {
    const session = new Holder("detach-session", "detach-executor", "c.detach");
    assert.deepEqual(engine.attach(session, []), []);
    assert.equal(engine.onCredit(session, 10), null);
    const runs = [(await start("c-detach")).runId, (await start("c-detach")).runId];
    await waitFor("both leased", () => runs.every((id) => session.held.has(id)));
    // The first lease the session's end handles faults.
    const [first, second] = [...session.leases].map((id) => engineCore.tasks.get(id) as TaskState);
    assert.ok(first !== undefined && second !== undefined);
    throwOnce(first, "sessionId", "set", () => true, "injected session end fault");
    engine.detachSession(session);
    assert.equal(engine.sessions().includes(session), false);
    await assertFaulted(first.runId, /injected session end fault/);
    assert.equal(second.sessionId, null, "its grace started");
    assert.ok(ACTIVE_LEASE.has(second.status), "its lease waits for its executor");
    assert.equal(live(second.runId).status, "RUNNING");
  });

  it("fails the runs whose rules fault as their executor attaches again; its other leases are handled", async () => {
    const before = new Holder("attach-before", "attach-executor", "c.attach");
    assert.deepEqual(engine.attach(before, []), []);
    assert.equal(engine.onCredit(before, 10), null);
    const runs: string[] = [];
    for (let i = 0; i < 4; i++) runs.push((await start("c-attach")).runId);
    await waitFor("all leased", () => runs.every((id) => before.held.has(id)));
    const [a, b, c, d] = runs.map((id) => taskOf(id, "only"));
    assert.ok(a !== undefined && b !== undefined && c !== undefined && d !== undefined);
    const keyOf = (t: TaskState): LeaseKey => before.held.get(t.runId)?.key as LeaseKey;
    // a's reclaim faults, and so does c's expiry (it is not listed): b is reclaimed, d expires.
    throwOnce(a, "sessionId", "set", () => true, "injected reclaim fault");
    throwOnce(c, "failures", "set", () => true, "injected expiry fault");
    const again = new Holder("attach-again", "attach-executor", "c.attach");
    const revoked = engine.attach(again, [keyOf(a), keyOf(b)]);
    assert.deepEqual(
      revoked.map((k) => k.taskRunId),
      [a.id],
      "a's lease is revoked",
    );
    assert.equal(b.sessionId, again.id, "b's lease is the new session's");
    assert.ok(ACTIVE_LEASE.has(b.status));
    await assertFaulted(a.runId, /injected reclaim fault/);
    await assertFaulted(c.runId, /injected expiry fault/);
    await waitFor("d's attempt expired", () =>
      store.read().attempts.some((x) => x.taskRunId === d.id && x.error?.type === "LEASE_EXPIRED"),
    );
    assert.equal(live(d.runId).status, "RUNNING", "d is retried");
    assert.equal(engine.sessions().includes(before), false, "the earlier session is superseded");
  });

  it("leaves nothing of a run whose start faults before it is in memory: no task kept, none committed", async () => {
    // The third id asked for once armed (the run's, x's task's, y's task's) cannot be made.
    let armed = false;
    const ids: string[] = [];
    const partitions = engine.partitions as { newId(): string };
    const newId = partitions.newId.bind(partitions);
    Object.defineProperty(partitions, "newId", {
      configurable: true,
      value: (): string => {
        if (armed && ids.length === 2) throw new Error("injected task fault");
        const id = newId();
        if (armed) ids.push(id);
        return id;
      },
    });
    armed = true;
    try {
      await assert.rejects(start("c-two"), internal(/the run did not start: .*injected task fault/));
    } finally {
      armed = false;
      delete (partitions as { newId?: unknown }).newId;
    }
    const [runId = ""] = ids;
    assert.notEqual(runId, "");
    await engine.whenCommitted();
    assert.equal(engine.isActive(runId), false);
    assert.deepEqual(
      [...engineCore.tasks.values()].filter((t) => t.runId === runId).map((t) => t.stepId),
      [],
      "no task kept in memory",
    );
    const rows = store.read();
    assert.equal(rows.runs.has(runId), false);
    assert.deepEqual(
      [...rows.tasks.values()].filter((t) => t.runId === runId).map((t) => t.stepId),
      [],
      "no task committed",
    );
    assert.ok(
      lines.some((l) => l.level === 50 && l.err?.message === "injected task fault"),
      JSON.stringify(lines),
    );
    // The process goes on.
    const { runId: next } = await start("c-two");
    assert.equal(live(next).tasks.size, 2);
  });
});
