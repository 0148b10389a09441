/**
 * grpc-js plumbing driven by protobuf-es descriptors: a service definition for `Server.addService`
 * and a generic client constructor, both (de)serializing with @bufbuild/protobuf. Errors thrown by
 * handlers become gRPC statuses with `google.rpc.Status` details.
 */
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescService,
  type MessageShape,
} from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  ResourceInfoSchema,
} from "@nexusflow/gen/google/rpc/error_details_pb";
import { type Status, StatusSchema } from "@nexusflow/gen/google/rpc/status_pb";
import { ApiError, Code, type FieldViolation } from "./errors.js";
import { boundedText } from "./text.js";

function serializer<D extends DescMessage>(schema: D): (m: MessageShape<D>) => Buffer {
  return (m) => {
    const bytes = toBinary(schema, m);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer<D extends DescMessage>(schema: D): (b: Buffer) => MessageShape<D> {
  return (b) => fromBinary(schema, b);
}

/**
 * Stands in for a request message that could not be decoded (malformed protobuf, or nested deeper
 * than protobuf-es decodes: 100 levels). Thrown in the deserializer, grpc-js would end the call with
 * INTERNAL at once, while messages received before it on a stream are still handled, and a reply to
 * one of them then loses the status (the client waits forever). Delivered in order instead, it is
 * answered with INVALID_ARGUMENT by {@link unary} and {@link serverStream}, and by stream handlers
 * that check {@link isUndecodable}.
 */
export class UndecodableMessage {
  constructor(
    /** The message type that was expected, e.g. "nexusflow.v1.SessionRequest". */
    readonly typeName: string,
    /** The bytes received. */
    readonly bytes: Uint8Array,
    /** Why they could not be decoded. */
    readonly cause: unknown,
  ) {}

  /** The field number of the message's first field (a oneof's case), when it can be read. */
  get firstFieldNumber(): number | undefined {
    const tag = this.bytes[0];
    return tag === undefined || tag >= 0x80 ? undefined : tag >> 3;
  }

  /** INVALID_ARGUMENT saying what could not be decoded, and why. */
  toApiError(): ApiError {
    const why = this.cause instanceof Error ? this.cause.message : String(this.cause);
    return new ApiError(Code.INVALID_ARGUMENT, `the message is not a valid ${this.typeName}: ${why}`, [], {
      cause: this.cause,
    });
  }
}

/** Type guard for {@link UndecodableMessage}. */
export function isUndecodable(m: unknown): m is UndecodableMessage {
  return m instanceof UndecodableMessage;
}

function requestDeserializer<D extends DescMessage>(
  schema: D,
): (b: Buffer) => MessageShape<D> | UndecodableMessage {
  return (b) => {
    try {
      return fromBinary(schema, b);
    } catch (e) {
      return new UndecodableMessage(schema.typeName, b, e);
    }
  };
}

/** A grpc-js service definition for a protobuf-es service, keyed by the methods' local names. */
export function serviceDefinition(service: DescService): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    def[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      originalName: method.name,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: serializer(method.input) as (m: unknown) => Buffer,
      // A request that cannot be decoded reaches the handler as an UndecodableMessage.
      requestDeserialize: requestDeserializer(method.input),
      responseSerialize: serializer(method.output) as (m: unknown) => Buffer,
      responseDeserialize: deserializer(method.output),
    };
  }
  return def;
}

/**
 * Error codes that mean "the database is not reachable right now": of Node sockets (errno) and
 * PostgreSQL (SQLSTATE). node-postgres's own connection failures carry none; the scheduler's pools
 * give them the SQLSTATE of class 08 they stand for.
 */
const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
  "08000", // connection_exception
  "08001", // sqlclient_unable_to_establish_sqlconnection
  "08003", // connection_does_not_exist
  "08006", // connection_failure
]);

/**
 * Whether `e` or one of its causes has a code that says a dependency is unreachable, so that a
 * retry may succeed. Only codes count: message text is for people.
 */
