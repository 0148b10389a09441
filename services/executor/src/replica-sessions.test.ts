/**
 * The executor against two scripted scheduler replicas (real grpc-js servers on port 0): each
 * serves ExecutorService.Session, answering AttachAck with its replica id, and ReplicaService.
 * ListReplicas with the map the test sets. Given the first replica's address only, the executor
 * opens a session to the second, shares its slots by partitions, and sends each lease's reports
 * to its run's owner. Tests wait on messages, never on sleeps.
 */
import assert from "node:assert/strict";
import { EventEmitter, once } from "node:events";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type LogLevel, createLogger, isAcknowledgedReport, serviceDefinition } from "@nexusflow/common";
import {
  AckedSchema,
  AttachAckSchema,
  ExecutorService,
  type ListReplicasResponse,
  ListReplicasResponseSchema,
  LeaseSchema,
  RejectedSchema,
  ReplicaService,
  type SessionRequest,
  type SessionResponse,
  SessionResponseSchema,
} from "@nexusflow/gen";
import { Executor } from "./executor.js";

type Request = SessionRequest["message"];
const WAIT_MS = 5_000;
const logger = createLogger(
  "replica-sessions-test",
  (process.env["TEST_LOG_LEVEL"] as LogLevel | undefined) ?? "silent",
);

/** One scripted replica. */
class FakeReplica {
  readonly received: Request[][] = [];
  readonly calls: grpc.ServerDuplexStream<SessionRequest, SessionResponse>[] = [];
  readonly events = new EventEmitter();
  map: ListReplicasResponse = create(ListReplicasResponseSchema);
  /** ListReplicas calls answered. */
  lists = 0;
  /** Whether ListReplicas fails (UNAVAILABLE: its database restarting), and how often it did. */
  listing: "answer" | "fail" = "answer";
  failedLists = 0;
  /** The session timeout its AttachAck gives. */
  sessionTimeoutMs = 5_000;
  /** The code a report is rejected with (before it is acknowledged), if any. */
  reject: (m: Request) => string | undefined = () => undefined;
  /** Reports rejected. */
  readonly rejected: Request[] = [];
  port = 0;
  readonly server = new grpc.Server();

  constructor(readonly id: string) {
    this.server.addService(serviceDefinition(ExecutorService), {
      session: (call: grpc.ServerDuplexStream<SessionRequest, SessionResponse>) => this.#session(call),
    });
    this.server.addService(serviceDefinition(ReplicaService), {
      listReplicas: (
        _call: grpc.ServerUnaryCall<unknown, ListReplicasResponse>,
        callback: grpc.sendUnaryData<ListReplicasResponse>,
      ) => {
        if (this.listing === "fail") {
          this.failedLists++;
          callback({ code: grpc.status.UNAVAILABLE, details: "the database is restarting" });
        } else {
          this.lists++;
          callback(null, this.map);
        }
        this.events.emit("change");
      },
    });
  }

  async start(): Promise<this> {
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, port) =>
        e === null ? resolve(port) : reject(e),
      ),
    );
    return this;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  send(session: number, message: SessionResponse["message"]): void {
    this.calls[session]?.write(create(SessionResponseSchema, { message }));
  }

  /** Every message of the replica's sessions, in order. */
  all(): Request[] {
    return this.received.flat();
  }

  async until<T>(what: string, probe: () => T | undefined): Promise<T> {
    const signal = AbortSignal.timeout(WAIT_MS);
    for (;;) {
      const v = probe();
      if (v !== undefined) return v;
      try {
        await once(this.events, "change", { signal });
      } catch {
        throw new Error(
          `${this.id}: timed out waiting for ${what}; received ${this.all()
            .map((m) => m.case)
            .join(", ")}`,
        );
      }
    }
  }

  #session(call: grpc.ServerDuplexStream<SessionRequest, SessionResponse>): void {
    const index = this.calls.length;
    this.calls.push(call);
    const messages: Request[] = [];
    this.received.push(messages);
    let reports = 0;
    call.on("data", (request: SessionRequest) => {
      const items: Request[] =
        request.message.case === "reports"
          ? request.message.value.items.map((item) => item.report)
          : [request.message];
      for (const m of items) {
        messages.push(m);
        const code = this.reject(m);
        if (code !== undefined && m.value !== undefined && "key" in m.value) {
          this.rejected.push(m);
          this.send(index, {
            case: "rejected",
            value: create(RejectedSchema, { key: m.value.key, code, message: `rejected ${m.case}` }),
          });
        }
        if (isAcknowledgedReport(m)) reports++;
      }
      if (items.some(isAcknowledgedReport))
        this.send(index, { case: "acked", value: create(AckedSchema, { through: BigInt(reports) }) });
      if (request.message.case === "attach")
        this.send(index, {
          case: "attachAck",
          value: create(AttachAckSchema, {
            sessionId: `${this.id}-session-${index}`,
            heartbeatIntervalMs: 1_000,
            sessionTimeoutMs: this.sessionTimeoutMs,
            protocolVersion: 2,
            replicaId: this.id,
          }),
        });
      this.events.emit("change");
    });
    call.on("end", () => call.end());
    call.on("error", () => undefined);
  }
}

