/**
 * The client against a REAL scheduler and PostgreSQL with authentication on, and a real executor:
 * tokens (fixed, and a function asked for every attempt), typed errors, startRun and waitForRun,
 * and retries of UNAVAILABLE while the scheduler is stopped and started again on the same port
 * (only for idempotent calls); then the same calls through a real gateway over Connect and gRPC.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, afterEach, before, describe, it } from "node:test";
import {
  Code,
  ConnectError,
  NexusflowClient,
  type Run,
  RunStatus,
  type TokenProvider,
  type WatchRunResponse,
  fieldViolations,
  isNexusflowClientError,
  isRpcError,
  runOutput,
} from "@nexusflow/client";
import { Executor, TaskError, bearerToken } from "@nexusflow/executor";
import { type Gateway, createGateway } from "@nexusflow/gateway";
import { waitFor } from "@nexusflow/common/testing";
import { type TestStack, startTestStack, testLogger } from "./support.js";

const T = { timeout: 90_000 };

const GREET = {
  name: "client-greet",
  version: 1,
  steps: [{ id: "greet", type: "client-greet", input: { name: "{{ input.name }}" } }],
  output: { greeting: "{{ steps.greet.output.greeting }}" },
};
const DECLINE = {
  name: "client-decline",
  version: 1,
  steps: [{ id: "charge", type: "client-decline", input: {} }],
};
/** Its task type has no executor until a test starts one: its runs wait. */
const LATER = {
  name: "client-later",
  version: 1,
  steps: [{ id: "later", type: "client-later", input: { v: "{{ input.v }}" } }],
  output: { v: "{{ steps.later.output.v }}" },
};

/** A token function that records the method of every request it is asked for. */
function recordingToken(token: string): { provider: TokenProvider; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    provider: ({ method }) => {
      calls.push(method.slice(method.lastIndexOf("/") + 1));
      return token;
    },
  };
}

const count = (calls: readonly string[], method: string): number => calls.filter((m) => m === method).length;

/** Clients a test opened, closed after it. */
const opened: NexusflowClient[] = [];
function open(options: ConstructorParameters<typeof NexusflowClient>[0]): NexusflowClient {
  const client = new NexusflowClient(options);
  opened.push(client);
  return client;
}
afterEach(() => {
  for (const c of opened.splice(0)) c.close();
});

/** Fast retries, enough of them to outlast a scheduler restart. */
const PATIENT = { maxAttempts: 1_000, initialDelayMs: 10, maxDelayMs: 100 };

