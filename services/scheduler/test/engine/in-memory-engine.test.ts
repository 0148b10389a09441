/**
 * A whole Engine (the shell, its lease pump, timers and watchers, not only the core) with no
 * database: runs, events and definitions in the in-memory stores. An executor session is played
 * the way api/executor-session.ts drives the engine: attach, credit, and for each lease sent a
 * Started report then a Completed or Failed one, a credit back, and reports acknowledged once
 * committed (whenCommitted); as a session of protocol version 1 (a Lease message each) and of
 * version 2 (the leases of a pass in LeaseBatch frames). A diamond runs with a retried step and succeeds; the same diamond
 * whose last step fails for good rolls back (saga): the compensations of the steps that succeeded
 * run in reverse dependency order and the run ends COMPENSATED. A fault in the rules (a throw while
 * advancing a run) fails that run with SCHEDULER_ERROR and leaves the others running.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createLogger, valueToJson } from "@nexusflow/common";
import { fromBinary } from "@bufbuild/protobuf";
import {
  SessionResponseSchema,
  TaskKind,
  type Lease,
  type LeaseKey,
  type SessionResponse,
} from "@nexusflow/gen";
import { Definitions } from "../../src/engine/definitions.js";
import type { SessionHandle } from "../../src/engine/dispatcher.js";
import { Engine } from "../../src/engine/engine.js";
import { TERMINAL_RUN_STATUSES, type RunState } from "../../src/model/run-state.js";
import { MemoryDefinitionStore } from "../../src/persistence/memory-definition-store.js";
import { MemoryEngineStore, type MemoryEventRow } from "../../src/persistence/memory-engine-store.js";

const log = createLogger("in-memory-engine", "warn");

/** A lease as the fake executor received it. */
interface Received {
  key: LeaseKey;
  runId: string;
  stepId: string;
  taskType: string;
  kind: TaskKind;
  input: unknown;
}

/**
 * An executor session in process: takes every lease sent, runs `handle` for it, and reports the
 * outcome as the executor-session API would (Started, then Completed or Failed, then a credit).
 */
class FakeSession implements SessionHandle {
  readonly id = "session-1";
  readonly executorId = "executor-1";
  readonly types: ReadonlySet<string>;
  credit = 0;
  readonly leases = new Set<string>();
  draining = false;
  lastSeen = performance.now();
  readonly received: Received[] = [];
  readonly rejections: string[] = [];
  acked = 0;
  /** LeaseBatch frames received. */
  batches = 0;
  private reports = 0;
  closed: string | undefined;

  constructor(
    private readonly engine: Engine,
    readonly protocolVersion: number,
    types: string[],
    private readonly handle: (lease: Received) => { output: unknown } | { error: string; retryable: boolean },
  ) {
    this.types = new Set(types);
  }

  send(message: SessionResponse): void {
    if (message.message.case === "lease") this.take(message.message.value);
    else if (message.message.case === "leases") {
      this.batches++;
      for (const l of message.message.value.leases) this.take(l);
    }
  }

  /** Frames of protocol version 2 (LeaseBatch, or a lease alone), decoded as the executor does. */
  sendFrame(frame: Uint8Array): void {
    assert.ok(this.protocolVersion >= 2, "a frame sent to a session of version 1");
    this.send(fromBinary(SessionResponseSchema, frame));
  }

  private take(l: Lease): void {
    assert.ok(l.key !== undefined);
    const lease: Received = {
      key: l.key,
      runId: l.runId,
      stepId: l.stepId,
      taskType: l.taskType,
      kind: l.kind,
      input: l.input === undefined ? null : valueToJson(l.input),
    };
    this.received.push(lease);
    // The executor answers on a later turn, as one over the network does.
    setImmediate(() => this.run(lease));
  }

  close(reason: string): void {
    this.closed = reason;
  }

  private run(lease: Received): void {
    this.lastSeen = performance.now();
    this.check(this.engine.onStarted(this, lease.key));
    const outcome = this.handle(lease);
    this.check(
      "output" in outcome
        ? this.engine.onCompleted(this, lease.key, outcome.output, null, null)
        : this.engine.onFailed(
            this,
            lease.key,
            {
              type: outcome.error,
              message: `${lease.stepId}: ${outcome.error}`,
              retryable: outcome.retryable,
            },
            0,
            null,
          ),
    );
    const through = ++this.reports;
    this.engine.whenCommitted().then(
      () => (this.acked = Math.max(this.acked, through)),
      () => undefined,
    );
    this.check(this.engine.onCredit(this, 1));
  }

