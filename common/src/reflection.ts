/**
 * Descriptors for gRPC server reflection: the protobuf-es descriptors of the services a server
 * exposes, as the `@grpc/proto-loader` package definition that `@grpc/reflection` analyses. Used by
 * the scheduler (grpc-js) and the gateway (Connect), so both describe themselves the same way.
 */
import { type DescFile, type DescService, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";

/** The part of a `@grpc/proto-loader` package definition that `@grpc/reflection` reads. */
export type ReflectionPackageDefinition = Record<string, { fileDescriptorProtos: Buffer[] }>;

/** Every file `services` are defined in, each after the files it imports. */
export function filesOf(services: readonly DescService[]): DescFile[] {
  const files: DescFile[] = [];
  const seen = new Set<string>();
  const visit = (file: DescFile): void => {
    if (seen.has(file.proto.name)) return;
    seen.add(file.proto.name);
    file.dependencies.forEach(visit);
    files.push(file);
  };
  services.forEach((s) => visit(s.file));
  return files;
}

/**
 * A package definition for `new ReflectionService(definition, { services })`: the serialized
 * FileDescriptorProtos of `services` and of everything they import (well-known types, google.api).
 */
export function reflectionPackageDefinition(services: readonly DescService[]): ReflectionPackageDefinition {
  const fileDescriptorProtos = filesOf(services).map((f) =>
    Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)),
  );
  return Object.fromEntries(services.map((s) => [s.typeName, { fileDescriptorProtos }]));
}
