// Tests of ../task-error.ts, kept here beside the handlers that produce these errors.
import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import { describe, it } from "node:test";
import {
  MAX_RETRY_AFTER_MS,
  TaskError,
  cancellationError,
  isTaskError,
  toTaskFailure,
} from "./task-error.js";

describe("TaskError", () => {
  it("carries type, verdict, retry delay, details and cause", () => {
    const cause = new Error("socket hang up");
    const e = TaskError.retryable("HTTP_503", "unavailable", {
      retryAfterMs: 1500,
      details: { a: 1 },
      cause,
    });
    assert.equal(e.name, "TaskError");
    assert.equal(e.type, "HTTP_503");
    assert.equal(e.retryable, true);
    assert.equal(e.retryAfterMs, 1500);
    assert.deepEqual(e.details, { a: 1 });
    assert.equal(e.cause, cause);
    assert.ok(e instanceof Error);
    assert.equal(TaskError.terminal("X", "m").retryable, false);
  });

  it("refuses an empty type and a negative retry delay", () => {
    assert.throws(() => TaskError.terminal("", "m"), TypeError);
    assert.throws(() => TaskError.retryable("X", "m", { retryAfterMs: -1 }), TypeError);
  });

  it("carries a pause of the step's rate limit keys to the report, and refuses an invalid date", () => {
    const until = new Date("2030-01-01T00:00:00Z");
    const e = TaskError.retryable("HTTP_429", "slow down", { pauseKeyUntil: until });
    assert.equal(e.pauseKeyUntil, until);
    assert.equal(toTaskFailure(e).pauseKeyUntilMs, until.getTime());
    assert.equal(toTaskFailure(TaskError.retryable("X", "y")).pauseKeyUntilMs, undefined);
    assert.throws(
      () => TaskError.retryable("X", "y", { pauseKeyUntil: new Date(Number.NaN) }),
      /pauseKeyUntil must be a valid Date/,
    );
  });

  it("cuts a failure's type and message to their bounds, and its retry delay to 30 days", () => {
    const failure = toTaskFailure(
      TaskError.retryable("T".repeat(300), "m".repeat(20_000), { retryAfterMs: 1e20 }),
    );
    assert.equal(failure.type, `${"T".repeat(256)}… (44 more characters)`);
    assert.equal(failure.message, `${"m".repeat(16_384)}… (3616 more characters)`);
    assert.equal(failure.retryAfterMs, MAX_RETRY_AFTER_MS);
    // Cut between the halves of a surrogate pair: the half left is replaced (jsonb refuses one).
    const cut = toTaskFailure(new Error(`${"m".repeat(16_383)}😀`)).message;
    assert.ok(cut.startsWith(`${"m".repeat(16_383)}\ufffd…`), cut.slice(16_380, 16_390));
  });

  it("is recognised by the type guard, also when made by another copy of the class", () => {
    assert.ok(isTaskError(TaskError.terminal("X", "m")));
    const foreign = Object.defineProperty(new Error("m"), Symbol.for("nexusflow.TaskError"), { value: true });
    assert.ok(isTaskError(foreign));
    assert.ok(!isTaskError(new Error("m")));
    assert.ok(!isTaskError("TaskError"));
  });
});

describe("toTaskFailure", () => {
  it("reports a TaskError as is, leaving out absent optional fields", () => {
    assert.deepEqual(toTaskFailure(TaskError.terminal("HTTP_404", "not found")), {
      type: "HTTP_404",
      message: "not found",
      retryable: false,
    });
    assert.deepEqual(
      toTaskFailure(
        TaskError.retryable("HTTP_429", "slow down", { retryAfterMs: 2000, details: { s: 429 } }),
      ),
      {
        type: "HTTP_429",
        message: "slow down",
        retryable: true,
        retryAfterMs: 2000,
        details: { s: 429 },
      },
    );
  });

  it("treats unknown errors as retryable, typed by their name", () => {
    assert.deepEqual(toTaskFailure(new RangeError("out of range")), {
      type: "RangeError",
      message: "out of range",
      retryable: true,
    });
    assert.deepEqual(toTaskFailure("plain string"), {
      type: "Error",
      message: "plain string",
      retryable: true,
    });
    assert.deepEqual(toTaskFailure({ code: 7 }), { type: "Error", message: '{"code":7}', retryable: true });
    assert.equal(toTaskFailure(undefined).type, "Error");
  });

  it("turns an AbortError from a cancelled wait into a non-retryable CANCELLED", async () => {
    const controller = new AbortController();
    const waiting = delay(60_000, undefined, { signal: controller.signal });
    controller.abort();
    const error = await waiting.catch((e: unknown) => e);
    assert.deepEqual(toTaskFailure(error), {
      type: "CANCELLED",
      message: "task was cancelled",
      retryable: false,
    });
    assert.equal(toTaskFailure(new DOMException("aborted", "AbortError")).type, "CANCELLED");
  });

  it("keeps a TaskError given as abort reason, and maps timeouts to a retryable TIMEOUT", async () => {
    const controller = new AbortController();
    const waiting = delay(60_000, undefined, { signal: controller.signal });
    controller.abort(TaskError.retryable("LEASE_LOST", "lease lost"));
    const failure = toTaskFailure(await waiting.catch((e: unknown) => e));
    assert.equal(failure.type, "LEASE_LOST");
    assert.equal(failure.retryable, true);
    assert.deepEqual(
      { type: toTaskFailure(new DOMException("took too long", "TimeoutError")).type, retryable: true },
      { type: "TIMEOUT", retryable: true },
    );
  });
});

describe("cancellationError", () => {
  it("maps the abort reason of a signal", () => {
    const plain = new AbortController();
    plain.abort();
    assert.deepEqual(
      [cancellationError(plain.signal).type, cancellationError(plain.signal).retryable],
      ["CANCELLED", false],
    );
    const shutdown = new AbortController();
    const reason = TaskError.retryable("SHUTDOWN", "executor is shutting down");
    shutdown.abort(reason);
    assert.equal(cancellationError(shutdown.signal), reason);
    const timedOut = AbortSignal.abort(new DOMException("deadline", "TimeoutError"));
    assert.deepEqual(
      [cancellationError(timedOut).type, cancellationError(timedOut).retryable],
      ["TIMEOUT", true],
    );
  });
});