export function isUnavailable(e: unknown): boolean {
  for (let cur: unknown = e, depth = 0; cur !== null && typeof cur === "object" && depth < 5; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === "string" && UNAVAILABLE_CODES.has(code)) return true;
    cur = (cur as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * Bounds of what a status says, in UTF-16 code units: a message quoting a client's megabyte of text
 * would make trailers no HTTP/2 client accepts (a protocol error instead of the status).
 */
const MAX_STATUS_MESSAGE = 1024;
const MAX_VIOLATION_FIELD = 256;
const MAX_VIOLATION_DESCRIPTION = 512;
/** Field violations sent, by their UTF-8 size: the first ones that fit. */
const MAX_VIOLATIONS_BYTES = 16 * 1024;

function boundedViolations(violations: readonly FieldViolation[]): FieldViolation[] {
  const out: FieldViolation[] = [];
  let bytes = 0;
  for (const v of violations) {
    const field = boundedText(v.field, MAX_VIOLATION_FIELD);
    const description = boundedText(v.description, MAX_VIOLATION_DESCRIPTION);
    bytes += Buffer.byteLength(field) + Buffer.byteLength(description);
    if (bytes > MAX_VIOLATIONS_BYTES) break;
    out.push({ field, description });
  }
  return out;
}

/** The {@link ApiError} a throwable answers as: itself, UNAVAILABLE for a lost database, else INTERNAL. */
function asApiError(e: unknown): ApiError {
  return e instanceof ApiError
    ? e
    : isUnavailable(e)
      ? new ApiError(Code.UNAVAILABLE, "the database is unavailable; retry shortly")
      : new ApiError(Code.INTERNAL, e instanceof Error ? e.message : String(e));
}

/**
 * Any throwable as a `google.rpc.Status` with rich details (field violations, error info, resource
 * info), bounded in size: what {@link toGrpcStatus} sends in `grpc-status-details-bin`, and what a
 * batch call answers for one item.
 */
export function toRpcStatus(e: unknown): Status {
  const err = asApiError(e);
  const violations = boundedViolations(err.violations);
  const details =
    violations.length > 0
      ? [anyPack(BadRequestSchema, create(BadRequestSchema, { fieldViolations: violations }))]
      : [];
  if (err.errorInfo !== undefined)
    details.push(anyPack(ErrorInfoSchema, create(ErrorInfoSchema, err.errorInfo)));
  if (err.resourceInfo !== undefined)
    details.push(anyPack(ResourceInfoSchema, create(ResourceInfoSchema, err.resourceInfo)));
  return create(StatusSchema, {
    code: err.code,
    message: boundedText(err.message, MAX_STATUS_MESSAGE),
    details,
  });
}

/** Converts any throwable into a grpc-js status object with rich details. */
export function toGrpcStatus(e: unknown): Partial<grpc.StatusObject> {
  const status = toRpcStatus(e);
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, status)));
  return { code: status.code, details: status.message, metadata };
}

/** Wraps a promise-returning unary handler for grpc-js. */
export function unary<Req, Res>(
  handler: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const request: unknown = call.request;
    if (isUndecodable(request)) {
      callback(toGrpcStatus(request.toApiError()));
      return;
    }
    handler(call.request, call)
      .then(
        (res) => callback(null, res),
        (e: unknown) => callback(toGrpcStatus(e)),
      )
      // Answering failed: end the call without letting the rejection end the process.
      .catch(() => endWithInternal((status) => callback(status)));
  };
}

/** Ends a call with a plain INTERNAL status through `end`; a call that is gone already stays gone. */
function endWithInternal(end: (status: Partial<grpc.StatusObject>) => void): void {
  try {
    end({ code: grpc.status.INTERNAL, details: "internal error", metadata: new grpc.Metadata() });
  } catch {
    // Nothing more can be said to this caller.
  }
}

/** Wraps a server-streaming handler that writes through `send` and resolves when done. */
export function serverStream<Req, Res>(
  handler: (
    request: Req,
    send: (res: Res) => Promise<void>,
    signal: AbortSignal,
    call: grpc.ServerWritableStream<Req, Res>,
  ) => Promise<void>,
): grpc.handleServerStreamingCall<Req, Res> {
  return (call) => {
    const request: unknown = call.request;
    if (isUndecodable(request)) {
      call.emit("error", toGrpcStatus(request.toApiError()));
      return;
    }
    const abort = new AbortController();
    call.on("cancelled", () => abort.abort(new ApiError(Code.CANCELLED, "client cancelled")));
    call.on("close", () => abort.abort(new ApiError(Code.CANCELLED, "stream closed")));
    const send = (res: Res): Promise<void> =>
      new Promise((resolve) => {
        if (call.write(res)) resolve();
        else call.once("drain", () => resolve());
      });
    handler(call.request, send, abort.signal, call)
      .then(
        () => call.end(),
        (e: unknown) => {
          if (!abort.signal.aborted) call.emit("error", toGrpcStatus(e));
        },
      )
      .catch(() => endWithInternal((status) => call.emit("error", status)));
  };
}

/** A grpc-js client constructor for a protobuf-es service. */
export function clientConstructor(service: DescService): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(serviceDefinition(service), service.typeName);
}

/** Reads the first field violation's message from a grpc-js error, for diagnostics. */
export function grpcErrorMessage(e: unknown): string {
  if (typeof e === "object" && e !== null && "details" in e && typeof e.details === "string")
    return e.details;
  return e instanceof Error ? e.message : String(e);
}
