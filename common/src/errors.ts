/**
 * API errors with gRPC status codes. Services throw these; the gRPC adapter turns them into a
 * status with a `google.rpc.Status` in `grpc-status-details-bin` (field violations included), which
 * Connect clients, grpcurl and the gateway's REST mapping all understand.
 */

/** gRPC status codes (the same numbers as Connect's `Code`). */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
/** A gRPC status code. */
export type Code = (typeof Code)[keyof typeof Code];

/** Name of a code, e.g. "INVALID_ARGUMENT". */
export function codeName(code: Code): string {
  return Object.entries(Code).find(([, v]) => v === code)?.[0] ?? "UNKNOWN";
}

/** One problem with one field of a request. */
export interface FieldViolation {
  /** Path of the field, e.g. "spec_json" or "$.steps[2].dependsOn[0]". */
  field: string;
  /** What is wrong with it. */
  description: string;
}

/** Why an error happened, machine-readable (sent as a `google.rpc.ErrorInfo` detail). */
export interface ErrorReason {
  /** UPPER_SNAKE_CASE reason, unique within `domain`. */
  reason: string;
  /** Who defines the reason, e.g. "nexusflow.dev". */
  domain: string;
  /** Facts about this occurrence (e.g. `run_id`). */
  metadata: Record<string, string>;
}

/** The resource an error is about (sent as a `google.rpc.ResourceInfo` detail). */
export interface ErrorResource {
  /** Type of the resource, e.g. "nexusflow.v1.Run". */
  resourceType: string;
  /** Its name or id. */
  resourceName: string;
  /** What about it matters here. */
  description: string;
}

/** Options of {@link ApiError}: the cause, and details beyond field violations. */
export interface ApiErrorOptions extends ErrorOptions {
  errorInfo?: ErrorReason;
  resourceInfo?: ErrorResource;
}

/** An error for an API caller: a status code, a message and optional field violations. */
export class ApiError extends Error {
  override name = "ApiError";
  /** Sent as a `google.rpc.ErrorInfo` detail when set. */
  readonly errorInfo: ErrorReason | undefined;
  /** Sent as a `google.rpc.ResourceInfo` detail when set. */
  readonly resourceInfo: ErrorResource | undefined;
  constructor(
    readonly code: Code,
    message: string,
    readonly violations: readonly FieldViolation[] = [],
    options?: ApiErrorOptions,
  ) {
    super(message, options);
    this.errorInfo = options?.errorInfo;
    this.resourceInfo = options?.resourceInfo;
  }

  /** INVALID_ARGUMENT naming the field at fault. */
  static invalid(field: string, description: string): ApiError {
    return new ApiError(Code.INVALID_ARGUMENT, `${field}: ${description}`, [{ field, description }]);
  }

  /** NOT_FOUND. */
  static notFound(message: string): ApiError {
    return new ApiError(Code.NOT_FOUND, message);
  }
}

/** Type guard for {@link ApiError}. */
export function isApiError(e: unknown): e is ApiError {
  return e instanceof ApiError;
}

/** Raised when the database cannot be reached; clients see UNAVAILABLE and may retry. */
export class UnavailableError extends ApiError {
  override name = "UnavailableError";
  constructor(message: string, options?: ErrorOptions) {
    super(Code.UNAVAILABLE, message, [], options);
  }
}
