/**
 * The gateway's one place of RPC registration: every public service, forwarded to the scheduler,
 * and gRPC server reflection describing them.
 */
import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { ArtifactService, WorkflowService } from "@nexusflow/gen";
import { type ForwardingOptions, createForwardingService } from "./proxy.js";
import { addReflection } from "./reflection.js";

/** The services the gateway exposes, all served by the scheduler. */
export const PROXIED_SERVICES: readonly DescService[] = [WorkflowService, ArtifactService];

/** Routes for `connectNodeAdapter`: each of {@link PROXIED_SERVICES} forwarded as configured, plus reflection. */
export function createRoutes(options: ForwardingOptions): (router: ConnectRouter) => void {
  return (router) => {
    for (const service of PROXIED_SERVICES)
      router.service(service, createForwardingService(service, options));
    addReflection(router, PROXIED_SERVICES);
  };
}
