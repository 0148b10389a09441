/**
 * What an ended attempt reports to the scheduler: Completed with its output (or the claim check
 * of an offloaded one), or Failed with its error, each with where its log went.
 */
import { type JsonValue, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CompletedSchema, FailedSchema, type LeaseKey, TaskErrorSchema } from "@nexusflow/gen";
import { toValue } from "./payload.js";
import type { Report } from "./report-ledger.js";
import type { AttemptOutcome } from "./task-attempt.js";

/** The Completed or Failed report of an attempt on `key`'s lease that ended with `outcome`. */
export function outcomeReport(key: LeaseKey, outcome: AttemptOutcome): Report {
  if (outcome.status === "completed") {
    // A claim check replaces the output: the value itself stays in the artifact store.
    const value =
      outcome.outputRef === undefined
        ? create(CompletedSchema, { key, output: toValue(outcome.output) })
        : create(CompletedSchema, { key, outputRef: outcome.outputRef });
    if (outcome.logs !== undefined) value.logs = outcome.logs;
    return { case: "completed", value };
  }
  const { failure } = outcome;
  const error = create(TaskErrorSchema, {
    type: failure.type,
    message: failure.message,
    retryable: failure.retryable,
  });
  if (failure.details !== undefined) error.details = toValue(failure.details as JsonValue); // checked by TaskAttempt
  const value = create(FailedSchema, { key, error, retryAfterMs: BigInt(failure.retryAfterMs ?? 0) });
  if (failure.pauseKeyUntilMs !== undefined) value.pauseKeyUntil = timestampFromMs(failure.pauseKeyUntilMs);
  if (outcome.logs !== undefined) value.logs = outcome.logs;
  return { case: "failed", value };
}
