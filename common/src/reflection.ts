/**
 * Descriptors for gRPC server reflection: the protobuf-es descriptors of the services a server
 * exposes, as the `@grpc/proto-loader` package definition that `@grpc/reflection` analyses. Used by
 * the scheduler (grpc-js) and the gateway (Connect), so both describe themselves the same way.
 */
import { type DescFile, type DescService, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { file_google_rpc_error_details } from "@nexusflow/gen/google/rpc/error_details_pb";
import { file_google_rpc_status } from "@nexusflow/gen/google/rpc/status_pb";

/** The part of a `@grpc/proto-loader` package definition that `@grpc/reflection` reads. */
export type ReflectionPackageDefinition = Record<string, { fileDescriptorProtos: Buffer[] }>;

/**
 * Files of the error details the services send (google.rpc.Status, BadRequest, ErrorInfo,
 * ResourceInfo, ...). Nothing in a service's files imports them, but a client that receives a
 * status with details (grpcurl) asks reflection for the detail's type to decode it.
 */
export const ERROR_DETAIL_FILES: readonly DescFile[] = [
  file_google_rpc_status,
  file_google_rpc_error_details,
];

/** Every file `services` (and `extraFiles`) are defined in, each after the files it imports. */
export function filesOf(services: readonly DescService[], extraFiles: readonly DescFile[] = []): DescFile[] {
  const files: DescFile[] = [];
  const seen = new Set<string>();
  const visit = (file: DescFile): void => {
    if (seen.has(file.proto.name)) return;
    seen.add(file.proto.name);
    file.dependencies.forEach(visit);
    files.push(file);
  };
  services.forEach((s) => visit(s.file));
  extraFiles.forEach(visit);
  return files;
}

/**
 * A package definition for `new ReflectionService(definition, { services })`: the serialized
 * FileDescriptorProtos of `services` and of everything they import (well-known types, google.api),
 * and of the error details they send ({@link ERROR_DETAIL_FILES}), so those can be decoded too.
 * Only `services` are listed (the `services` option); the rest is found by symbol or file name.
 */
export function reflectionPackageDefinition(services: readonly DescService[]): ReflectionPackageDefinition {
  const fileDescriptorProtos = filesOf(services, ERROR_DETAIL_FILES).map((f) =>
    Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)),
  );
  return Object.fromEntries(services.map((s) => [s.typeName, { fileDescriptorProtos }]));
}
