import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TaskError } from "./task-error.js";
import { noopHandler } from "./noop.js";
import { sleepHandler } from "./sleep.js";
import { createTestContext } from "./test-context.js";

describe("sleep handler", () => {
  it("waits for the duration and reports it", async () => {
    const { ctx } = createTestContext();
    const started = Date.now();
    assert.deepEqual(await sleepHandler({ duration: "30ms" }, ctx), { sleptMs: 30 });
    assert.ok(Date.now() - started >= 25);
    assert.deepEqual(await sleepHandler({ duration: "0s" }, ctx), { sleptMs: 0 });
  });

  it("rejects with CANCELLED when the task is cancelled", async () => {
    const { ctx, controller } = createTestContext();
    const sleeping = Promise.resolve(sleepHandler({ duration: "1h" }, ctx));
    controller.abort();
    await assert.rejects(
      sleeping,
      (e: unknown) => e instanceof TaskError && e.type === "CANCELLED" && !e.retryable,
    );
  });

  it("rejects with the abort reason when that is a TaskError", async () => {
    const { ctx, controller } = createTestContext();
    const reason = TaskError.retryable("LEASE_LOST", "lease lost");
    const sleeping = Promise.resolve(sleepHandler({ duration: "1h" }, ctx));
    controller.abort(reason);
    await assert.rejects(sleeping, (e: unknown) => e === reason);
  });

  it("does not start when already cancelled", async () => {
    const { ctx, controller } = createTestContext();
    controller.abort();
    await assert.rejects(Promise.resolve(sleepHandler({ duration: "1h" }, ctx)), { type: "CANCELLED" });
  });

  it("refuses bad input naming the field", async () => {
    const { ctx } = createTestContext();
    const invalid = (message: RegExp) => (e: unknown) =>
      e instanceof TaskError && e.type === "INVALID_INPUT" && !e.retryable && message.test(e.message);
    await assert.rejects(
      Promise.resolve(sleepHandler({ duration: "soon" }, ctx)),
      invalid(/^duration: invalid duration "soon"/),
    );
    await assert.rejects(Promise.resolve(sleepHandler({}, ctx)), invalid(/^duration: is required/));
    await assert.rejects(
      Promise.resolve(sleepHandler({ duration: 5 }, ctx)),
      invalid(/^duration: expected a duration string/),
    );
    await assert.rejects(
      Promise.resolve(sleepHandler("5s", ctx)),
      invalid(/^input: expected an object, got string/),
    );
    await assert.rejects(
      Promise.resolve(sleepHandler({ duration: "1s", extra: 1 }, ctx)),
      invalid(/^extra: unknown field/),
    );
  });
});

describe("noop handler", () => {
  it("returns its input, and null for no input", async () => {
    const { ctx } = createTestContext();
    assert.deepEqual(await noopHandler({ a: [1, 2] }, ctx), { a: [1, 2] });
    assert.equal(await noopHandler(undefined, ctx), null);
    assert.equal(await noopHandler(0, ctx), 0);
  });
});
