/**
 * Idempotency keys of StartRun, the pure part: what a key is scoped to, what "the same request"
 * means, and the error for a key reused with a different request.
 *
 * A key belongs to one workflow name (the same key under two workflows starts two runs); a tenant
 * would become one more part of the scope (and of the key table's primary key). Two requests are
 * the same when their input and labels are equal as JSON (object key order and formatting do not
 * matter): a canonical JSON document of both, hashed with SHA-256, is stored with the key.
 */
import { ApiError, Code } from "@nexusflow/common";
import { contentHash } from "../dag/index.js";

/** The in-memory identity of a key: its workflow and the key (NUL never occurs in either). */
export function idempotencyScope(workflowName: string, key: string): string {
  return `${workflowName}\u0000${key}`;
}

/** SHA-256 (hex) of the canonical JSON of what a run is started with: its input and labels. */
export function requestHash(input: unknown, labels: Readonly<Record<string, string>>): string {
  return contentHash({ input: input ?? null, labels });
}

/** Reason in the google.rpc.ErrorInfo of {@link idempotencyConflict}. */
export const IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED";

/**
 * ALREADY_EXISTS for a key already used with a different input or labels: the message names the
 * run it belongs to, and so do the ErrorInfo (metadata `run_id`) and ResourceInfo details.
 */
export function idempotencyConflict(workflowName: string, key: string, runId: string): ApiError {
  return new ApiError(
    Code.ALREADY_EXISTS,
    `idempotency key ${JSON.stringify(key)} of workflow ${JSON.stringify(workflowName)} was used by run ${runId} ` +
      `with a different input or labels; send the same request to get that run, or use a new key`,
    [],
    {
      errorInfo: {
        reason: IDEMPOTENCY_KEY_REUSED,
        domain: "nexusflow.dev",
        metadata: { run_id: runId, workflow_name: workflowName, idempotency_key: key },
      },
      resourceInfo: {
        resourceType: "nexusflow.v1.Run",
        resourceName: runId,
        description: `the run started with idempotency key ${JSON.stringify(key)}`,
      },
    },
  );
}
