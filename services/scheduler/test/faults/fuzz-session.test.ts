/**
 * Hostile input from any client must never end the scheduler (issue 18): a real scheduler process
 * is fed generated executor-session messages of every kind (unset oneofs, empty and huge strings,
 * NaN/±Infinity/-0, Values with no kind, deep nesting, foreign task ids and fencing tokens; and
 * batches of such reports, issue 28: empty, with unset items, over the item limit) and
 * generated WorkflowService requests. Afterwards the process is still up, no handler failed
 * unexpectedly, no call answered INTERNAL, and a legitimate executor still attaches, leases and
 * completes a run. The first cases pin down how a Value with no JSON form is refused: an executor's
 * report is Rejected with INVALID_ARGUMENT naming the field (the session stays open), a StartRun or
 * RegisterWorkflow answers INVALID_ARGUMENT naming it, and nothing changes.
 */
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { create, type JsonObject, type MessageInitShape } from "@bufbuild/protobuf";
import { NullValue, ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import {
  RunStatus,
  TaskStatus,
  WorkflowSpecSchema,
  type LeaseKey,
  type SessionRequestSchema,
} from "@nexusflow/gen";
import fc from "fast-check";
import { registerSpec, type WorkflowClient } from "../e2e/harness.js";
import { startSchedulerProcess, type ServiceProcess } from "../e2e/processes.js";
import { RawSession, waitFor, waitForRun, workflowClient } from "../support.js";
import { faultFixture, startRun } from "./support.js";

type SessionMessage = MessageInitShape<typeof SessionRequestSchema>["message"];
type KeyInit = { taskRunId: string; attempt: number; fencingToken: bigint };

const T = { timeout: 180_000 };
const INT32 = { min: -(2 ** 31), max: 2 ** 31 - 1 };
const INT64 = { min: -(2n ** 63n), max: 2n ** 63n - 1n };
/** Log lines that mean a handler failed unexpectedly (its catch-all ran). */
const HANDLER_FAILURES = new Set([
  "session message failed; ending the session",
  "call failed while starting its handler",
  "acknowledging reports failed",
  "detaching a session failed",
]);

const num = (value: number): Value => create(ValueSchema, { kind: { case: "numberValue", value } });
const noKind = (): Value => create(ValueSchema);
/** `{ [k]: v }` as a Value (struct), keeping `v` as given (jsonToValue cannot express NaN). */
const struct = (fields: Record<string, Value>): Value =>
  create(ValueSchema, { kind: { case: "structValue", value: { fields } } });
const list = (values: Value[]): Value =>
  create(ValueSchema, { kind: { case: "listValue", value: { values } } });

describe("fault injection: hostile messages never end the scheduler", () => {
  const fx = faultFixture("nf-fuzz-");
  let scheduler: ServiceProcess;
  let address: string;
  let client: WorkflowClient;
  /** A RUNNING lease of an honest executor, the fuzz's favourite foreign key. */
  let honestKey: KeyInit | undefined;
  let honestRunId: string;
  const runIds: string[] = [];

  /** Log lines of the scheduler that say a handler failed unexpectedly. */
  const handlerFailures = (): unknown[] =>
    scheduler.lines.filter((l) => typeof l.msg === "string" && HANDLER_FAILURES.has(l.msg));

  const assertUp = async (what: string): Promise<void> => {
    assert.ok(scheduler.alive, `the scheduler process ended (${what})\n${scheduler.tail()}`);
    assert.deepEqual(handlerFailures(), [], `a handler failed unexpectedly (${what})`);
    const { run } = await client.getRun({ runId: honestRunId });
    assert.equal(run?.id, honestRunId, "the scheduler still answers");
  };

  before(async () => {
    ({ process: scheduler, address } = await startSchedulerProcess("sched-fuzz", fx.db.url, 0, {
      HEARTBEAT_INTERVAL: "200ms",
      SESSION_TIMEOUT: "3s",
    }));
    client = workflowClient(address);
    const steps = (type: string, n: number): Record<string, unknown>[] =>
      Array.from({ length: n }, (_, i) => ({
        id: `s${i}`,
        type,
        input: { i },
        retry: { maxAttempts: 2, initialInterval: "10ms" },
      }));
    await registerSpec(client, { name: "fuzz", version: 1, steps: steps("fuzz.task", 3) });
    await registerSpec(client, { name: "legit", version: 1, steps: steps("legit.task", 1) });
    honestRunId = await startRun(client, "fuzz", { honest: true });
    runIds.push(honestRunId, await startRun(client, "fuzz", {}), await startRun(client, "fuzz", {}));
  });

  it(
    "rejects a report holding a Value with no JSON form, naming the field, and keeps the session",
    T,
    async () => {
      const honest = new RawSession(address);
      honest.send({ case: "attach", value: { executorId: "honest", taskTypes: ["fuzz.task"], slots: 1 } });
      await honest.next("attachAck");
      honest.send({ case: "credit", value: { n: 1 } });
      const lease = await honest.next("lease");
      assert.ok(lease.key);
      const mine: KeyInit = { ...(lease.key as KeyInit) };
      honestKey = mine;
      honest.send({ case: "started", value: { key: lease.key } });
      await waitFor("the honest lease RUNNING", async () => {
        const { run } = await client.getRun({ runId: lease.runId });
        return run?.tasks.find((t) => t.id === mine.taskRunId)?.status === TaskStatus.RUNNING;
      });
      const { run: beforeRun } = await client.getRun({ runId: lease.runId });

      // Another executor sends results for the honest lease, and for its own (none), with bad Values.
      const prober = new RawSession(address);
      prober.send({ case: "attach", value: { executorId: "prober", taskTypes: ["probe.none"], slots: 1 } });
      await prober.next("attachAck");
      let deep = num(1);
      for (let i = 0; i < 80; i++) deep = list([deep]);
      const cases: [string, SessionMessage, string | RegExp][] = [
        [
          "NaN in a list of an output, for a foreign lease",
          {
            case: "completed",
            value: { key: mine, output: struct({ items: list([num(1), num(2), num(NaN)]) }) },
          },
          "completed.output.items[2]: NaN has no JSON form",
        ],
        [
          "an output Value with no kind, without a key",
          { case: "completed", value: { output: noKind() } },
          "completed.output: a Value with no kind set has no JSON form",
        ],
        [
          "Infinity deep in a failure's details",
          {
            case: "failed",
            value: {
              key: mine,
              error: {
                type: "X",
                message: "x",
                retryable: false,
                details: struct({ a: struct({ b: num(Infinity) }) }),
              },
            },
          },
          "failed.error.details.a.b: Infinity has no JSON form",
        ],
        [
          "-Infinity as a failure's details",
          { case: "failed", value: { key: mine, error: { type: "X", details: num(-Infinity) } } },
          "failed.error.details: -Infinity has no JSON form",
        ],
        [
          "an output reference created after the year 9999",
          {
            case: "completed",
            value: { key: mine, outputRef: { key: "k", createTime: { seconds: 10n ** 15n } } },
          },
          "completed.output_ref.create_time: a Timestamp must be from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, with nanos from 0 to 999999999",
        ],
        [
          // protobuf-es decodes 100 levels of messages: the report cannot even be read. It is still
          // answered in its turn (grpc-js alone would end the stream, replies to earlier messages
          // racing its status) and counted, as its oneof case is a report.
          "an output nested 80 lists deep",
          { case: "completed", value: { key: mine, output: deep } },
          /^the message is not a valid nexusflow\.v1\.SessionRequest: .*maximum recursion depth/,
        ],
      ];
      for (const [what, message, text] of cases) {
        prober.send(message);
        const rejected = await prober.next("rejected").catch((e: unknown) => {
          throw new Error(`${what}: no Rejected\n${scheduler.tail()}`, { cause: e });
        });
        assert.equal(rejected.code, "INVALID_ARGUMENT", what);
        if (typeof text === "string") {
          assert.equal(rejected.message, text, what);
          const key = (message?.value as { key?: LeaseKey }).key;
          assert.equal(rejected.key?.taskRunId, key?.taskRunId, `${what}: the rejection names the lease`);
        } else assert.match(rejected.message, text, what);
      }
      // The session stays open, and the refused reports count as reports for Acked.
      let through = 0n;
      while (through < BigInt(cases.length)) through = (await prober.next("acked")).through;
      assert.equal(through, BigInt(cases.length));
      prober.send({ case: "credit", value: { n: 0 } });
      assert.match((await prober.next("rejected")).message, /credit must be between/);
      await assertUp("after the refused reports");

      // The same Value refused at the front door: StartRun's input, RegisterWorkflow's spec.
      const runsBefore = (await client.listRuns({ workflowName: "fuzz", pageSize: 100 })).runs.length;
      const inputs: [Value, string][] = [
        [struct({ a: struct({ b: num(NaN) }) }), "input.a.b: NaN has no JSON form"],
        [noKind(), "input: a Value with no kind set has no JSON form"],
        [list([num(-Infinity)]), "input[0]: -Infinity has no JSON form"],
      ];
      for (const [input, text] of inputs) {
        const e = await client.startRun({ workflowName: "fuzz", input }).catch((x: unknown) => x);
        assert.ok(e instanceof ConnectError, String(e));
        assert.equal(e.code, Code.InvalidArgument, e.message);
        assert.equal(e.rawMessage, text);
      }
      assert.equal(
        (await client.listRuns({ workflowName: "fuzz", pageSize: 100 })).runs.length,
        runsBefore,
        "no run was created",
      );
      const spec = create(WorkflowSpecSchema, {
        name: "fuzz-bad-spec",
        version: 1,
        steps: [{ id: "a", type: "noop", input: struct({ x: num(Infinity) }) }],
      });
      const refused = await client
        .registerWorkflow({ definition: { case: "spec", value: spec } })
        .catch((x: unknown) => x);
      assert.ok(refused instanceof ConnectError, String(refused));
      assert.equal(refused.code, Code.InvalidArgument);
      assert.equal(refused.rawMessage, "spec.steps[0].input.x: Infinity has no JSON form");
      const missing = await client.getWorkflow({ name: "fuzz-bad-spec" }).catch((x: unknown) => x);
      assert.ok(missing instanceof ConnectError && missing.code === Code.NotFound, String(missing));

      // The honest lease is as it was, and its executor still completes it.
      const { run: afterRun } = await client.getRun({ runId: lease.runId });
      assert.deepEqual(afterRun?.tasks, beforeRun?.tasks, "no refused report changed the run");
      honest.send({ case: "completed", value: { key: lease.key, output: jsonToValue({ by: "honest" }) } });
      await waitFor("the honest completion", async () => {
        const { run } = await client.getRun({ runId: lease.runId });
        return run?.tasks.find((t) => t.id === mine.taskRunId)?.status === TaskStatus.SUCCEEDED;
      });
      prober.close();
      honest.close();
    },
  );

  it("answers an error quoting a client's text with a well-formed, bounded status", T, async () => {
    // grpc-js percent-encodes a status message with encodeURI, which throws on a lone surrogate: in a
    // unary handler's callback that ended the process. A megabyte quoted made trailers no client takes.
    // Text on the wire is UTF-8, but JSON.parse's message quotes half of an astral character.
    for (const specJson of ["\u{1F600}", '{"a": 1}\u{1F600}', "[\u{10FFFF}"]) {
      const e = await client
        .registerWorkflow({ definition: { case: "specJson", value: specJson } })
        .catch((x: unknown) => x);
      assert.ok(e instanceof ConnectError, String(e));
      assert.equal(e.code, Code.InvalidArgument, e.message);
      assert.match(e.rawMessage, /^spec_json: not valid JSON: /);
      assert.ok(e.rawMessage.isWellFormed(), JSON.stringify(e.rawMessage));
    }
    const huge = "y".repeat(2_000_000);
    const e = await client.getWorkflow({ name: huge }).catch((x: unknown) => x);
    assert.ok(e instanceof ConnectError, String(e));
    assert.equal(e.code, Code.NotFound, e.message.slice(0, 200));
    assert.match(e.rawMessage, /^workflow y+… \(\d+ more characters\)$/);
    assert.ok(e.rawMessage.length < 1100, `${e.rawMessage.length} characters`);
    await assertUp("after errors quoting odd text");
  });

  it("survives generated session messages and WorkflowService requests of every kind", T, async () => {
    const knownTaskIds: string[] = [];
    for (const id of runIds) {
      const { run } = await client.getRun({ runId: id });
      knownTaskIds.push(...(run?.tasks ?? []).map((t) => t.id));
    }
    assert.ok(knownTaskIds.length > 0);

    const hugeString = fc.integer({ min: 100_000, max: 1_000_000 }).map((n) => "x".repeat(n));
    const text = fc.oneof(
      { weight: 12, arbitrary: fc.string({ maxLength: 40, unit: "binary" }) },
      { weight: 4, arbitrary: fc.constantFrom("", "\u0000", "a\u0000b", "../../etc/passwd", "{{ input }}") },
      { weight: 1, arbitrary: hugeString },
    );
    const number = fc.oneof(
      fc.double(),
      fc.constantFrom(NaN, Infinity, -Infinity, -0, 0, Number.MAX_VALUE, Number.MIN_VALUE),
    );
    const deep = fc.tuple(fc.integer({ min: 1, max: 90 }), fc.boolean()).map(([depth, asList]) => {
      let v: Value = num(1);
      for (let i = 0; i < depth; i++) v = asList ? list([v]) : struct({ k: v });
      return v;
    });
    // Values of every kind; `value` adds nesting beyond what protobuf decodes (100 levels), which
    // ends a session in grpc-js before any handler runs, so requests use `shallow`.
    const { shallow } = fc.letrec<{ shallow: Value }>((tie) => ({
      shallow: fc.oneof(
        { depthSize: "small", maxDepth: 4 },
        fc.constant(null).map(noKind),
        fc
          .constant(null)
          .map(() => create(ValueSchema, { kind: { case: "nullValue", value: NullValue.NULL_VALUE } })),
        number.map(num),
        text.map((s) => create(ValueSchema, { kind: { case: "stringValue", value: s } })),
        fc.boolean().map((b) => create(ValueSchema, { kind: { case: "boolValue", value: b } })),
        fc.dictionary(fc.string({ maxLength: 8 }), tie("shallow"), { maxKeys: 4 }).map(struct),
        fc.array(tie("shallow"), { maxLength: 4 }).map(list),
      ),
    }));
    const value = fc.oneof({ weight: 5, arbitrary: shallow }, { weight: 1, arbitrary: deep });
    const optional = <A>(arb: fc.Arbitrary<A>): fc.Arbitrary<A | undefined> =>
      fc.option(arb, { nil: undefined, freq: 3 });
    // The honest lease of the first case (a guess when this case runs alone), and near misses.
    const real: KeyInit = honestKey ?? { taskRunId: knownTaskIds[0] ?? "", attempt: 1, fencingToken: 1n };
    const honestish = fc.constantFrom(
      real,
      { ...real, fencingToken: real.fencingToken + 1n },
      { ...real, attempt: real.attempt + 1 },
    );
    const key: fc.Arbitrary<KeyInit> = fc.oneof(
      honestish,
      fc.record({
        taskRunId: fc.oneof(
          fc.constantFrom(...knownTaskIds),
          fc.uuid(),
          fc.constant(""),
          fc.string({ maxLength: 300 }),
        ),
        attempt: fc.oneof(fc.integer(INT32), fc.integer({ min: 0, max: 3 })),
        fencingToken: fc.oneof(fc.bigInt(INT64), fc.bigInt({ min: 0n, max: 5n })),
      }),
    );
    const timestamp = fc.record({
      seconds: fc.oneof(fc.bigInt(INT64), fc.bigInt({ min: 0n, max: 2_000_000_000n })),
      nanos: fc.integer(INT32),
    });
    const logRef = fc.record({ key: text, size: fc.bigInt(INT64), lines: fc.bigInt(INT64) });
    const taskType = fc
      .oneof(fc.constantFrom("fuzz.task", "probe.none"), fc.string({ maxLength: 70 }))
      .filter((t) => t !== "legit.task");
    const attach = fc.record({
      executorId: fc.oneof(
        fc.constantFrom("honest", "fuzz-a", "fuzz-b", "", "x\u0000y"),
        fc.string({ maxLength: 250 }),
      ),
      taskTypes: fc.array(taskType, { maxLength: 4 }),
      slots: fc.integer(INT32),
      labels: fc.dictionary(fc.string({ maxLength: 10 }), text, { maxKeys: 3 }),
      version: text,
      heldLeases: fc.array(key, { maxLength: 3 }),
      protocolVersion: fc.oneof(fc.integer(INT32), fc.integer({ min: -1, max: 3 })),
    });
    // Mostly a valid Attach first, so that most sessions get as far as their reports.
    const firstAttach = fc.oneof(
      {
        weight: 4,
        arbitrary: fc.record({
          executorId: fc.oneof(
            fc.constantFrom("honest", "fuzz-a", "fuzz-b"),
            fc.string({ minLength: 1, maxLength: 20 }),
          ),
          taskTypes: fc.subarray(["fuzz.task", "probe.none"], { minLength: 1 }),
          slots: fc.integer(INT32),
          heldLeases: fc.array(key, { maxLength: 3 }),
          // Mostly version 2 (batches), else none (version 1).
          protocolVersion: fc.constantFrom(2, 2, 0),
        }),
      },
      { weight: 1, arbitrary: attach },
    );
    // What a report may be, alone or as an item of a Reports message.
    const report = fc.oneof(
      optional(key).map((k) => ({ case: "started" as const, value: { key: k } })),
      fc
        .record({ key: optional(key), progress: optional(value) })
        .map((value) => ({ case: "heartbeat" as const, value })),
      fc
        .record({
          key: optional(key),
          output: optional(value),
          outputRef: optional(
            fc.record({
              key: text,
              name: text,
              size: fc.bigInt(INT64),
              contentType: text,
              sha256: text,
              createTime: optional(timestamp),
            }),
          ),
          logs: optional(logRef),
        })
        .map((value) => ({ case: "completed" as const, value })),
      fc
        .record({
          key: optional(key),
          error: optional(
            fc.record({ type: text, message: text, retryable: fc.boolean(), details: optional(value) }),
          ),
          retryAfterMs: fc.bigInt(INT64),
          logs: optional(logRef),
        })
        .map((value) => ({ case: "failed" as const, value })),
      fc.record({ key: optional(key), reason: text }).map((value) => ({ case: "release" as const, value })),
    );
    // Batches (protocol version 2): empty ones, items with no report set, and now and then more
    // items than a Reports may hold (each a report on its own, or none).
    const reports = fc
      .oneof(
        { weight: 8, arbitrary: fc.array(fc.option(report, { nil: undefined, freq: 6 }), { maxLength: 5 }) },
        {
          weight: 1,
          arbitrary: fc
            .tuple(
              fc.integer({ min: 4000, max: 4200 }),
              fc.constantFrom(undefined, { case: "release" as const, value: { key: real, reason: "x" } }),
            )
            .map(([n, r]) => Array.from({ length: n }, () => r)),
        },
      )
      .map((items) => ({
        case: "reports" as const,
        value: { items: items.map((r) => (r === undefined ? {} : { report: r })) },
      }));
    const message: fc.Arbitrary<SessionMessage> = fc.oneof(
      fc.constant(undefined),
      attach.map((value) => ({ case: "attach" as const, value })),
      fc
        .oneof(fc.integer(INT32), fc.integer({ min: 0, max: 3 }))
        .map((n) => ({ case: "credit" as const, value: { n } })),
      report,
      reports,
      text.map((reason) => ({ case: "drain" as const, value: { reason } })),
      fc.bigInt(INT64).map((nonce) => ({ case: "pong" as const, value: { nonce } })),
    );
    const runId = fc.oneof(fc.constantFrom(...runIds), fc.uuid(), fc.string({ maxLength: 300 }));
    const workflowName = fc
      .oneof(fc.constantFrom("fuzz", "nope", ""), fc.string({ maxLength: 70 }))
      .filter((n) => n !== "legit");
    const labels = fc.dictionary(fc.string({ maxLength: 70 }), text, { maxKeys: 3 });
    /** A WorkflowService call that fast-check prints with its request. */
    const rpc = (name: string, req: unknown, run: (c: WorkflowClient) => Promise<unknown>) => ({
      name,
      req,
      run,
      [fc.toStringMethod]: () => `${name}(${fc.stringify(req).slice(0, 2000)})`,
    });
    const startRunRequest = fc.record({
      workflowName,
      workflowVersion: fc.integer(INT32),
      input: optional(shallow),
      idempotencyKey: text,
      labels,
      view: fc.integer({ min: -1, max: 3 }),
    });
    const call = fc.oneof(
      startRunRequest.map((req) => rpc("StartRun", req, (c) => c.startRun(req))),
      fc.array(startRunRequest, { maxLength: 4 }).map((runs) =>
        rpc("StartRuns", { runs }, async (c) => {
          // Each item's error is judged as a call's would be: never INTERNAL or UNKNOWN.
          for (const { result } of (await c.startRuns({ runs })).results) {
            if (result.case === "error" && [Code.Internal, Code.Unknown].includes(result.value.code))
              throw new ConnectError(result.value.message, result.value.code);
          }
        }),
      ),
      fc
        .oneof(
          text.map((value) => ({ case: "specJson" as const, value })),
          fc
            .record({
              name: fc.oneof(fc.constant("fuzz-reg"), fc.string({ maxLength: 70 })),
              version: fc.integer(INT32),
              // A Struct field is plain JSON in protobuf-es, whose numbers may be NaN or ±Infinity.
              input: optional(
                fc
                  .dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.jsonValue({ maxDepth: 2 }), number), {
                    maxKeys: 3,
                  })
                  .map((d) => d as JsonObject),
              ),
              timeout: text,
              steps: fc.array(
                fc.record({
                  id: fc.string({ maxLength: 10 }),
                  type: taskType,
                  input: optional(shallow),
                  dependsOn: fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }),
                  when: text,
                  retry: optional(
                    fc.record({
                      maxAttempts: fc.integer(INT32),
                      initialInterval: text,
                      backoffCoefficient: number,
                      jitter: text,
                    }),
                  ),
                  compensate: optional(fc.record({ type: taskType, input: optional(shallow) })),
                }),
                { maxLength: 3 },
              ),
              output: optional(shallow),
            })
            .map((spec) => ({ case: "spec" as const, value: create(WorkflowSpecSchema, spec) })),
        )
        .map((definition) => rpc("RegisterWorkflow", definition, (c) => c.registerWorkflow({ definition }))),
      runId.map((id) => rpc("GetRun", id, (c) => c.getRun({ runId: id }))),
      fc
        .record({
          workflowName,
          statuses: fc.array(fc.integer({ min: -1, max: 12 }), { maxLength: 3 }),
          labels,
          createdAfter: optional(timestamp),
          createdBefore: optional(timestamp),
          pageSize: fc.integer(INT32),
          pageToken: text,
        })
        .map((req) => rpc("ListRuns", req, (c) => c.listRuns(req))),
      fc
        .record({ runId, reason: text, compensate: fc.boolean() })
        .map((req) => rpc("CancelRun", req, (c) => c.cancelRun(req))),
    );

    let sent = 0;
    let calls = 0;
    await fc.assert(
      fc.asyncProperty(
        optional(firstAttach),
        fc.array(message, { maxLength: 25 }),
        fc.array(call, { maxLength: 3 }),
        async (first, messages, requests) => {
          const s = new RawSession(address);
          try {
            if (first !== undefined) s.send({ case: "attach", value: first });
            for (const m of messages) s.send(m);
            sent += messages.length + (first === undefined ? 0 : 1);
            // Half-closing makes the scheduler answer with a status once it handled every message
            // (no Pong may follow the half-close: grpc-js would fail the stream instead).
            s.autoPong = false;
            s.stream.end();
            await waitFor("the session's status", () => s.status, 30_000).catch((e: unknown) => {
              throw new Error(`the session never ended\n${scheduler.tail(40)}`, { cause: e });
            });
          } finally {
            s.close();
          }
          for (const request of requests) {
            calls++;
            const e: unknown = await request.run(client).then(
              () => undefined,
              (x: unknown) => x,
            );
            if (e === undefined) continue;
            assert.ok(e instanceof ConnectError, `not a ConnectError: ${e instanceof Error ? e.stack : "?"}`);
            assert.ok(
              e.code !== Code.Internal && e.code !== Code.Unknown,
              `${request[fc.toStringMethod]()} answered ${Code[e.code]}: ${e.rawMessage}`,
            );
          }
          await assertUp(`after ${sent} session messages and ${calls} requests`);
        },
      ),
      { numRuns: 20, endOnFailure: true },
    );
    assert.ok(sent >= 50, `only ${sent} session messages were sent`);
  });

  it("a legitimate executor still attaches, leases and completes a run end to end", T, async () => {
    await assertUp("before the legitimate executor");
    const runId = await startRun(client, "legit", { n: 7 });
    const executor = new RawSession(address);
    try {
      executor.send({
        case: "attach",
        value: { executorId: "legit-executor", taskTypes: ["legit.task"], slots: 1 },
      });
      await executor.next("attachAck");
      executor.send({ case: "credit", value: { n: 1 } });
      const lease = await executor.next("lease");
      assert.equal(lease.runId, runId);
      executor.send({ case: "started", value: { key: lease.key } });
      executor.send({
        case: "completed",
        value: { key: lease.key, output: jsonToValue({ done: true }) },
      });
      const run = await waitForRun(client, runId);
      assert.equal(run.status, RunStatus.SUCCEEDED);
      assert.equal(run.tasks[0]?.attempts.length, 1);
    } finally {
      executor.close();
    }
    await assertUp("after the legitimate run");
  });
});
