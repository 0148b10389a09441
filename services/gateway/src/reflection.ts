/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) served through Connect, so that
 * `grpcurl -plaintext HOST:PORT list` and `buf curl` work against the gateway without .proto files.
 *
 * No Connect package serves reflection; `@grpc/reflection` holds the logic for grpc-js servers.
 * Here its implementation answers each request of a Connect bidi stream: a request is converted to
 * the grpc-js (proto-loader) shape, answered, and the answer converted back. The two versions are
 * the same protocol under two package names, so one implementation serves both.
 *
 * A reflection stream lasts as long as its client keeps its side open (grpcurl asks several
 * questions on one stream): when the gateway drains, it ends UNAVAILABLE like every other stream.
 */
import type { DescService, MessageInitShape } from "@bufbuild/protobuf";
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { reflectionPackageDefinition } from "@nexusflow/common";
import { untilAborted } from "./abortable.js";
import { ReflectionV1Implementation } from "@grpc/reflection/build/src/implementations/reflection-v1.js";
import type { ServerReflectionRequest as GrpcRequest } from "@grpc/reflection/build/src/generated/grpc/reflection/v1/ServerReflectionRequest.js";
import type { ServerReflectionResponse as GrpcResponse } from "@grpc/reflection/build/src/generated/grpc/reflection/v1/ServerReflectionResponse.js";
import {
  ServerReflection as ServerReflectionV1,
  type ServerReflectionRequest,
  type ServerReflectionResponseSchema,
} from "./gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1Alpha } from "./gen/grpc/reflection/v1alpha/reflection_pb.js";

/** The reflection services, both versions. */
export const REFLECTION_SERVICES: readonly DescService[] = [ServerReflectionV1, ServerReflectionV1Alpha];

type ResponseInit = MessageInitShape<typeof ServerReflectionResponseSchema>;
type PackageDefinition = ConstructorParameters<typeof ReflectionV1Implementation>[0];

/** The grpc-js shape of a request (proto-loader with `oneofs: true`). */
function toGrpcRequest(req: ServerReflectionRequest): GrpcRequest {
  const r = req.messageRequest;
  const base: GrpcRequest = { host: req.host };
  switch (r.case) {
    case "fileContainingExtension":
      return {
        ...base,
        messageRequest: r.case,
        fileContainingExtension: {
          containingType: r.value.containingType,
          extensionNumber: r.value.extensionNumber,
        },
      };
    case undefined:
      return base;
    default:
      return { ...base, messageRequest: r.case, [r.case]: r.value };
  }
}

/** The protobuf-es shape of an answer. */
function fromGrpcResponse(req: ServerReflectionRequest, res: GrpcResponse): ResponseInit {
  const base = { validHost: req.host, originalRequest: req };
  if (res.listServicesResponse !== undefined && res.listServicesResponse !== null) {
    const services = res.listServicesResponse.service ?? [];
    return {
      ...base,
      messageResponse: {
        case: "listServicesResponse",
        value: { service: services.map((s) => ({ name: s.name ?? "" })) },
      },
    };
  }
  if (res.fileDescriptorResponse !== undefined && res.fileDescriptorResponse !== null) {
    const files = res.fileDescriptorResponse.fileDescriptorProto ?? [];
    return {
      ...base,
      messageResponse: {
        case: "fileDescriptorResponse",
        value: {
          fileDescriptorProto: files.map((f) => (typeof f === "string" ? Buffer.from(f, "base64") : f)),
        },
      },
    };
  }
  if (res.allExtensionNumbersResponse !== undefined && res.allExtensionNumbersResponse !== null) {
    const ext = res.allExtensionNumbersResponse;
    return {
      ...base,
      messageResponse: {
        case: "allExtensionNumbersResponse",
        value: { baseTypeName: ext.baseTypeName ?? "", extensionNumber: ext.extensionNumber ?? [] },
      },
    };
  }
  const err = res.errorResponse;
  return {
    ...base,
    messageResponse: {
      case: "errorResponse",
      value: {
        errorCode: err?.errorCode ?? 2,
        errorMessage: err?.errorMessage ?? "reflection request not understood",
      },
    },
  };
}

/** Options of {@link addReflection}. */
export interface ReflectionOptions {
  /**
   * Aborted when the gateway starts draining: open reflection streams end with its reason (a
   * ConnectError UNAVAILABLE), even while their clients keep them open. @default none
   */
  shutdownSignal?: AbortSignal | undefined;
}

/**
 * Registers grpc.reflection.v1 and v1alpha on `router`, describing `services`, every file they
 * import and the google.rpc error details they send. Only `services` are listed.
 */
export function addReflection(
  router: ConnectRouter,
  services: readonly DescService[],
  options: ReflectionOptions = {},
): void {
  const reflection = new ReflectionV1Implementation(
    reflectionPackageDefinition(services) as unknown as PackageDefinition,
    {
      services: services.map((s) => s.typeName),
    },
  );
  const impl: ServiceImpl<typeof ServerReflectionV1> = {
    async *serverReflectionInfo(requests, ctx) {
      const { shutdownSignal } = options;
      const stop = shutdownSignal === undefined ? ctx.signal : AbortSignal.any([ctx.signal, shutdownSignal]);
      for await (const req of untilAborted(requests, stop)) {
        yield fromGrpcResponse(req, reflection.handleServerReflectionRequest(toGrpcRequest(req)));
      }
    },
  };
  router.service(ServerReflectionV1, impl);
  // Same protocol under the older package name; the messages differ only in their type names.
  router.service(ServerReflectionV1Alpha, impl as unknown as ServiceImpl<typeof ServerReflectionV1Alpha>);
}