describe("NexusflowClient against a real scheduler (authentication on)", () => {
  let stack: TestStack;
  let executor: Executor;
  let admin: string;
  let client: NexusflowClient;

  const startExecutor = async (id: string, register: (e: Executor) => void): Promise<Executor> => {
    const e = new Executor({
      schedulerAddress: stack.address,
      executorId: id,
      slots: 4,
      // Its reconnection warnings while the scheduler is stopped are expected here.
      logger: testLogger("executor", "error"),
      reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
      metadata: bearerToken(() => stack.sign("executor", id)),
    });
    register(e);
    await e.start();
    return e;
  };

  before(async () => {
    stack = await startTestStack();
    admin = await stack.sign("admin");
    executor = await startExecutor("client-executor", (e) => {
      e.register("client-greet", (input: { name: string }) => ({ greeting: `hello ${input.name}` }));
      e.register("client-decline", () => {
        throw TaskError.terminal("CARD_DECLINED", "card declined");
      });
    });
    client = new NexusflowClient({ baseUrl: stack.address, token: admin });
    for (const spec of [GREET, DECLINE, LATER]) await client.registerWorkflow(spec);
  });

  after(async () => {
    client?.close();
    await executor?.stop();
    await stack?.close();
  });

  it("sends a fixed token; without one the scheduler answers UNAUTHENTICATED", T, async () => {
    const listed = await client.workflows.listWorkflows({ name: "client-greet" });
    assert.deepEqual(
      listed.workflows.map((w) => w.name),
      ["client-greet"],
    );
    const anonymous = open({ baseUrl: stack.address });
    await assert.rejects(anonymous.workflows.listWorkflows({}), (e: unknown) =>
      isRpcError(e, Code.Unauthenticated),
    );
  });

  it("asks the token function for every call and sends what it returns", T, async () => {
    const reader = await stack.sign("workflows:read");
    const writer = await stack.sign("runs:write");
    const calls: string[] = [];
    const rotating = open({
      baseUrl: `http://${stack.address}`,
      token: ({ method }) => {
        calls.push(method);
        return calls.length === 1 ? reader : writer;
      },
    });
    await rotating.workflows.listWorkflows({});
    // The second call carries the second token, which lacks workflows:read.
    await assert.rejects(rotating.workflows.listWorkflows({}), (e: unknown) =>
      isRpcError(e, Code.PermissionDenied),
    );
    assert.deepEqual(calls, [
      "nexusflow.v1.WorkflowService/ListWorkflows",
      "nexusflow.v1.WorkflowService/ListWorkflows",
    ]);
  });

  it("fails a call whose token function throws with UNAUTHENTICATED, without sending it", T, async () => {
    const sealed = new Error("vault sealed");
    // Nothing listens there: a request that went out would fail UNAVAILABLE instead.
    const failing = open({
      baseUrl: "http://127.0.0.1:1",
      token: () => Promise.reject(sealed),
    });
    const error = await failing.getRun(randomUUID()).catch((e: unknown) => e);
    assert.ok(isRpcError(error, Code.Unauthenticated), String(error));
    assert.equal(error.cause, sealed);
    const empty = open({ baseUrl: "http://127.0.0.1:1", token: () => "" });
    await assert.rejects(empty.getRun(randomUUID()), (e: unknown) => isRpcError(e, Code.Unauthenticated));
  });

  it("starts a run with an idempotency key and waits for the handler's output", T, async () => {
    const key = `greet-${randomUUID()}`;
    const first = await client.startRun({
      workflowName: "client-greet",
      input: { name: "Ada" },
      idempotencyKey: key,
    });
    const again = await client.startRun({
      workflowName: "client-greet",
      input: { name: "Ada" },
      idempotencyKey: key,
    });
    assert.equal(first.created, true);
    assert.equal(again.created, false);
    assert.equal(again.run.id, first.run.id);
    const done = await client.waitForRun(first.run.id, { signal: AbortSignal.timeout(60_000) });
    assert.equal(RunStatus[done.status], "SUCCEEDED");
    assert.deepEqual(runOutput(done), { greeting: "hello Ada" });
    // Without a key of its own, every startRun still carries one (so its retries are safe).
    const unkeyed = await client.startRun({ workflowName: "client-greet", input: { name: "Bo" } });
    assert.match(unkeyed.run.idempotencyKey, /^[0-9a-f-]{36}$/);
  });

  it(
    "starts many runs in one call: each its own result, errors with their fields, keys kept",
    T,
    async () => {
      const key = `bulk-${randomUUID()}`;
      const results = await client.startRuns([
        { workflowName: "client-greet", input: { name: "Ann" }, idempotencyKey: key },
        { workflowName: "client-nope", input: {} },
        { workflowName: "client-greet", input: { name: "Ben" } },
      ]);
      assert.equal(results.length, 3);
      const [first, missing, third] = results;
      assert.ok(first?.ok === true && third?.ok === true, "runs[0] and runs[2] started");
      assert.ok(missing?.ok === false);
      assert.equal(missing.error.code, Code.NotFound);
      assert.match(missing.error.rawMessage, /^runs\[1\]: workflow client-nope is not registered/);
      // Every request carries a key, so the whole call may be retried: the same key, the same run.
      assert.match(third.run.idempotencyKey, /^[0-9a-f-]{36}$/);
      const [again] = await client.startRuns([
        { workflowName: "client-greet", input: { name: "Ann" }, idempotencyKey: key },
      ]);
      assert.ok(again?.ok === true);
      assert.deepEqual([again.run.id, again.created], [first.run.id, false]);
      const done = await client.waitForRun(third.run.id, { signal: AbortSignal.timeout(60_000) });
      assert.deepEqual(runOutput(done), { greeting: "hello Ben" });
      // An item's field violations name it; the call itself fails only when malformed as a whole.
      const [bad] = await client.startRuns([{ workflowName: "" }]);
      assert.ok(bad?.ok === false);
      assert.deepEqual(
        fieldViolations(bad.error).map((v) => v.field),
        ["runs[0].workflow_name"],
      );
      await assert.rejects(client.startRuns([]), (e: unknown) => isRpcError(e, Code.InvalidArgument));
    },
  );

  it(
    "gives unary calls the default deadline, not streams, and runs the caller's interceptors",
    T,
    async () => {
      const sent: { method: string; timeout: string | null }[] = [];
      const watching = open({
        baseUrl: stack.address,
        token: admin,
        timeoutMs: 45_000,
        interceptors: [
          (next) => (req) => {
            sent.push({ method: req.method.name, timeout: req.header.get("grpc-timeout") });
            return next(req);
          },
        ],
      });
      const { run } = await watching.startRun({ workflowName: "client-greet", input: { name: "Eve" } });
      await watching.waitForRun(run.id);
      await watching.getRun(run.id, { timeoutMs: 5_000 });
      assert.deepEqual(sent, [
        { method: "StartRun", timeout: "45000m" },
        { method: "WatchRun", timeout: null },
        { method: "GetRun", timeout: "5000m" },
      ]);
    },
  );

  it("waits for failed runs too, with their error", T, async () => {
    const { run } = await client.startRun({ workflowName: "client-decline" });
    const done = await client.waitForRun(run.id);
    assert.equal(RunStatus[done.status], "FAILED");
    assert.equal(done.error?.type, "CARD_DECLINED");
  });

  it("hands every WatchRun message to onMessage, the last one (the run ended) included", T, async () => {
    const { run } = await client.startRun({ workflowName: "client-greet", input: { name: "Max" } });
    const messages: WatchRunResponse[] = [];
    const updates: Run[] = [];
    const done = await client.waitForRun(run.id, {
      onMessage: (m) => messages.push(m),
      onUpdate: (r) => updates.push(r),
    });
    assert.equal(messages.length, updates.length + 1, "onUpdate has every message but the last");
    updates.forEach((r, i) => assert.equal(messages[i]?.run, r));
    assert.equal(messages.at(-1)?.run, done);
    assert.equal(RunStatus[done.status], "SUCCEEDED");
  });

  it("rejects with what onMessage or onUpdate throws, as it is, not as an RPC error", T, async () => {
    class CallerError extends Error {
      override name = "CallerError";
    }
    const { run } = await client.startRun({ workflowName: "client-greet", input: { name: "Eve" } });
    const thrown = new CallerError("the caller's own bug");
    await assert.rejects(
      client.waitForRun(run.id, {
        onMessage: () => {
          throw thrown;
        },
      }),
      (e: unknown) => e === thrown,
    );
    // The run goes on: waiting again sees it end.
    assert.equal(RunStatus[(await client.waitForRun(run.id)).status], "SUCCEEDED");
  });

  it(
    "reports errors by code: INVALID_ARGUMENT with every path, NOT_FOUND, and the client's own",
    T,
    async () => {
      const invalid = await client
        .registerWorkflow({
          name: "client-bad",
          version: 1,
          steps: [{ id: "a", type: "noop", dependsOn: ["nope"] }],
        })
        .catch((e: unknown) => e);
      assert.ok(isRpcError(invalid, Code.InvalidArgument), String(invalid));
      assert.ok(
        fieldViolations(invalid).some((v) => v.field === "$.steps[0].dependsOn[0]"),
        JSON.stringify(fieldViolations(invalid)),
      );
      await assert.rejects(client.getRun(randomUUID()), (e: unknown) => isRpcError(e, Code.NotFound));
      await assert.rejects(client.waitForRun(randomUUID()), (e: unknown) => isRpcError(e, Code.NotFound));
      const cyclic: Record<string, unknown> = {};
      cyclic["self"] = cyclic;
      await assert.rejects(
        client.startRun({ workflowName: "client-greet", input: { when: () => 1 } as never }),
        (e: unknown) => isNexusflowClientError(e, "INVALID_INPUT"),
      );
      await assert.rejects(client.registerWorkflow(cyclic as never), (e: unknown) =>
        isNexusflowClientError(e, "INVALID_INPUT"),
      );
      assert.throws(
        () => new NexusflowClient({ baseUrl: "ftp://example.com" }),
        (e: unknown) => isNexusflowClientError(e, "INVALID_OPTIONS"),
      );
    },
  );

  it(
    "ends waitForRun when the caller's signal aborts (CANCELED) or timeoutMs passes (DEADLINE_EXCEEDED)",
    T,
    async () => {
      const { run } = await client.startRun({ workflowName: "client-later", input: { v: 1 } });
      const controller = new AbortController();
      const seen: RunStatus[] = [];
      const cancelled = await client
        .waitForRun(run.id, {
          signal: controller.signal,
          onUpdate: (r) => {
            seen.push(r.status);
            controller.abort();
          },
        })
        .catch((e: unknown) => e);
      assert.ok(isRpcError(cancelled, Code.Canceled), String(cancelled));
      assert.equal(seen.length, 1, "the watch was open (it reported the waiting run) when it was cancelled");
      await assert.rejects(client.waitForRun(run.id, { timeoutMs: 100 }), (e: unknown) =>
        isRpcError(e, Code.DeadlineExceeded),
      );
      await assert.rejects(client.getRun(run.id, { signal: AbortSignal.abort() }), (e: unknown) =>
        isRpcError(e, Code.Canceled),
      );
      const cancelledRun = await client.cancelRun(run.id, { reason: "test over" });
      assert.equal(RunStatus[cancelledRun.status], "CANCELLED");
      assert.equal(RunStatus[(await client.waitForRun(run.id)).status], "CANCELLED");
    },
  );

  describe("while the scheduler is stopped", () => {
    it("retries idempotent calls until it is back: GetRun, and StartRun with a key (once)", T, async () => {
      const { run: existing } = await client.startRun({
        workflowName: "client-greet",
        input: { name: "Cy" },
      });
      const { provider, calls } = recordingToken(admin);
      const patient = open({ baseUrl: stack.address, token: provider, retry: PATIENT });
      await stack.stopScheduler();
      const key = `restart-${randomUUID()}`;
      const getting = patient.getRun(existing.id);
      const starting = patient.startRun({
        workflowName: "client-greet",
        input: { name: "Di" },
        idempotencyKey: key,
      });
      // Each attempt asks for the token: several of each have failed before the scheduler returns.
      await waitFor(
        "retries of GetRun and StartRun",
        () => count(calls, "GetRun") >= 3 && count(calls, "StartRun") >= 3,
      );
      await stack.startScheduler();
      assert.equal((await getting).id, existing.id);
      const started = await starting;
      assert.equal(started.created, true);
      const again = await patient.startRun({
        workflowName: "client-greet",
        input: { name: "Di" },
        idempotencyKey: key,
      });
      assert.equal(again.run.id, started.run.id);
      assert.equal(again.created, false);
      const done = await patient.waitForRun(started.run.id);
      assert.deepEqual(runOutput(done), { greeting: "hello Di" });
    });

    it(
      "does not retry what is not idempotent, nor beyond maxAttempts, nor with retry: false",
      T,
      async () => {
        const { provider, calls } = recordingToken(admin);
        const patient = open({ baseUrl: stack.address, token: provider, retry: PATIENT });
        const brief = open({
          baseUrl: stack.address,
          token: provider,
          retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 5 },
        });
        const never = open({ baseUrl: stack.address, token: provider, retry: false });
        await stack.stopScheduler();
        try {
          const unavailable = (e: unknown): boolean => isRpcError(e, Code.Unavailable);
          // StartRun without an idempotency key may have started a run before the connection failed.
          await assert.rejects(patient.workflows.startRun({ workflowName: "client-greet" }), unavailable);
          assert.equal(count(calls, "StartRun"), 1);
          await assert.rejects(brief.workflows.listRuns({}), unavailable);
          assert.equal(count(calls, "ListRuns"), 3);
          await assert.rejects(never.workflows.getWorkflow({ name: "client-greet" }), unavailable);
          assert.equal(count(calls, "GetWorkflow"), 1);
          // Retries stay within the call's deadline: the client's, or the call's own.
          const deadline = (e: unknown): boolean => isRpcError(e, Code.DeadlineExceeded);
          const bounded = open({ baseUrl: stack.address, token: provider, retry: PATIENT, timeoutMs: 200 });
          await assert.rejects(bounded.workflows.listWorkflows({}), deadline);
          await assert.rejects(patient.workflows.listWorkflows({}, { timeoutMs: 200 }), deadline);
          assert.ok(count(calls, "ListWorkflows") > 2, "retried until the deadline");
        } finally {
          await stack.startScheduler();
        }
      },
    );

    it("keeps waitForRun waiting across a restart: it watches again", T, async () => {
      const { provider } = recordingToken(admin);
      const patient = open({ baseUrl: stack.address, token: provider, retry: PATIENT });
      const { run } = await patient.startRun({ workflowName: "client-later", input: { v: "after" } });
      // Messages, not updates: the watch opened again after the restart may find the run ended
      // already (its executor is quick), and a run's last message is no update but the result.
      let updates = 0;
      const waiting = patient.waitForRun(run.id, { onMessage: () => updates++ });
      await waitFor("the watch to report the waiting run", () => updates === 1);
      await stack.stopScheduler();
      await stack.startScheduler();
      const later = await startExecutor("client-later-executor", (e) =>
        e.register("client-later", (input: { v: string }) => ({ v: input.v })),
      );
      try {
        const done = await waiting;
        assert.equal(RunStatus[done.status], "SUCCEEDED");
        assert.deepEqual(runOutput(done), { v: "after" });
        assert.ok(updates >= 2, `watched again after the restart (${updates} updates)`);
      } finally {
        await later.stop();
      }
    });
  });

  describe("through the gateway", () => {
    let gateway: Gateway;
    let url: string;

    before(async () => {
      gateway = createGateway({ schedulerAddress: stack.address, port: 0, verifier: stack.verifier });
      ({ url } = await gateway.listen());
    });

    after(async () => {
      await gateway?.close();
    });

    for (const [protocol, httpVersion] of [
      ["connect", "1.1"],
      ["connect", "2"],
      ["grpc", "2"],
    ] as const) {
      it(`starts and waits for a run over ${protocol} (HTTP/${httpVersion})`, T, async () => {
        const { provider, calls } = recordingToken(admin);
        const viaGateway = open({ baseUrl: url, protocol, httpVersion, token: provider });
        const { run } = await viaGateway.startRun({
          workflowName: "client-greet",
          input: { name: protocol },
        });
        const done = await viaGateway.waitForRun(run.id, { signal: AbortSignal.timeout(60_000) });
        assert.deepEqual(runOutput(done), { greeting: `hello ${protocol}` });
        assert.deepEqual(calls.slice(0, 2), ["StartRun", "WatchRun"]);
        const missing = await viaGateway.getRun(randomUUID()).catch((e: unknown) => e);
        assert.ok(missing instanceof ConnectError && missing.code === Code.NotFound, String(missing));
      });
    }
  });
});
