/**
 * Errors of REST calls: a `google.rpc.Status` in proto3 JSON (`{"code": 5, "message": "...",
 * "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", ...}]}`) with the HTTP status
 * that google/rpc/code.proto assigns to the code.
 */
import { type JsonObject, create, createRegistry, toJson } from "@bufbuild/protobuf";
import { type Any, AnySchema, anyPack } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectError } from "@connectrpc/connect";
import { file_google_rpc_error_details } from "@nexusflow/gen/google/rpc/error_details_pb";
import { StatusSchema } from "@nexusflow/gen/google/rpc/status_pb";

/** HTTP status for each code (google/rpc/code.proto). */
const HTTP_STATUS: Record<Code, number> = {
  [Code.Canceled]: 499,
  [Code.Unknown]: 500,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 400,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
};

/** The HTTP status of a code. */
export function httpStatusOf(code: Code): number {
  return HTTP_STATUS[code] ?? 500;
}

/**
 * Error detail types the gateway can write as JSON (google.rpc.*: BadRequest, ErrorInfo, RetryInfo,
 * ...): in an error's status, and in a response that carries statuses (StartRuns' results).
 */
export const DETAILS_REGISTRY = createRegistry(file_google_rpc_error_details);

/** `err` as a google.rpc.Status in proto3 JSON. Details of unknown types are left out. */
export function statusJson(err: ConnectError): JsonObject {
  const details: Any[] = [];
  for (const d of err.details) {
    if ("desc" in d) {
      details.push(anyPack(d.desc, create(d.desc, d.value)));
    } else if (DETAILS_REGISTRY.getMessage(d.type) !== undefined) {
      details.push(create(AnySchema, { typeUrl: `type.googleapis.com/${d.type}`, value: d.value }));
    }
  }
  const status = create(StatusSchema, { code: err.code, message: err.rawMessage, details });
  return toJson(StatusSchema, status, { registry: DETAILS_REGISTRY }) as JsonObject;
}
