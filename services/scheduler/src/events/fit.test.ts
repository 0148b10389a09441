/** An event larger than a topic takes, made lighter: its data first, then its texts and lists. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { jsonToValue } from "@nexusflow/common";
import { LifecycleEventSchema, RunStatus } from "@nexusflow/gen";
import { fitEvent, TRUNCATED_TEXT_CHARS } from "./fit.js";

const TIME = timestampFromDate(new Date("2026-12-07T10:00:00.000Z"));

function encode(event: NonNullable<MessageInitShape<typeof LifecycleEventSchema>["event"]>): Uint8Array {
  return toBinary(
    LifecycleEventSchema,
    create(LifecycleEventSchema, {
      eventId: "5f0c3a52-8a3e-4a55-b0f1-3d1e2c4b5a69",
      runId: "0b6d9d4e-8f53-4d59-9f0b-8a4b7b1c2d3e",
      sequence: 7n,
      time: TIME,
      workflowName: "wf",
      workflowVersion: 3,
      event,
    }),
  );
}

const big = (n: number): string => "x".repeat(n);

describe("fitEvent", () => {
  it("keeps the very bytes of an event that fits, overhead included", () => {
    const payload = encode({
      case: "runStarted",
      value: { input: jsonToValue({ text: big(1000) }) },
    });
    const exact = fitEvent(payload, 100, payload.byteLength + 100);
    assert.equal(exact.truncated, false);
    assert.equal(exact.payload, payload);
    // One byte less and the same event no longer fits.
    assert.equal(fitEvent(payload, 100, payload.byteLength + 99).truncated, true);
  });

  it("leaves a run's input out and keeps the rest of the event", () => {
    const payload = encode({
      case: "runStarted",
      value: {
        input: jsonToValue({ text: big(200_000) }),
        idempotencyKey: "order-17",
        labels: { team: "payments" },
        rerunOf: "r0",
      },
    });
    const fitted = fitEvent(payload, 200, 64 * 1024);
    assert.equal(fitted.truncated, true);
    assert.ok(fitted.payload.byteLength + 200 <= 64 * 1024);
    const event = fromBinary(LifecycleEventSchema, fitted.payload);
    assert.equal(event.truncated, true);
    assert.equal(event.runId, "0b6d9d4e-8f53-4d59-9f0b-8a4b7b1c2d3e");
    assert.equal(event.sequence, 7n);
    assert.equal(event.workflowName, "wf");
    assert.deepEqual(event.time, TIME);
    assert.equal(event.event.case, "runStarted");
    if (event.event.case !== "runStarted") return;
    assert.equal(event.event.value.input, undefined);
    assert.equal(event.event.value.idempotencyKey, "order-17");
    assert.deepEqual(event.event.value.labels, { team: "payments" });
    assert.equal(event.event.value.rerunOf, "r0");
  });

  it("leaves out a task's output, and a run's output and error details, nested in messages", () => {
    const succeeded = fromBinary(
      LifecycleEventSchema,
      fitEvent(
        encode({
          case: "taskSucceeded",
          value: { taskRunId: "t1", stepId: "charge", attempt: 2, output: jsonToValue([big(100_000)]) },
        }),
        0,
        10_000,
      ).payload,
    );
    assert.equal(succeeded.event.case, "taskSucceeded");
    if (succeeded.event.case === "taskSucceeded") {
      assert.equal(succeeded.event.value.output, undefined);
      assert.equal(succeeded.event.value.stepId, "charge");
      assert.equal(succeeded.event.value.attempt, 2);
    }
    const completed = fromBinary(
      LifecycleEventSchema,
      fitEvent(
        encode({
          case: "runCompleted",
          value: {
            status: RunStatus.FAILED,
            output: jsonToValue({ partial: big(50_000) }),
            error: { type: "CardDeclined", message: "declined", details: jsonToValue({ raw: big(50_000) }) },
          },
        }),
        0,
        10_000,
      ).payload,
    );
    assert.equal(completed.truncated, true);
    assert.equal(completed.event.case, "runCompleted");
    if (completed.event.case === "runCompleted") {
      assert.equal(completed.event.value.status, RunStatus.FAILED);
      assert.equal(completed.event.value.output, undefined);
      assert.equal(completed.event.value.error?.type, "CardDeclined");
      assert.equal(completed.event.value.error?.message, "declined");
      assert.equal(completed.event.value.error?.details, undefined);
    }
  });

  it("cuts texts and empties lists and maps only when leaving the data out is not enough", () => {
    const labels = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`label-${i}`, big(100)]));
    const payload = encode({
      case: "runStarted",
      value: { input: jsonToValue(big(10)), idempotencyKey: big(20_000), labels },
    });
    const fitted = fitEvent(payload, 0, 8 * 1024);
    assert.ok(fitted.payload.byteLength <= 8 * 1024, `${fitted.payload.byteLength} bytes`);
    const event = fromBinary(LifecycleEventSchema, fitted.payload);
    assert.equal(event.truncated, true);
    assert.equal(event.event.case, "runStarted");
    if (event.event.case !== "runStarted") return;
    assert.equal(event.event.value.input, undefined);
    assert.deepEqual(event.event.value.labels, {});
    assert.ok(event.event.value.idempotencyKey.startsWith(big(TRUNCATED_TEXT_CHARS)));
    assert.match(event.event.value.idempotencyKey, /… \(18976 more characters\)$/);

    const compensating = fromBinary(
      LifecycleEventSchema,
      fitEvent(
        encode({
          case: "runCompensating",
          value: { stepIds: Array.from({ length: 5000 }, (_, i) => `step-${i}`), reason: "failed" },
        }),
        0,
        4096,
      ).payload,
    );
    assert.equal(compensating.event.case, "runCompensating");
    if (compensating.event.case === "runCompensating") {
      assert.deepEqual(compensating.event.value.stepIds, []);
      assert.equal(compensating.event.value.reason, "failed");
    }
  });

  it("cuts a failure's long message once leaving its details out is not enough", () => {
    const payload = encode({
      case: "taskFailed",
      value: {
        taskRunId: "t1",
        stepId: "s",
        attempt: 1,
        error: { type: "E", message: big(16_000), details: jsonToValue({ a: 1 }) },
        final: true,
      },
    });
    const event = fromBinary(LifecycleEventSchema, fitEvent(payload, 0, 4096).payload);
    assert.equal(event.event.case, "taskFailed");
    if (event.event.case !== "taskFailed") return;
    assert.equal(event.event.value.error?.details, undefined);
    assert.equal(event.event.value.error?.type, "E");
    assert.equal(event.event.value.final, true);
    assert.ok((event.event.value.error?.message.length ?? 0) < 1100);
  });
});
