/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) on the scheduler's grpc-js server, so
 * `grpcurl -plaintext HOST:PORT list` and `buf curl` work without .proto files. The logic is
 * `@grpc/reflection`'s; the descriptors are the services' own protobuf-es descriptors.
 */
import type { DescService } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { reflectionPackageDefinition } from "@nexusflow/common";

type PackageDefinition = ConstructorParameters<typeof ReflectionService>[0];

/**
 * Adds both reflection services to `server`, listing exactly `services` and describing them, what
 * they import and the google.rpc error details they send.
 */
export function addReflection(
  server: Pick<grpc.Server, "addService">,
  services: readonly DescService[],
): void {
  const definition = reflectionPackageDefinition(services) as unknown as PackageDefinition;
  new ReflectionService(definition, { services: services.map((s) => s.typeName) }).addToServer(server);
}
