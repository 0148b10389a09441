import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Logger, createLogger } from "@nexusflow/common";
import { startTestTracing } from "@nexusflow/common/telemetry/testing";
import { trace } from "@opentelemetry/api";
import { type Lease, type LeaseKey, LeaseSchema } from "@nexusflow/gen";
import { waitFor } from "./handlers/test-context.js";
import type { TaskHandler } from "./handlers/types.js";
import { MemoryLogSink } from "./log-sink.js";
import { TaskAttempt, type TaskAttemptDeps } from "./task-attempt.js";
import { toValue } from "./payload.js";
import { TaskError } from "./handlers/task-error.js";

function attempt(
  init: Partial<Pick<Lease, "deadline" | "heartbeatTimeoutMs" | "traceContext">> = {},
  heartbeats: unknown[] = [],
  deps: Partial<TaskAttemptDeps> = {},
) {
  const lease = create(LeaseSchema, {
    key: { taskRunId: "tr", attempt: 1, fencingToken: 1n },
    runId: "run",
    stepId: "step",
    taskType: "test",
    input: fromJson(ValueSchema, { n: 1 }),
    ...init,
  }) as Lease & { key: LeaseKey };
  const silent = createLogger("test", "silent");
  return new TaskAttempt(lease, {
    logSink: new MemoryLogSink(),
    logger: () => silent,
    maxPayloadBytes: 100,
    sendHeartbeat: (_key, progress: JsonValue | undefined) => heartbeats.push(progress),
    ...deps,
  });
}

/** `levels` arrays, one in the other, around 1. */
function nested(levels: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < levels; i++) value = [value];
  return value;
}

/** A logger that records its warnings' messages. */
function recordingLogger(warnings: string[]): Logger {
  const logger = createLogger("test", "silent");
  logger.warn = ((_fields: unknown, message: string) => void warnings.push(message)) as Logger["warn"];
  return logger;
}

/** Rejects once the signal aborts, with a generic error (as a killed child process would). */
const genericOnAbort: TaskHandler = (_input, ctx) =>
  new Promise((_resolve, reject) =>
    ctx.signal.addEventListener("abort", () => reject(new Error("socket hang up")), { once: true }),
  );

