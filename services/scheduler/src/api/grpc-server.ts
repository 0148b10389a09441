/**
 * The scheduler's gRPC server before its services: its channel options, how its calls are
 * authenticated and measured, and binding it to its port (a taken port is a {@link PortInUseError}).
 */
import * as grpc from "@grpc/grpc-js";
import { portInUse, type Logger, type TokenVerifier } from "@nexusflow/common";
import { type Registry, grpcServerMetrics, meterServerHandlers } from "@nexusflow/common/metrics";
import { authInterceptor } from "./auth.js";

/** Raised when the port is taken; the message names it. */
export class PortInUseError extends Error {
  override name = "PortInUseError";
}

/** What {@link createGrpcServer} needs. */
export interface GrpcServerOptions {
  /** Verifies each call's token; undefined: calls are not authenticated. */
  auth: TokenVerifier | undefined;
  /** Where the calls' durations are recorded; undefined: metrics off. */
  registry: Registry | undefined;
  log: Logger;
}

/**
 * A gRPC server with no service yet. With authentication, the metrics interceptor goes first, so
 * that calls the authentication refuses are measured too. Without, there is no interceptor at all
 * (each costs grpc-js an intercepting call per call): the handlers added later are measured
 * (`meterServerHandlers`).
 */
export function createGrpcServer({ auth, registry, log }: GrpcServerOptions): grpc.Server {
  const server = new grpc.Server({
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.max_receive_message_length": 16 * 1024 * 1024, // over it: test/api-sizes/receive-limit.test.ts
    interceptors:
      auth === undefined
        ? []
        : [...(registry === undefined ? [] : [grpcServerMetrics(registry)]), authInterceptor(auth, log)],
  });
  if (auth === undefined && registry !== undefined) meterServerHandlers(server, registry);
  return server;
}

/** Binds `server` to `host:port` (0: a free port); the port bound. */
export function bindGrpcServer(server: grpc.Server, host: string, port: number): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (e, bound) => {
      if (e === null) {
        resolve(bound);
        return;
      }
      // grpc-js keeps only the text of the system error; the port itself says whether it is taken.
      portInUse(host, port).then(
        (taken) =>
          reject(
            taken
              ? new PortInUseError(
                  `port ${port} on ${host} is already in use (set SCHEDULER_PORT to another port)`,
                  { cause: e },
                )
              : e,
          ),
        () => reject(e),
      );
    });
  });
}
