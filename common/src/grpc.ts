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
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { StatusSchema } from "@nexusflow/gen/google/rpc/status_pb";
import { ApiError, Code } from "./errors.js";

function serializer<D extends DescMessage>(schema: D): (m: MessageShape<D>) => Buffer {
  return (m) => {
    const bytes = toBinary(schema, m);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer<D extends DescMessage>(schema: D): (b: Buffer) => MessageShape<D> {
  return (b) => fromBinary(schema, b);
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
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output) as (m: unknown) => Buffer,
      responseDeserialize: deserializer(method.output),
    };
  }
  return def;
}

/** Error codes of Node sockets and PostgreSQL that mean "the database is not reachable right now". */
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

/** Whether `e` (or its cause) says a dependency is unreachable, so a retry may succeed. */
export function isUnavailable(e: unknown): boolean {
  for (let cur: unknown = e, depth = 0; cur !== null && typeof cur === "object" && depth < 5; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === "string" && UNAVAILABLE_CODES.has(code)) return true;
    if (
      cur instanceof Error &&
      /Connection terminated|ECONNREFUSED|connection error|timeout exceeded when trying to connect|Knex: Timeout acquiring/i.test(
        cur.message,
      )
    ) {
      return true;
    }
    cur = (cur as { cause?: unknown }).cause;
  }
  return false;
}

/** Converts any throwable into a grpc-js status object with rich details. */
export function toGrpcStatus(e: unknown): Partial<grpc.StatusObject> {
  const err =
    e instanceof ApiError
      ? e
      : isUnavailable(e)
        ? new ApiError(Code.UNAVAILABLE, "the database is unavailable; retry shortly")
        : new ApiError(Code.INTERNAL, e instanceof Error ? e.message : String(e));
  const metadata = new grpc.Metadata();
  const details =
    err.violations.length > 0
      ? [anyPack(BadRequestSchema, create(BadRequestSchema, { fieldViolations: [...err.violations] }))]
      : [];
  const status = create(StatusSchema, { code: err.code, message: err.message, details });
  metadata.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, status)));
  return { code: err.code, details: err.message, metadata };
}

/** Wraps a promise-returning unary handler for grpc-js. */
export function unary<Req, Res>(
  handler: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    handler(call.request, call).then(
      (res) => callback(null, res),
      (e: unknown) => callback(toGrpcStatus(e)),
    );
  };
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
    const abort = new AbortController();
    call.on("cancelled", () => abort.abort(new ApiError(Code.CANCELLED, "client cancelled")));
    call.on("close", () => abort.abort(new ApiError(Code.CANCELLED, "stream closed")));
    const send = (res: Res): Promise<void> =>
      new Promise((resolve) => {
        if (call.write(res)) resolve();
        else call.once("drain", () => resolve());
      });
    handler(call.request, send, abort.signal, call).then(
      () => call.end(),
      (e: unknown) => {
        if (!abort.signal.aborted) call.emit("error", toGrpcStatus(e));
      },
    );
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