/** The map of replicas `a` (partitions 0 to 11, but those `moved`) and `b` (12 to 15, and `moved`) of 16. */
function mapOf(a: FakeReplica, b: FakeReplica, moved: readonly number[] = []): ListReplicasResponse {
  const all = Array.from({ length: 16 }, (_, p) => p);
  const ofB = (p: number): boolean => p >= 12 || moved.includes(p);
  return create(ListReplicasResponseSchema, {
    partitionCount: 16,
    replicas: [
      {
        replicaId: a.id,
        address: a.address,
        live: true,
        partitions: all.filter((p) => !ofB(p)).map((partition) => ({ partition })),
      },
      {
        replicaId: b.id,
        address: b.address,
        live: true,
        partitions: all.filter(ofB).map((partition) => ({ partition })),
      },
    ],
  });
}

/** A run id in partition `p` of 16 (its last 8 hex digits). */
const runIn = (p: number, n: number): string =>
  `0190c3b2-7a1e-7cc1-9f00-${(n * 16 + p).toString(16).padStart(12, "0")}`;

const credit = (messages: Request[]): number =>
  messages.reduce((n, m) => (m.case === "credit" ? n + m.value.n - m.value.withdraw : n), 0);

const replicas: FakeReplica[] = [];
const executors: Executor[] = [];
after(async () => {
  await Promise.all(executors.map((e) => e.stop()));
  for (const r of replicas) r.server.forceShutdown();
});

/**
 * Replicas `<prefix>-a` (partitions 0-11) and `<prefix>-b` (12-15), both listing the two, and an
 * executor of 8 slots given a's address (not started).
 */
async function twoReplicas(
  prefix: string,
  executorId: string,
): Promise<{ a: FakeReplica; b: FakeReplica; executor: Executor }> {
  const a = await new FakeReplica(`${prefix}-a`).start();
  const b = await new FakeReplica(`${prefix}-b`).start();
  replicas.push(a, b);
  a.map = mapOf(a, b);
  b.map = a.map;
  const executor = new Executor({
    schedulerAddress: a.address,
    executorId,
    slots: 8,
    replicaRefreshMs: 100,
    reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
    drainTimeoutMs: 2_000,
    logger,
  });
  executors.push(executor);
  return { a, b, executor };
}

