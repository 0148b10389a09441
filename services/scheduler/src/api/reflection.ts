/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) on the scheduler's grpc-js server, so
 * `grpcurl -plaintext HOST:PORT list` and `buf curl` work without .proto files. The logic is
 * `@grpc/reflection`'s; the descriptors are the services' own protobuf-es descriptors.
 *
 * Loaded on the first reflection call: the server registers both methods with byte-passing
 * serializers at start-up, and the first stream imports `@grpc/reflection` (with protobufjs and
 * `@grpc/proto-loader`, ~1.2 MiB of V8 heap and ~2 MiB of RSS in a scheduler nobody reflects on)
 * and serializes the descriptors; every stream then runs the library's own handler over it.
 */
import { EventEmitter } from "node:events";
import type { DescService } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { reflectionPackageDefinition } from "@nexusflow/common";

/** The reflection services, as grpc.reflection.v1 and v1alpha name them. */
const VERSIONS = ["grpc.reflection.v1", "grpc.reflection.v1alpha"] as const;
const METHOD = "ServerReflectionInfo";

/** One method's definition as `@grpc/reflection` registers it (its serializers are the library's). */
type MethodDefinition = grpc.MethodDefinition<unknown, unknown>;

/** What a raw reflection stream runs: the library's handler with its (de)serializers. */
interface LoadedMethod {
  definition: MethodDefinition;
  handler: (stream: EventEmitter & { write(m: unknown): boolean; end(): void }) => void;
}

const passBytes = {
  requestSerialize: (b: Buffer): Buffer => b,
  requestDeserialize: (b: Buffer): Buffer => b,
  responseSerialize: (b: Buffer): Buffer => b,
  responseDeserialize: (b: Buffer): Buffer => b,
};

/**
 * Adds both reflection services to `server`, listing exactly `services` and describing them, what
 * they import and the google.rpc error details they send.
 */
export function addReflection(
  server: Pick<grpc.Server, "addService">,
  services: readonly DescService[],
): void {
  let loading: Promise<Map<string, LoadedMethod>> | undefined;
  const load = (): Promise<Map<string, LoadedMethod>> =>
    (loading ??= (async () => {
      const { ReflectionService } = await import("@grpc/reflection");
      type PackageDefinition = ConstructorParameters<typeof ReflectionService>[0];
      const definition = reflectionPackageDefinition(services) as unknown as PackageDefinition;
      const methods = new Map<string, LoadedMethod>();
      new ReflectionService(definition, { services: services.map((s) => s.typeName) }).addToServer({
        addService(service: grpc.ServiceDefinition, implementation: grpc.UntypedServiceImplementation) {
          const m = service[METHOD] as MethodDefinition;
          methods.set(m.path, { definition: m, handler: implementation[METHOD] as LoadedMethod["handler"] });
        },
      });
      return methods;
    })());
  for (const version of VERSIONS) {
    const path = `/${version}.ServerReflection/${METHOD}`;
    const definition: grpc.ServiceDefinition = {
      [METHOD]: { path, requestStream: true, responseStream: true, ...passBytes },
    };
    server.addService(definition, {
      [METHOD]: (raw: grpc.ServerDuplexStream<Buffer, Buffer>) => serve(raw, path, load()),
    });
  }
}

/**
 * Runs the library's handler of `path` on `raw`: requests decoded and responses encoded with its
 * serializers; what arrives while the library loads waits, in order.
 */
function serve(
  raw: grpc.ServerDuplexStream<Buffer, Buffer>,
  path: string,
  loaded: Promise<Map<string, LoadedMethod>>,
): void {
  const method = loaded.then((methods) => {
    const m = methods.get(path);
    if (m === undefined) throw new Error(`@grpc/reflection registered no ${path}`);
    return m;
  });
  const stream = Object.assign(new EventEmitter(), {
    write: (message: unknown): boolean => {
      void method.then((m) => raw.write(m.definition.responseSerialize(message)));
      return true;
    },
    end: (): void => {
      void method.then(() => raw.end());
    },
  });
  // Handlers are attached in the order the events came, so requests keep their order.
  raw.on("data", (bytes: Buffer) => {
    void method.then(
      (m) => stream.emit("data", m.definition.requestDeserialize(bytes)),
      () => undefined,
    );
  });
  raw.on(
    "end",
    () =>
      void method.then(
        () => stream.emit("end"),
        () => undefined,
      ),
  );
  void method.then(
    (m) => m.handler(stream),
    (e: unknown) => {
      const details = `reflection is unavailable: ${e instanceof Error ? e.message : String(e)}`;
      // grpc-js ends a server stream that emits 'error' with that status.
      raw.emit("error", { code: grpc.status.INTERNAL, details });
    },
  );
}
