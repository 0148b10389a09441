/**
 * faultConfinement: a throw out of the rules applied to a run fails that run instead of escaping;
 * a run too broken to be failed the usual way is dropped (taken out of memory, ended in storage).
 * Through a whole Engine on the in-memory stores: a fault in the rules of a run reached from
 * another run's (a child's end runs its parent's, a parent's cancel its child's) fails the run
 * whose rules threw, not the one that reached them; a fault that strikes a run's end after its
 * status is set leaves that end recorded; a dropped run's changes not committed are discarded; a
 * fault in a child's start once its definition is read is the child's; StartRun and CancelRun
 * answer INTERNAL for a fault in the run's rules (and StartRun for a run dropped before its first
 * commit), the run failed SCHEDULER_ERROR.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ApiError, Code, createLogger, valueToJson } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";
import type { Lease, LeaseKey, SessionResponse } from "@nexusflow/gen";
import { childRunId, type Core } from "../core/index.js";
import { TERMINAL_RUN_STATUSES, type ErrorInfo, type RunState } from "../model/run-state.js";
import { MemoryDefinitionStore } from "../persistence/memory-definition-store.js";
import { MemoryEngineStore } from "../persistence/memory-engine-store.js";
import type { RefusedRunOutcome } from "../persistence/engine-store.js";
import type { OutboxRow } from "../persistence/outbox.js";
import { Definitions } from "./definitions.js";
import type { SessionHandle } from "./dispatcher.js";
import { Engine } from "./engine.js";
import { faultConfinement } from "./faults.js";
import { throwOnce } from "../core/fault-injection.js";

const log = createLogger("faults-test", "silent");

describe("faultConfinement", () => {
  const dropped: { runId: string; cause: string; error: ErrorInfo }[] = [];
  const confine = faultConfinement({
    log,
    core: () => ({ runs: new Map(), tasks: new Map() }) as unknown as Core,
    drop: (runId, cause, error) => dropped.push({ runId, cause: cause.message, error }),
  });

  it("returns what the rules return when they do not throw", () => {
    assert.equal(
      confine(undefined, () => 42),
      42,
    );
    assert.deepEqual(dropped, []);
  });

  it("logs a fault without a run (a rate limit's timer) and goes on", () => {
    assert.equal(
      confine(undefined, () => {
        throw new Error("bucket fault");
      }),
      undefined,
    );
    assert.deepEqual(dropped, []);
  });

  it("drops a run that cannot even be failed, with SCHEDULER_ERROR and the fault's message", () => {
    // A run whose tasks cannot be read: failing it (cancelling its tasks) throws too.
    const run = {
      id: "run-1",
      status: "RUNNING",
      get tasks(): never {
        throw new Error("tasks unreadable");
      },
    } as unknown as RunState;
    const out = confine(run, () => {
      throw new Error("x".repeat(5000));
    });
    assert.equal(out, undefined);
    assert.equal(dropped.length, 1);
    const [d] = dropped;
    assert.equal(d?.runId, "run-1");
    assert.equal(d?.cause, "tasks unreadable");
    assert.equal(d?.error.type, "SCHEDULER_ERROR");
    assert.equal(d?.error.retryable, false);
    assert.match(d?.error.message ?? "", /^the scheduler could not advance the run: x+/);
    assert.ok((d?.error.message.length ?? 0) < 1100, "the fault's message is cut");
  });
});

/** What the executor does with a lease: completes it, fails it for good, or holds it (no report). */
type Handling = "complete" | "fail" | "hold";

/** An executor session in process (protocol version 1): Started, then Completed or Failed unless held. */
class Executor implements SessionHandle {
  readonly id = "faults-session";
  readonly executorId = "faults-executor";
  readonly types = new Set(["f.work"]);
  credit = 0;
  readonly leases = new Set<string>();
  draining = false;
  lastSeen = performance.now();

  constructor(
    private readonly engine: Engine,
    private readonly handle: (lease: Lease, input: Record<string, unknown>) => Handling,
  ) {}

