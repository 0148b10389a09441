/**
 * Errors of the client. A call the server (or the connection) failed rejects with a
 * {@link ConnectError} whose `code` is the gRPC status ({@link Code}); what the client itself
 * refuses before sending anything is a {@link NexusflowClientError} with a
 * {@link ClientErrorCode}. Recognise both by code, never by message text.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";

export { Code, ConnectError };

/** Why the client refused or gave up; see {@link NexusflowClientError}. */
export type ClientErrorCode =
  /** An option of the client or of a call is out of range or malformed. */
  | "INVALID_OPTIONS"
  /** A run's input (or a definition) cannot be sent as JSON (undefined, a function, a cycle, ...). */
  | "INVALID_INPUT"
  /** `waitForRun`: the watch kept ending before the run did, `retry.maxAttempts` times in a row. */
  | "WATCH_ENDED";

/** An error of the client itself (not an RPC status: those are {@link ConnectError}s). */
export class NexusflowClientError extends Error {
  override name = "NexusflowClientError";
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** True for a {@link NexusflowClientError}, optionally with the given code. */
export function isNexusflowClientError(e: unknown, code?: ClientErrorCode): e is NexusflowClientError {
  return e instanceof NexusflowClientError && (code === undefined || e.code === code);
}

/** True for a {@link ConnectError} (an RPC that failed), optionally with the given status code. */
export function isRpcError(e: unknown, code?: Code): e is ConnectError {
  return e instanceof ConnectError && (code === undefined || e.code === code);
}

/** One problem of an INVALID_ARGUMENT answer: the JSON path at fault and what is wrong there. */
export interface FieldViolation {
  /** JSON path of the field, e.g. `$.steps[2].dependsOn[0]` or `input.items[2].name`. */
  readonly field: string;
  /** What is wrong with it. */
  readonly description: string;
}

/**
 * The field violations an INVALID_ARGUMENT error carries (google.rpc.BadRequest details): every
 * problem of a refused definition or input. Empty for other errors.
 */
export function fieldViolations(e: unknown): FieldViolation[] {
  if (!(e instanceof ConnectError)) return [];
  return e
    .findDetails(BadRequestSchema)
    .flatMap((d) => d.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
}