describe("TaskAttempt", () => {
  it("passes the input and returns the output", async () => {
    const outcome = await attempt().run((input) => ({ got: input }));
    assert.deepEqual(outcome, { status: "completed", output: { got: { n: 1 } }, logs: undefined });
  });

  it("fails an output that is too large or not JSON, terminally", async () => {
    const big = await attempt().run(() => "x".repeat(200));
    assert.equal(big.status === "failed" && big.failure.type, "OUTPUT_TOO_LARGE");
    const bigint = await attempt().run(() => ({ n: 1n }));
    assert.equal(bigint.status === "failed" && bigint.failure.type, "INVALID_OUTPUT");
    assert.equal(bigint.status === "failed" && bigint.failure.retryable, false);
  });

  it("looks for a NUL character in the output as sent (toJSON applied), and takes a cycle behind a toJSON", async () => {
    /** A tree node that points back at its parent and says what to send. */
    class Node {
      parent: Node | undefined;
      readonly children: Node[] = [];
      constructor(readonly name: string) {}
      toJSON(): unknown {
        return { name: this.name, children: this.children };
      }
    }
    const root = new Node("r");
    const child = new Node("c");
    child.parent = root;
    root.children.push(child);
    const tree = await attempt().run(() => root);
    assert.deepEqual(tree, {
      status: "completed",
      output: { name: "r", children: [{ name: "c", children: [] }] },
      logs: undefined,
    });
    const hidden = await attempt().run(() => ({ v: { toJSON: () => ({ text: "a\u0000" }) } }));
    assert.equal(hidden.status === "failed" && hidden.failure.type, "INVALID_OUTPUT");
    assert.match(
      hidden.status === "failed" ? hidden.failure.message : "",
      /NUL character .* at output\.v\.text/,
    );
  });

  it("fails an output nested deeper than a report carries, terminally INVALID_OUTPUT saying so", async () => {
    const outcome = await attempt().run(() => nested(49)); // 99 bytes, within the size limit
    assert.equal(outcome.status, "failed");
    assert.deepEqual(outcome.status === "failed" && [outcome.failure.type, outcome.failure.retryable], [
      "INVALID_OUTPUT",
      false,
    ]);
    assert.match(
      outcome.status === "failed" ? outcome.failure.message : "",
      /^the handler's output is nested deeper than 48 levels of arrays and objects/,
    );
    assert.equal((await attempt().run(() => nested(48))).status, "completed");
  });

  it("drops failure details nested deeper than a report carries but keeps the failure", async () => {
    const outcome = await attempt().run(() => {
      throw TaskError.terminal("DEEP", "deep details", { details: nested(49) });
    });
    assert.deepEqual(outcome.status === "failed" && outcome.failure, {
      type: "DEEP",
      message: "deep details",
      retryable: false,
    });
  });

  it("sends heartbeats without progress nested deeper than a report carries, warning once, from the throttle's timer too", async () => {
    const heartbeats: unknown[] = [];
    const warnings: string[] = [];
    // As the executor sends them: as a google.protobuf.Value, which refuses 100 levels.
    const a = attempt({ heartbeatTimeoutMs: 40 }, heartbeats, {
      maxPayloadBytes: 1_000,
      logger: () => recordingLogger(warnings),
      sendHeartbeat: (_key, progress) =>
        heartbeats.push(progress === undefined ? undefined : toValue(progress)),
    });
    const outcome = await a.run(async (_input, ctx) => {
      ctx.heartbeat(nested(100)); // at once
      ctx.heartbeat(nested(100)); // throttled: from a timer, where a throw ends the process
      await waitFor(() => heartbeats.length === 2, "the throttled heartbeat");
      return "done";
    });
    assert.equal(outcome.status, "completed");
    assert.deepEqual(heartbeats, [undefined, undefined]);
    assert.deepEqual(warnings, ["heartbeat progress cannot be sent; sending heartbeats without it"]);
  });

  it("never throws from ctx.heartbeat nor its timer when a heartbeat cannot be sent; tries without progress", async () => {
    const tried: unknown[] = [];
    const warnings: string[] = [];
    const a = attempt({ heartbeatTimeoutMs: 40 }, [], {
      logger: () => recordingLogger(warnings),
      sendHeartbeat: (_key, progress) => {
        tried.push(progress);
        throw new Error("the session cannot take it");
      },
    });
    const outcome = await a.run(async (_input, ctx) => {
      ctx.heartbeat("a"); // at once
      ctx.heartbeat("b"); // from the throttle's timer
      await waitFor(() => tried.length === 4, "the throttled heartbeat");
      return "done";
    });
    assert.equal(outcome.status, "completed");
    assert.deepEqual(tried, ["a", undefined, "b", undefined]);
    assert.deepEqual(warnings, ["could not send a heartbeat"]);
  });

  it("aborts at the lease deadline with a retryable TIMEOUT, whatever the handler throws", async () => {
    const outcome = await attempt({ deadline: timestampFromDate(new Date(Date.now() + 20)) }).run(
      genericOnAbort,
    );
    assert.equal(outcome.status, "failed");
    assert.deepEqual(outcome.status === "failed" && [outcome.failure.type, outcome.failure.retryable], [
      "TIMEOUT",
      true,
    ]);
  });

  it("lets a TaskError thrown after an abort win over the abort reason", async () => {
    const a = attempt();
    const running = a.run(
      (_input, ctx) =>
        new Promise((_r, reject) =>
          ctx.signal.addEventListener("abort", () => reject(TaskError.terminal("MINE", "mine"))),
        ),
    );
    a.abort(TaskError.terminal("CANCELLED", "cancelled"));
    const outcome = await running;
    assert.equal(outcome.status === "failed" && outcome.failure.type, "MINE");
  });

  it("forceSettle stops waiting for a handler that ignores its signal", async () => {
    const a = attempt();
    const running = a.run(() => new Promise(() => {}));
    a.abort(TaskError.retryable("EXECUTOR_SHUTDOWN", "bye"));
    a.forceSettle({ type: "EXECUTOR_SHUTDOWN", message: "bye", retryable: true });
    const outcome = await running;
    assert.deepEqual(outcome.status === "failed" && outcome.failure, {
      type: "EXECUTOR_SHUTDOWN",
      message: "bye",
      retryable: true,
    });
    assert.ok(a.finished);
  });

  it("reports without its log when storing the log fails, hangs past its bound, or the attempt is given up on", async (t) => {
    /** A log sink whose close does what `close` says; counts the closes. */
    const sinkClosing = (close: () => Promise<undefined>) => {
      let closes = 0;
      const logSink: TaskAttemptDeps["logSink"] = {
        open: () => ({
          append: () => undefined,
          close: () => {
            closes++;
            return close();
          },
        }),
      };
      return { logSink, closes: () => closes };
    };
    // Why each log was not stored: the error of each warning.
    const warnings: string[] = [];
    const logger = createLogger("test", "silent");
    logger.warn = (fields: { err: Error }) => void warnings.push(fields.err.message);
    const deps = (logSink: TaskAttemptDeps["logSink"]) => ({ logSink, logger: () => logger });

    const failing = sinkClosing(() => Promise.reject(new Error("disk full")));
    const stored = await attempt({}, [], deps(failing.logSink)).run(() => ({ ok: 1 }));
    assert.deepEqual([stored.status, stored.logs, failing.closes()], ["completed", undefined, 1]);

    const hanging = sinkClosing(() => new Promise<never>(() => undefined));
    const given = attempt({}, [], deps(hanging.logSink));
    const givenUp = given.run(() => ({ ok: 2 }));
    await waitFor(() => hanging.closes() === 1, "the log to be closing");
    given.forceSettle({ type: "EXECUTOR_SHUTDOWN", message: "bye", retryable: true });
    const outcome = await givenUp;
    assert.deepEqual([outcome.status, outcome.logs], ["completed", undefined], "its outcome is kept");

    t.mock.timers.enable({ apis: ["setTimeout"] });
    const slow = sinkClosing(() => new Promise<never>(() => undefined));
    const running = attempt({}, [], deps(slow.logSink)).run(() => ({ ok: 3 }));
    let settled = false;
    void running.then(() => (settled = true));
    for (let i = 0; i < 20 && slow.closes() === 0; i++) await new Promise<void>((r) => setImmediate(r));
    assert.equal(slow.closes(), 1);
    t.mock.timers.tick(59_999);
    await new Promise<void>((r) => setImmediate(r));
    assert.equal(settled, false, "not before its bound");
    t.mock.timers.tick(1);
    const late = await running;
    assert.deepEqual([late.status, late.logs], ["completed", undefined]);
    assert.deepEqual(warnings, [
      "disk full",
      "the attempt was given up on while its log was being stored",
      "storing the task's log took more than 60000 ms",
    ]);
  });

  it("drops failure details that cannot be sent but keeps the failure", async () => {
    const outcome = await attempt().run(() => {
      throw TaskError.retryable("BIG", "big details", { details: "y".repeat(500), retryAfterMs: 10 });
    });
    assert.deepEqual(outcome.status === "failed" && outcome.failure, {
      type: "BIG",
      message: "big details",
      retryable: true,
      retryAfterMs: 10,
    });
  });

  it("throttles heartbeats: the first goes at once, the latest progress follows", async () => {
    const heartbeats: unknown[] = [];
    const a = attempt({ heartbeatTimeoutMs: 200 }, heartbeats); // throttle: 200 / 4 = 50 ms
    let release = (): void => {};
    const running = a.run(async (_input, ctx) => {
      ctx.heartbeat(1);
      ctx.heartbeat(2);
      ctx.heartbeat(3);
      await new Promise<void>((resolve) => (release = resolve));
      return null;
    });
    await waitFor(() => heartbeats.length === 2, "the trailing heartbeat");
    release();
    await running;
    assert.deepEqual(heartbeats, [1, 3]);
  });

  it("heartbeats for a handler registered with automatic heartbeats while it runs, keeping its progress", async () => {
    const heartbeats: unknown[] = [];
    const a = attempt({ heartbeatTimeoutMs: 200 }, heartbeats); // every 50 ms
    let release = (): void => {};
    const running = a.run(
      async (_input, ctx) => {
        await new Promise((resolve) => setTimeout(resolve, 10));
        ctx.heartbeat("half");
        ctx.heartbeat("most");
        await new Promise<void>((resolve) => (release = resolve));
        return null;
      },
      { autoHeartbeat: true },
    );
    await waitFor(() => heartbeats.length >= 5, "automatic heartbeats");
    release();
    await running;
    const sent = heartbeats.length;
    // The handler's latest progress went out, and nothing goes once it has returned.
    assert.deepEqual(heartbeats.slice(0, 2), ["half", "most"]);
    assert.ok(heartbeats.slice(2).every((p) => p === undefined));
    await new Promise((resolve) => setTimeout(resolve, 120));
    assert.equal(heartbeats.length, sent);
  });

  it("sends no automatic heartbeats without a heartbeat timeout, nor for a manual handler", async () => {
    for (const [timeout, auto] of [
      [0, true],
      [200, false],
    ] as const) {
      const heartbeats: unknown[] = [];
      await attempt({ heartbeatTimeoutMs: timeout }, heartbeats).run(
        () => new Promise((resolve) => setTimeout(() => resolve(null), 150)),
        { autoHeartbeat: auto },
      );
      assert.deepEqual(heartbeats, [], `timeout ${timeout}, auto ${auto}`);
    }
  });

  it("runs a sampled-out lease's handler inside the lease's own context, recording nothing; a sampled one in a child span", async () => {
    const tracing = await startTestTracing();
    try {
      const traceId = "0af7651916cd43dd8448eb211c80319c";
      const seen: unknown[] = [];
      const handler: TaskHandler = (_input, ctx) => {
        const active = trace.getActiveSpan()?.spanContext();
        const child = ctx.startSpan("user work");
        seen.push([active?.traceId, active?.spanId, active?.traceFlags, ctx.span.isRecording()]);
        seen.push([child.isRecording(), child.spanContext().traceId]);
        child.end();
        return null;
      };
      const unsampled = `00-${traceId}-b7ad6b7169203331-00`;
      await attempt({ traceContext: { traceparent: unsampled } }).run(handler);
      assert.deepEqual(seen, [
        [traceId, "b7ad6b7169203331", 0, false],
        [false, traceId],
      ]);
      assert.deepEqual(tracing.spans(), []);
      seen.length = 0;
      await attempt({ traceContext: { traceparent: `00-${traceId}-b7ad6b7169203331-01` } }).run(handler);
      const spans = tracing.spans();
      assert.deepEqual(
        spans.map((s) => [s.name, s.spanContext().traceId]),
        [
          ["user work", traceId],
          ["handler test", traceId],
        ],
      );
      assert.equal(spans[1]?.parentSpanContext?.spanId, "b7ad6b7169203331");
      assert.equal(spans[0]?.parentSpanContext?.spanId, spans[1]?.spanContext().spanId);
      assert.deepEqual(seen[0], [traceId, spans[1]?.spanContext().spanId, 1, true]);
    } finally {
      await tracing.stop();
    }
  });
});