  send(message: SessionResponse): void {
    if (message.message.case !== "lease") return;
    const lease = message.message.value;
    // The executor answers on a later turn, as one over the network does.
    setImmediate(() => {
      this.engine.onStarted(this, lease.key);
      const input = (lease.input === undefined ? null : valueToJson(lease.input)) as Record<string, unknown>;
      const handling = this.handle(lease, input ?? {});
      if (handling === "hold") return;
      if (handling === "complete")
        this.engine.onCompleted(this, lease.key, { step: lease.stepId }, null, null);
      else
        this.engine.onFailed(this, lease.key, { type: "BROKE", message: "broke", retryable: false }, 0, null);
      this.engine.onCredit(this, 1);
    });
  }

  close(): void {}
}

/**
 * The in-memory store, whose commits can be held in flight (their changes taken, as a database's
 * statement has encoded them, and not written yet) until released.
 */
class HeldStore extends MemoryEngineStore {
  private gate: { promise: Promise<void>; open: () => void } | undefined;
  /** Events taken by commits held in flight. */
  readonly taken: OutboxRow[] = [];
  /** Whether a commit is held in flight now. */
  holding = false;
  /** Called with each run as it is marked: a test's way to a run as it starts. */
  onMark: ((run: RunState) => void) | undefined;

  override markRun(run: RunState): void {
    this.onMark?.(run);
    super.markRun(run);
  }

  /** The next commit is held in flight until {@link release}. */
  hold(): void {
    let open = (): void => undefined;
    const promise = new Promise<void>((resolve) => (open = resolve));
    this.gate = { promise, open };
  }

  release(): void {
    this.gate?.open();
    this.gate = undefined;
  }

  protected override async drain(): Promise<void> {
    const gate = this.gate;
    if (gate === undefined) return super.drain();
    const { runs, tasks, attempts, events } = this.takeChanges();
    this.taken.push(...events);
    this.holding = true;
    await gate.promise;
    this.holding = false;
    // Written as they were taken (copies), whatever became of them meanwhile.
    for (const r of runs.values()) this.markRun({ ...r });
    for (const t of tasks.values()) this.markTask({ ...t });
    for (const a of attempts.values()) this.markAttempt({ ...a });
    for (const e of events) this.addEvent(e);
    return super.drain();
  }
}

/** Makes the method `name` of `obj` throw `message` once, the first time it is called while `when()` holds. */
function breakOnce<T extends object>(
  obj: T,
  name: keyof T & string,
  when: () => boolean,
  message: string,
): void {
  const method = obj[name] as (...args: unknown[]) => unknown;
  let thrown = false;
  Object.defineProperty(obj, name, {
    configurable: true,
    value: (...args: unknown[]): unknown => {
      if (!thrown && when()) {
        thrown = true;
        throw new Error(message);
      }
      return method.apply(obj, args);
    },
  });
}