  private check(rejection: { message: string } | null): void {
    if (rejection !== null) this.rejections.push(rejection.message);
  }
}

/** A chain of two steps; the first's input says whether the test breaks the run while it runs. */
const faulty = {
  name: "mem-fault",
  version: 1,
  steps: [
    {
      id: "first",
      type: "reserve",
      input: {
        fault: "{{ input.fault }}",
        reportFault: "{{ input.reportFault }}",
        leaseFault: "{{ input.leaseFault }}",
      },
    },
    { id: "second", type: "book", dependsOn: ["first"] },
  ],
};

const diamond = {
  name: "mem-trip",
  version: 1,
  steps: [
    { id: "reserve", type: "reserve", compensate: { type: "unreserve" } },
    {
      id: "flight",
      type: "book",
      dependsOn: ["reserve"],
      retry: { maxAttempts: 3, initialInterval: "10ms" },
      compensate: { type: "unbook" },
    },
    { id: "hotel", type: "book", dependsOn: ["reserve"], compensate: { type: "unbook" } },
    { id: "pay", type: "pay", dependsOn: ["flight", "hotel"], input: { decline: "{{ input.decline }}" } },
  ],
};

for (const protocolVersion of [1, 2]) describeEngine(protocolVersion);

function describeEngine(protocolVersion: number): void {
  describe(`an Engine on the in-memory stores, a session of protocol version ${protocolVersion}`, () => {
    const store = new MemoryEngineStore();
    const engine = new Engine({ store, definitions: new Definitions(new MemoryDefinitionStore(), log), log });
    /** Attempts of each step, by run id and step id. */
    const attempts = new Map<string, number>();
    let session: FakeSession;

    before(async () => {
      await engine.start();
      const { created } = await engine.definitions.register(diamond);
      assert.equal(created, true);
      await engine.definitions.register(faulty);
      session = new FakeSession(
        engine,
        protocolVersion,
        ["reserve", "book", "pay", "unreserve", "unbook"],
        (lease) => {
          const input = lease.input as {
            decline?: boolean;
            fault?: boolean;
            reportFault?: boolean;
            leaseFault?: boolean;
          } | null;
          if (input?.leaseFault === true) {
            // Whatever bug would make leasing the run's next step throw, once: here, the
            // session's record of its leases refusing that step's task.
            const second = (engine.activeRun(lease.runId) as RunState).tasks.get("second")?.id;
            const leases = session.leases;
            const add = leases.add.bind(leases);
            let thrown = false;
            leases.add = (id: string) => {
              if (id !== second || thrown) return add(id);
              thrown = true;
              throw new Error("injected lease fault");
            };
          }
          if (input?.reportFault === true) {
            // Whatever bug would make applying the report throw: here, reading the run's workflow.
            const run = engine.activeRun(lease.runId) as { workflow: unknown };
            run.workflow = new Proxy(
              {},
              {
                get: () => {
                  throw new Error("injected report fault");
                },
              },
            );
          }
          if (input?.fault === true) {
            // Whatever bug would make advancing the run throw: here, reading its evaluation memo.
            const run = engine.activeRun(lease.runId) as RunState;
            run.evaluation = new Proxy({} as NonNullable<RunState["evaluation"]>, {
              get: () => {
                throw new Error("injected fault");
              },
            });
          }
          const key = `${lease.key.taskRunId}`;
          const n = (attempts.get(key) ?? 0) + 1;
          attempts.set(key, n);
          // The flight's first attempt fails (retryable); payment fails for good when declined.
          if (lease.stepId === "flight" && lease.kind === TaskKind.STEP && n === 1)
            return { error: "FLAKY", retryable: true };
          if (lease.stepId === "pay" && input?.decline === true)
            return { error: "DECLINED", retryable: false };
          return { output: { step: lease.stepId, type: lease.taskType } };
        },
      );
      assert.deepEqual(engine.attach(session, []), []);
      assert.equal(engine.onCredit(session, 4), null);
    });

    after(async () => {
      await engine.stop();
    });

    /** Waits, on the run's commits, until its stored row is terminal; returns what is stored of it. */
    const finished = async (runId: string) => {
      await new Promise<void>((resolve) => {
        const done = (): boolean =>
          TERMINAL_RUN_STATUSES.has(store.read().runs.get(runId)?.status ?? "PENDING");
        if (done()) return resolve();
        const stop = engine.watch(runId, () => {
          if (!done()) return;
          stop();
          resolve();
        });
      });
      const rows = store.read();
      return {
        run: rows.runs.get(runId),
        tasks: [...rows.tasks.values()].filter((t) => t.runId === runId),
        attempts: rows.attempts.filter((a) => a.runId === runId),
        events: rows.events.filter((e) => e.runId === runId),
      };
    };

    /** Event cases in order, with the step they name. */
    const described = (events: readonly MemoryEventRow[]): string[] =>
      events.map((e) => {
        const step = (e.event.value as { stepId?: string } | undefined)?.stepId;
        return step === undefined ? e.type : `${e.type}:${step}`;
      });

    it("runs a diamond whose branch is retried to SUCCEEDED, and stores its rows and events", async () => {
      const { runId, created } = await engine.startRun({
        workflowName: "mem-trip",
        workflowVersion: 0,
        input: { decline: false },
        idempotencyKey: "",
        labels: { test: "memory" },
      });
      assert.equal(created, true);
      const { run, tasks, attempts: tried, events } = await finished(runId);
      assert.equal(run?.status, "SUCCEEDED");
      assert.deepEqual(run?.labels, { test: "memory" });
      assert.deepEqual(tasks.map((t) => [t.stepId, t.kind, t.status, t.attempt]).sort(), [
        ["flight", "STEP", "SUCCEEDED", 2],
        ["hotel", "STEP", "SUCCEEDED", 1],
        ["pay", "STEP", "SUCCEEDED", 1],
        ["reserve", "STEP", "SUCCEEDED", 1],
      ]);
      const flight = tasks.find((t) => t.stepId === "flight");
      assert.deepEqual(
        tried
          .filter((a) => a.taskRunId === flight?.id)
          .sort((a, b) => a.number - b.number)
          .map((a) => [a.number, a.status, a.error?.type ?? null]),
        [
          [1, "FAILED", "FLAKY"],
          [2, "SUCCEEDED", null],
        ],
      );
      const cases = described(events);
      assert.equal(cases[0], "runStarted");
      assert.equal(cases.at(-1), "runCompleted");
      assert.equal(cases.filter((c) => c === "runCompleted").length, 1);
      assert.ok(cases.includes("taskRetryScheduled:flight"), cases.join(" "));
      // The diamond's order: pay starts only after both branches succeeded, each after reserve.
      const at = (c: string): number => cases.indexOf(c);
      assert.ok(at("taskSucceeded:reserve") < at("taskStarted:flight"));
      assert.ok(at("taskSucceeded:reserve") < at("taskStarted:hotel"));
      assert.ok(at("taskSucceeded:flight") < at("taskStarted:pay"));
      assert.ok(at("taskSucceeded:hotel") < at("taskStarted:pay"));
      // Sequence numbers are dense and in order.
      assert.deepEqual(
        events.map((e) => e.sequence),
        events.map((_, i) => i + 1),
      );
      assert.equal(engine.isActive(runId), false, "an ended run leaves memory once committed");
    });

    it("rolls a diamond whose last step fails for good back: compensations in reverse order, COMPENSATED", async () => {
      const { runId } = await engine.startRun({
        workflowName: "mem-trip",
        workflowVersion: 1,
        input: { decline: true },
        idempotencyKey: "",
        labels: {},
      });
      const { run, tasks, events } = await finished(runId);
      assert.equal(run?.status, "COMPENSATED");
      assert.equal(run?.error?.type, "DECLINED");
      const byStep = (kind: string) =>
        Object.fromEntries(tasks.filter((t) => t.kind === kind).map((t) => [t.stepId, t.status]));
      assert.deepEqual(byStep("STEP"), {
        reserve: "SUCCEEDED",
        flight: "SUCCEEDED",
        hotel: "SUCCEEDED",
        pay: "FAILED",
      });
      assert.deepEqual(byStep("COMPENSATION"), {
        reserve: "SUCCEEDED",
        flight: "SUCCEEDED",
        hotel: "SUCCEEDED",
      });
      const cases = described(events);
      const at = (c: string): number => cases.lastIndexOf(c);
      assert.ok(at("taskFailed:pay") < at("runCompensating"), cases.join(" "));
      // The branches are undone before what they depend on.
      assert.ok(at("taskSucceeded:flight") < at("taskStarted:reserve"), cases.join(" "));
      assert.ok(at("taskSucceeded:hotel") < at("taskStarted:reserve"), cases.join(" "));
      assert.equal(cases.at(-1), "runCompleted");
      const compensationTypes = session.received
        .filter((l) => l.kind === TaskKind.COMPENSATION && tasks.some((t) => t.id === l.key.taskRunId))
        .map((l) => `${l.stepId}:${l.taskType}`)
        .sort();
      assert.deepEqual(compensationTypes, ["flight:unbook", "hotel:unbook", "reserve:unreserve"]);
    });

    it("confines a fault while advancing a run to that run: FAILED with SCHEDULER_ERROR, the others go on", async () => {
      const start = (fault: boolean, reportFault = false) =>
        engine.startRun({
          workflowName: "mem-fault",
          workflowVersion: 1,
          input: { fault, reportFault, leaseFault: false },
          idempotencyKey: "",
          labels: {},
        });
      const broken = await start(true);
      const healthy = await start(false);
      const failed = await finished(broken.runId);
      assert.equal(failed.run?.status, "FAILED");
      assert.equal(failed.run?.error?.type, "SCHEDULER_ERROR");
      assert.match(failed.run?.error?.message ?? "", /injected fault/);
      assert.deepEqual(failed.tasks.map((t) => [t.stepId, t.status]).sort(), [
        ["first", "SUCCEEDED"],
        ["second", "CANCELLED"],
      ]);
      assert.equal(described(failed.events).at(-1), "runCompleted");
      assert.equal(engine.isActive(broken.runId), false, "the failed run leaves memory once committed");
      assert.equal((await finished(healthy.runId)).run?.status, "SUCCEEDED");
      // The engine still takes work.
      assert.equal((await finished((await start(false)).runId)).run?.status, "SUCCEEDED");
    });

    it("confines a fault while leasing a run's task to that run, and gives the slot back", async () => {
      const start = (leaseFault: boolean) =>
        engine.startRun({
          workflowName: "mem-fault",
          workflowVersion: 1,
          input: { fault: false, reportFault: false, leaseFault },
          idempotencyKey: "",
          labels: {},
        });
      const credit = session.credit;
      const { runId } = await start(true);
      const { run } = await finished(runId);
      assert.equal(run?.status, "FAILED");
      assert.equal(run?.error?.type, "SCHEDULER_ERROR");
      assert.match(run?.error?.message ?? "", /injected lease fault/);
      // The slot the failed grant took is back: as many runs as slots still finish.
      const more = await Promise.all([1, 2, 3, 4, 5].map(() => start(false)));
      for (const m of more) assert.equal((await finished(m.runId)).run?.status, "SUCCEEDED");
      await engine.whenCommitted();
      assert.equal(session.credit, credit);
    });

    it("confines a fault while applying a report to the report's run, and accepts the report", async () => {
      const { runId } = await engine.startRun({
        workflowName: "mem-fault",
        workflowVersion: 1,
        input: { fault: false, reportFault: true, leaseFault: false },
        idempotencyKey: "",
        labels: {},
      });
      const { run } = await finished(runId);
      assert.equal(run?.status, "FAILED");
      assert.equal(run?.error?.type, "SCHEDULER_ERROR");
      assert.match(run?.error?.message ?? "", /injected report fault/);
      assert.equal(engine.isActive(runId), false);
      assert.equal(session.closed, undefined);
    });

    it("every report was accepted, and acknowledged once committed", async () => {
      assert.deepEqual(session.rejections, []);
      await engine.whenCommitted();
      assert.equal(session.acked, session.received.length);
      assert.equal(session.closed, undefined);
      // Both branches of a diamond are ready at once: one pass leases them, in one frame from version 2.
      if (protocolVersion >= 2) assert.ok(session.batches > 0, "no LeaseBatch frame");
      else assert.equal(session.batches, 0);
    });
  });
}
