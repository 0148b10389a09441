/**
 * What the executor session's two ends must agree on beyond the messages themselves.
 */
import type { SessionRequest } from "@nexusflow/gen";

/**
 * Whether `message` is a report the scheduler acknowledges (Acked counts these per session, in the
 * order received): Completed, Failed and Release. The executor keeps each until it is counted, so
 * both ends must count the same messages.
 */
export function isAcknowledgedReport(message: SessionRequest["message"]): boolean {
  return message.case === "completed" || message.case === "failed" || message.case === "release";
}