describe("faults through an Engine on the in-memory stores", () => {
  const lines: { level: number; msg: string; run_id?: string; err?: { message?: string } }[] = [];
  const engineLog = createLogger("faults-engine", "error", {
    destination: { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[0]) },
  });
  const store = new HeldStore();
  const engine = new Engine({
    store,
    definitions: new Definitions(new MemoryDefinitionStore(), engineLog),
    log: engineLog,
  });
  const live = (runId: string): RunState => engine.activeRun(runId) as RunState;
  const ended = (run: RunState) => () => TERMINAL_RUN_STATUSES.has(run.status);
  /** Advancing the run throws, and so does failing it once its end is marked (freeing its slots). */
  const breakRun = (run: RunState, message: string): void => {
    run.evaluation = new Proxy({} as NonNullable<RunState["evaluation"]>, {
      get: () => {
        throw new Error(message);
      },
    });
    throwOnce(run.claim as NonNullable<RunState["claim"]>, "state", "get", ended(run), "injected drop fault");
  };
  /** A proxy that throws `message` whenever it is read: the run's evaluation, so advancing it throws. */
  const broken = (message: string): NonNullable<RunState["evaluation"]> =>
    new Proxy({} as NonNullable<RunState["evaluation"]>, {
      get: () => {
        throw new Error(message);
      },
    });
  /** Faults injected in a run as it is first marked, by its input's `inject`. */
  const marked = new Set<string>();
  store.onMark = (run) => {
    if (marked.has(run.id)) return;
    marked.add(run.id);
    switch ((run.input as { inject?: unknown } | null)?.inject) {
      case "start":
        // A bug in the run's first evaluation, as StartRun starts it.
        run.evaluation = broken("injected start fault");
        break;
      case "rerun":
        // A bug in a rerun's first evaluation, as RerunRun starts it (its original runs well).
        if (run.rerun !== undefined) run.evaluation = broken("injected rerun fault");
        break;
      case "childstart":
        // A bug in the child's first evaluation, as its parent's step starts it.
        if (run.parent !== null) run.evaluation = broken("injected child start fault");
        break;
      case "dropstart": {
        // A bug in granting its first lease (before its first commit), and in failing it then.
        const task = run.tasks.get("work") as NonNullable<ReturnType<typeof run.tasks.get>>;
        let struck = false;
        throwOnce(task, "fencingToken", "set", () => (struck = true), "injected grant fault");
        breakOnce(run.tasks, "values", () => struck, "injected drop fault");
        break;
      }
    }
  };
  /** Leases held by the executor, by run id and step id. */
  const held = new Map<string, LeaseKey>();
  const executor = new Executor(engine, (lease, input) => {
    const run = live(lease.runId);
    switch (input["inject"]) {
      case "parent": {
        // A bug in the parent's rules that the child's end runs: reading the parent's steps.
        const parent = live(run.parent?.runId ?? "");
        throwOnce(parent, "workflow", "get", ended(run), "injected parent fault");
        return "complete";
      }
      case "cancel":
        // A bug in the child's rules that its parent's cancel runs: marking it cancelled.
        throwOnce(run, "cancelRequested", "set", () => true, "injected child cancel fault");
        return "hold";
      case "release":
        // A bug in freeing the run's concurrency slots, once its status is set (completeRun).
        throwOnce(
          run.claim as NonNullable<RunState["claim"]>,
          "state",
          "get",
          ended(run),
          "injected release fault",
        );
        return "complete";
      case "drop":
        breakRun(run, "injected advance fault");
        return "complete";
      case "unended":
        breakRun(run, "injected unended fault");
        return "complete";
      case "compensate": {
        if (lease.stepId === "a") return "complete";
        // A bug in starting the rollback once the run is written COMPENSATING, and in failing it
        // before it ends (reading its compensations): the run is dropped.
        const rolling = (): boolean => run.status === "COMPENSATING";
        breakOnce(run.compensations, "has", rolling, "injected rollback fault");
        breakOnce(run.compensations, "values", rolling, "injected fail fault");
        return "fail";
      }
      case "inflight":
        // x's report is committed in flight (held) when y's breaks the run.
        if (lease.stepId === "x") {
          store.hold();
          return "complete";
        }
        held.set(`${lease.runId}/${lease.stepId}`, lease.key as LeaseKey);
        return "hold";
      default:
        return "complete";
    }
  });

  before(async () => {
    await engine.start();
    const work = { type: "f.work", input: { inject: "{{ input.inject }}" } };
    await engine.definitions.register({ name: "f-child", version: 1, steps: [{ id: "work", ...work }] });
    await engine.definitions.register({
      name: "f-parent",
      version: 1,
      steps: [
        { id: "c", workflow: { name: "f-child", version: 1, input: { inject: "{{ input.inject }}" } } },
        { id: "next", type: "f.work", dependsOn: ["c"] },
      ],
    });
    await engine.definitions.register({
      name: "f-keyed",
      version: 1,
      concurrency: [{ key: "input.key", limit: 1 }],
      steps: [{ id: "only", ...work }],
    });
    await engine.definitions.register({
      name: "f-saga",
      version: 1,
      steps: [
        { id: "a", ...work, compensate: { type: "f.work" } },
        { id: "b", ...work, dependsOn: ["a"] },
      ],
    });
    await engine.definitions.register({
      name: "f-pair",
      version: 1,
      concurrency: [{ key: "input.key", limit: 1 }],
      steps: [
        { id: "x", ...work },
        { id: "y", ...work },
      ],
    });
    assert.deepEqual(engine.attach(executor, []), []);
    assert.equal(engine.onCredit(executor, 10), null);
  });

  after(() => {
    store.release();
    return engine.stop();
  });

  const start = (workflowName: string, input: Record<string, unknown>) =>
    engine.startRun({ workflowName, workflowVersion: 1, input, idempotencyKey: "", labels: {} });

  /** The run's rows and events as stored, once its stored row is terminal. */
  const stored = async (runId: string, timeoutMs?: number) => {
    await waitFor(
      `run ${runId} ended in storage`,
      () => TERMINAL_RUN_STATUSES.has(store.read().runs.get(runId)?.status ?? "PENDING"),
      timeoutMs,
    );
    await engine.whenCommitted();
    const rows = store.read();
    const events = rows.events.filter((e) => e.runId === runId);
    return {
      run: rows.runs.get(runId),
      tasks: new Map([...rows.tasks.values()].filter((t) => t.runId === runId).map((t) => [t.stepId, t])),
      types: events.map((e) => e.type),
      sequences: events.map((e) => e.sequence),
    };
  };

  /** Its events number 1, 2, 3, ... and end with its one runCompleted. */
  const assertOneEnd = (s: { types: string[]; sequences: number[] }): void => {
    const described = `${s.types.join(" ")} (${s.sequences.join(" ")})`;
    assert.deepEqual(
      s.types.filter((t) => t === "runCompleted"),
      ["runCompleted"],
      described,
    );
    assert.equal(s.types.at(-1), "runCompleted", described);
    assert.deepEqual(
      s.sequences,
      s.sequences.map((_, i) => i + 1),
      `one event per sequence number, none missing: ${described}`,
    );
  };

  /** The run failed SCHEDULER_ERROR for `fault`, and was dropped (out of memory, ended in storage). */
  const assertDropped = (runId: string, s: Awaited<ReturnType<typeof stored>>, fault: RegExp): void => {
    assert.equal(s.run?.status, "FAILED");
    assert.equal(s.run?.error?.type, "SCHEDULER_ERROR");
    assert.match(s.run?.error?.message ?? "", fault);
    assertOneEnd(s);
    assert.equal(engine.isActive(runId), false);
    assert.ok(
      lines.some((l) => l.run_id === runId && /leaves memory/.test(l.msg)),
      "it was dropped",
    );
  };

  it("fails the parent, not the child, when the child's end faults in the parent's rules", async () => {
    const { runId } = await start("f-parent", { inject: "parent" });
    const childId = childRunId(runId, "c");
    const parent = await stored(runId, 5000);
    assert.equal(parent.run?.status, "FAILED");
    assert.equal(parent.run?.error?.type, "SCHEDULER_ERROR");
    assert.match(parent.run?.error?.message ?? "", /injected parent fault/);
    assert.equal(parent.tasks.get("c")?.status, "CANCELLED");
    assertOneEnd(parent);
    const child = await stored(childId);
    assert.equal(child.run?.status, "SUCCEEDED");
    assert.equal(child.tasks.get("work")?.status, "SUCCEEDED");
    assertOneEnd(child);
    // Logged at error level with the run whose rules threw.
    assert.ok(
      lines.some((l) => l.level === 50 && l.run_id === runId && l.err?.message === "injected parent fault"),
      JSON.stringify(lines),
    );
    assert.ok(!lines.some((l) => l.run_id === childId), "the child is not blamed");
    await waitFor("both runs out of memory", () => !engine.isActive(runId) && !engine.isActive(childId));
    // The process goes on.
    assert.equal((await stored((await start("f-child", { inject: "none" })).runId)).run?.status, "SUCCEEDED");
  });

  it("cancels the parent when cancelling its child faults in the child's rules: the child fails", async () => {
    const { runId } = await start("f-parent", { inject: "cancel" });
    const childId = childRunId(runId, "c");
    await waitFor(
      "the child's step running",
      () => engine.activeRun(childId)?.tasks.get("work")?.status === "RUNNING",
    );
    await engine.cancelRun(runId, "enough");
    const parent = await stored(runId);
    assert.equal(parent.run?.status, "CANCELLED");
    assertOneEnd(parent);
    const child = await stored(childId);
    assert.equal(child.run?.status, "FAILED");
    assert.equal(child.run?.error?.type, "SCHEDULER_ERROR");
    assert.match(child.run?.error?.message ?? "", /injected child cancel fault/);
    assert.equal(child.tasks.get("work")?.status, "CANCELLED");
    assertOneEnd(child);
  });

  it("records a run's end when freeing its concurrency slots faults after its status is set", async () => {
    const { runId } = await start("f-keyed", { key: "release", inject: "release" });
    const run = live(runId);
    await waitFor("the run ended in memory", () => TERMINAL_RUN_STATUSES.has(run.status));
    const s = await stored(runId, 5000);
    assert.equal(s.run?.status, "SUCCEEDED");
    assert.equal(s.tasks.get("only")?.status, "SUCCEEDED");
    assertOneEnd(s);
    await waitFor("the run out of memory", () => !engine.isActive(runId));
  });

  it("discards a dropped run's changes not committed: its failure's own runCompleted", async () => {
    const { runId } = await start("f-keyed", { key: "drop", inject: "drop" });
    assertDropped(runId, await stored(runId), /injected advance fault/);
  });

  it("discards a dropped run's changes not committed: its row written COMPENSATING", async () => {
    const { runId } = await start("f-saga", { inject: "compensate" });
    assertDropped(runId, await stored(runId), /injected rollback fault/);
  });

  it("ends a dropped run in storage after its commit in flight", async () => {
    const { runId } = await start("f-pair", { key: "inflight", inject: "inflight" });
    const run = live(runId);
    await waitFor("x's end in flight, y held", () =>
      store.taken.some((e) => e.message.runId === runId && e.message.event.case === "taskSucceeded")
        ? held.get(`${runId}/y`)
        : undefined,
    );
    breakRun(run, "injected in-flight fault");
    const y = held.get(`${runId}/y`) as LeaseKey;
    assert.equal(engine.onCompleted(executor, y, {}, null, null), null);
    await waitFor("the run dropped", () => !engine.isActive(runId));
    store.release();
    assertDropped(runId, await stored(runId), /injected in-flight fault/);
  });

  it("fails a child whose start faults in its own rules, not its parent: the parent's step fails CHILD_FAILED", async () => {
    const { runId } = await start("f-parent", { inject: "childstart" });
    const childId = childRunId(runId, "c");
    const child = await stored(childId, 5000);
    assert.equal(child.run?.status, "FAILED");
    assert.equal(child.run?.error?.type, "SCHEDULER_ERROR");
    assert.match(child.run?.error?.message ?? "", /injected child start fault/);
    assertOneEnd(child);
    const parent = await stored(runId);
    assert.equal(parent.run?.status, "FAILED");
    assert.notEqual(parent.run?.error?.type, "SCHEDULER_ERROR", "the parent is not blamed");
    assert.equal(parent.tasks.get("c")?.status, "FAILED");
    assert.equal(parent.tasks.get("c")?.error?.type, "CHILD_FAILED");
    assert.match(
      parent.tasks.get("c")?.error?.message ?? "",
      /SCHEDULER_ERROR: .*injected child start fault/,
    );
    assertOneEnd(parent);
    assert.ok(
      lines.some(
        (l) => l.level === 50 && l.run_id === childId && l.err?.message === "injected child start fault",
      ),
      JSON.stringify(lines),
    );
  });

  /** The call's error: INTERNAL, naming SCHEDULER_ERROR and `fault`. */
  const internal = (fault: RegExp) => (e: unknown) => {
    assert.ok(e instanceof ApiError, String(e));
    assert.equal(e.code, Code.INTERNAL);
    assert.match(e.message, /SCHEDULER_ERROR/);
    assert.match(e.message, fault);
    return true;
  };

  it("answers StartRun INTERNAL when starting the run faults: the run fails SCHEDULER_ERROR", async () => {
    let runId = "";
    const hook = store.onMark;
    store.onMark = (run) => {
      if ((run.input as { inject?: unknown } | null)?.inject === "start") runId ||= run.id;
      hook?.(run);
    };
    try {
      await assert.rejects(start("f-child", { inject: "start" }), internal(/injected start fault/));
    } finally {
      store.onMark = hook;
    }
    const s = await stored(runId);
    assert.equal(s.run?.status, "FAILED");
    assert.equal(s.run?.error?.type, "SCHEDULER_ERROR");
    assert.match(s.run?.error?.message ?? "", /injected start fault/);
    assert.equal(s.tasks.get("work")?.status, "CANCELLED");
    assertOneEnd(s);
    await waitFor("the run out of memory", () => !engine.isActive(runId));
  });

  it("answers RerunRun INTERNAL when starting the rerun faults: the rerun fails SCHEDULER_ERROR", async () => {
    const original = await stored((await start("f-child", { inject: "rerun" })).runId);
    assert.equal(original.run?.status, "SUCCEEDED");
    const rerun = engine.rerunRun({
      original: {
        id: original.run.id,
        definitionId: original.run.definitionId,
        workflowName: "f-child",
        input: original.run.input,
        labels: {},
      },
      steps: new Map(),
      fromStep: "work",
      stepInput: undefined,
      idempotencyKey: "",
    });
    await assert.rejects(rerun, internal(/injected rerun fault/));
    const rerunId = await waitFor(
      "the rerun stored",
      () => [...store.read().runs.values()].find((r) => r.rerun?.of === original.run?.id)?.id,
    );
    const s = await stored(rerunId);
    assert.equal(s.run?.status, "FAILED");
    assert.equal(s.run?.error?.type, "SCHEDULER_ERROR");
    assertOneEnd(s);
  });

  it("answers CancelRun INTERNAL when cancelling the run faults: the run fails SCHEDULER_ERROR", async () => {
    const { runId } = await start("f-child", { inject: "cancel" });
    await waitFor("its step running", () => engine.activeRun(runId)?.tasks.get("work")?.status === "RUNNING");
    await assert.rejects(engine.cancelRun(runId, "enough"), internal(/injected child cancel fault/));
    const s = await stored(runId);
    assert.equal(s.run?.status, "FAILED");
    assert.equal(s.run?.error?.type, "SCHEDULER_ERROR");
    assert.match(s.run?.error?.message ?? "", /injected child cancel fault/);
    assert.equal(s.tasks.get("work")?.status, "CANCELLED");
    assertOneEnd(s);
  });

  it("answers StartRun with an error for a run dropped before its first commit: it was never stored", async () => {
    let runId = "";
    const hook = store.onMark;
    store.onMark = (run) => {
      if ((run.input as { inject?: unknown } | null)?.inject === "dropstart") runId ||= run.id;
      hook?.(run);
    };
    // A commit held in flight: the run's first changes wait for the next.
    store.hold();
    const before = engine.whenCommitted();
    try {
      await waitFor("a commit held in flight", () => store.holding);
      const started = start("f-child", { inject: "dropstart" });
      await waitFor("the run dropped", () => runId !== "" && !engine.isActive(runId));
      store.release();
      await before;
      await assert.rejects(started, internal(/the run was not created: .*injected grant fault/));
    } finally {
      store.onMark = hook;
      store.release();
    }
    await engine.whenCommitted();
    assert.equal(store.read().runs.has(runId), false, "never stored");
    assert.ok(
      lines.some((l) => l.run_id === runId && /leaves memory/.test(l.msg)),
      "it was dropped",
    );
  });

  it("logs a dropped run it could not end in storage as one the scheduler could not advance", async () => {
    const failRefusedRun = store.failRefusedRun.bind(store);
    store.failRefusedRun = (runId: string, error: ErrorInfo): Promise<RefusedRunOutcome> =>
      /injected unended fault/.test(error.message)
        ? Promise.reject(new Error("injected end failure"))
        : failRefusedRun(runId, error);
    try {
      const { runId } = await start("f-keyed", { key: "unended", inject: "unended" });
      const line = await waitFor("the end's failure logged", () =>
        lines.find((l) => l.run_id === runId && l.err?.message === "injected end failure"),
      );
      assert.equal(line.msg, "could not end a run the scheduler could not advance");
    } finally {
      store.failRefusedRun = failRefusedRun;
    }
  });
});
