/**
 * The gateway's one place of RPC registration: every public service, forwarded to the scheduler,
 * the gateway's own grpc.health.v1.Health (given its readiness), and gRPC server reflection
 * describing them.
 */
import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import {
  ArtifactService,
  ClusterService,
  EventService,
  RateLimitService,
  ReplicaService,
  ScheduleService,
  WorkflowService,
} from "@nexusflow/gen";
import { type HealthOptions, HealthService, addHealth } from "./health.js";
import { type ForwardingOptions, createForwardingService } from "./proxy.js";
import { addReflection } from "./reflection.js";

/** The services the gateway exposes, all served by the scheduler. */
export const PROXIED_SERVICES: readonly DescService[] = [
  WorkflowService,
  ArtifactService,
  ClusterService,
  ScheduleService,
  RateLimitService,
  EventService,
  ReplicaService,
];

/** Options of {@link createRoutes}. */
export interface RoutesOptions extends ForwardingOptions {
  /**
   * The gateway's readiness, answered by grpc.health.v1.Health (server.ts passes the check that
   * /readyz answers with). @default undefined (no health service)
   */
  ready?: HealthOptions["ready"] | undefined;
  /** How often a health Watch re-evaluates readiness. @default 5000 */
  healthWatchIntervalMs?: number | undefined;
}

/**
 * Routes for `connectNodeAdapter`: each of {@link PROXIED_SERVICES} forwarded as configured, the
 * health service when `ready` is given, and reflection describing them all.
 */
export function createRoutes(options: RoutesOptions): (router: ConnectRouter) => void {
  return (router) => {
    for (const service of PROXIED_SERVICES)
      router.service(service, createForwardingService(service, options));
    const reflection = { shutdownSignal: options.streamShutdownSignal };
    if (options.ready === undefined) {
      addReflection(router, PROXIED_SERVICES, reflection);
      return;
    }
    addHealth(router, {
      ready: options.ready,
      services: PROXIED_SERVICES,
      shutdownSignal: options.streamShutdownSignal,
      watchIntervalMs: options.healthWatchIntervalMs,
    });
    addReflection(router, [...PROXIED_SERVICES, HealthService], reflection);
  };
}