void describe("an executor given one replica's address", () => {
  it("opens a session to the other replica, shares its slots by partitions, and reports to each run's owner", async () => {
    const { a, b, executor } = await twoReplicas("replica", "executor-1");
    let done: (() => void) | undefined;
    executor.register(
      "t",
      () =>
        new Promise((resolve) => {
          done = () => resolve({ ok: true });
        }),
    );
    await executor.start();
    await b.until("a session to replica b", () => (b.calls.length > 0 ? true : undefined));
    // 12 of 16 partitions on a: 6 of the 8 slots; b: 2. The first grant gave a all 8; 2 taken back.
    await a.until("a's share of the credit", () => (credit(a.all()) === 6 ? true : undefined));
    await b.until("b's share of the credit", () => (credit(b.all()) === 2 ? true : undefined));
    assert.deepEqual([...executor.replicaSessions].sort(), [
      ["replica-a", "replica-a-session-0"],
      ["replica-b", "replica-b-session-0"],
    ]);

    // b leases a task of a run in partition 3 (a's by the map): its result goes to a.
    const runId = runIn(3, 1);
    b.send(0, {
      case: "lease",
      value: create(LeaseSchema, {
        key: { taskRunId: "task-1", attempt: 1, fencingToken: 7n },
        runId,
        stepId: "s",
        taskType: "t",
      }),
    });
    await a.until("a heartbeat of the lease at its owner", () =>
      a.all().some((m) => m.case === "heartbeat" && m.value.key?.taskRunId === "task-1") ? true : undefined,
    );
    await a.until("the task's start", () => (done === undefined ? undefined : true));
    done?.();
    await a.until("the completion at the run's owner", () =>
      a.all().some((m) => m.case === "completed" && m.value.key?.taskRunId === "task-1") ? true : undefined,
    );
    assert.equal(
      b.all().some((m) => m.case === "completed"),
      false,
      "not to the replica that leased it",
    );
  });

  it("gives the slots of a replica with nothing to lease to the one with work, and back", async () => {
    const { a, b, executor } = await twoReplicas("replica-idle", "executor-idle");
    const running: (() => void)[] = [];
    executor.register(
      "t",
      () =>
        new Promise((resolve) => {
          running.push(() => resolve({ ok: true }));
        }),
    );
    await executor.start();
    await b.until("b's share of the credit", () => (credit(b.all()) === 2 ? true : undefined));
    const lease = (r: FakeReplica, n: number, partition: number) =>
      r.send(0, {
        case: "lease",
        value: create(LeaseSchema, {
          key: { taskRunId: `${r.id}-task-${n}`, attempt: 1, fencingToken: 1n },
          runId: runIn(partition, n),
          stepId: "s",
          taskType: "t",
        }),
      });
    // b has work (it spends its 2), a has none: a keeps one slot (its floor), b gets the other 5.
    lease(b, 1, 12);
    lease(b, 2, 13);
    await a.until("a's credit down to its floor", () => (credit(a.all()) === 1 ? true : undefined));
    await b.until("b granted a's slots", () => (credit(b.all()) === 7 ? true : undefined));
    // Now a has work and b, holding 5 unspent, none: they go back to a as b's stay unspent.
    lease(a, 3, 0);
    await a.until("a's slots back", () => (credit(a.all()) >= 6 ? true : undefined));
    // (b's Credit withdraw and a's grant are written in the same turn, on two streams.)
    await b.until("b's unspent credit taken back", () => (credit(b.all()) <= 3 ? true : undefined));
    const left = credit(b.all());
    assert.ok(left === 2 || left === 3, `b keeps its two running (and at most its floor): ${left}`);
    assert.ok(credit(a.all()) + left <= 8, "never more credit than slots");
    for (const done of running) done();
  });

  it("with one replica in the map, keeps one session with every slot, as with a single scheduler", async () => {
    const a = await new FakeReplica("replica-solo").start();
    replicas.push(a);
    a.map = create(ListReplicasResponseSchema, {
      partitionCount: 16,
      replicas: [
        {
          replicaId: a.id,
          address: a.address,
          live: true,
          partitions: Array.from({ length: 16 }, (_, partition) => ({ partition })),
        },
      ],
    });
    const executor = new Executor({
      schedulerAddress: a.address,
      executorId: "executor-solo",
      slots: 8,
      replicaRefreshMs: 50,
      logger,
    });
    executors.push(executor);
    executor.register("t", () => ({ ok: true }));
    await executor.start();
    await a.until("the map asked for twice", () => (a.lists >= 2 ? true : undefined));
    assert.equal(a.calls.length, 1, "one session");
    assert.equal(credit(a.all()), 8, "every slot granted to it, nothing taken back");
    assert.equal(
      a.all().some((m) => m.case === "credit" && m.value.withdraw !== 0),
      false,
    );
  });

  it("reports a lease to the replica that granted it while the replica map is older than the lease", async () => {
    const { a, b, executor } = await twoReplicas("newer", "executor-n");
    let done: (() => void) | undefined;
    executor.register("t", () => new Promise((resolve) => (done = () => resolve({ ok: true }))));
    await executor.start();
    await b.until("b's share of the credit", () => (credit(b.all()) === 2 ? true : undefined));
    // The map can no longer be refreshed: it says partition 3 is a's, but b took it since and
    // leases a task of a run there.
    a.listing = "fail";
    b.listing = "fail";
    b.send(0, {
      case: "lease",
      value: create(LeaseSchema, {
        key: { taskRunId: "task-n", attempt: 1, fencingToken: 3n },
        runId: runIn(3, 2),
        stepId: "s",
        taskType: "t",
      }),
    });
    const of = (m: Request): boolean =>
      (m.case === "started" || m.case === "heartbeat" || m.case === "completed") &&
      m.value.key?.taskRunId === "task-n";
    await b.until("the task's start at the replica that leased it", () =>
      b.all().some((m) => m.case === "started" && of(m)) && done !== undefined ? true : undefined,
    );
    done?.();
    await b.until("its completion there", () =>
      b.all().some((m) => m.case === "completed" && of(m)) ? true : undefined,
    );
    assert.deepEqual(
      a
        .all()
        .filter(of)
        .map((m) => m.case),
      [],
      "nothing of it to the owner by the stale map",
    );
  });

  it("keeps a task whose reports meet NOT_FOUND for as long as the replica map cannot be refreshed", async () => {
    const { a, b, executor } = await twoReplicas("stale", "executor-s");
    a.sessionTimeoutMs = 200;
    b.sessionTimeoutMs = 200;
    let finish: (() => void) | undefined;
    let aborted = false;
    executor.register(
      "beating",
      (_input, ctx) =>
        new Promise((resolve, reject) => {
          // The handler's own heartbeats (throttled to one per 50 ms by the lease's timeout).
          const beat = setInterval(() => ctx.heartbeat(), 10);
          finish = () => {
            clearInterval(beat);
            resolve({ ok: true });
          };
          ctx.signal.addEventListener("abort", () => {
            aborted = true;
            clearInterval(beat);
            reject(new Error("aborted"));
          });
        }),
    );
    await executor.start();
    await b.until("b's share of the credit", () => (credit(b.all()) === 2 ? true : undefined));
    // The run's partition moves from a to b while the database restarts: a no longer knows the
    // run (NOT_FOUND) and nobody can list the replicas.
    a.listing = "fail";
    b.listing = "fail";
    const key = { taskRunId: "task-s", attempt: 1, fencingToken: 5n };
    a.reject = (m) =>
      m.case === "heartbeat" && m.value.key?.taskRunId === "task-s" ? "NOT_FOUND" : undefined;
    a.send(0, {
      case: "lease",
      value: create(LeaseSchema, {
        key,
        runId: runIn(3, 3),
        stepId: "s",
        taskType: "beating",
        heartbeatTimeoutMs: 200,
      }),
    });
    // Ten rejected heartbeats, at least 50 ms apart: more than twice the session timeout.
    await a.until("ten heartbeats rejected NOT_FOUND", () => (a.rejected.length >= 10 ? true : undefined));
    assert.equal(aborted, false, "the task still runs");
    // The map comes back: the run's owner is b now, which adopts the lease on its heartbeat.
    a.map = mapOf(a, b, [3]);
    b.map = a.map;
    a.listing = "answer";
    b.listing = "answer";
    await b.until("a heartbeat of the task at its new owner", () =>
      b.all().some((m) => m.case === "heartbeat" && m.value.key?.taskRunId === "task-s") ? true : undefined,
    );
    finish?.();
    await b.until("its completion there", () =>
      b.all().some((m) => m.case === "completed" && m.value.key?.taskRunId === "task-s") ? true : undefined,
    );
    assert.equal(aborted, false);
  });
});
