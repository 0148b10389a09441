/**
 * The standard gRPC health service (`grpc.health.v1.Health`) on the gateway's port, served through
 * Connect like every other RPC here, so grpcurl, grpc_health_probe and Kubernetes' `grpc:` probes
 * work against the gateway (over gRPC; gRPC-Web and Connect clients may call it too). It answers
 * with the gateway's readiness, the condition `GET /readyz` answers with: SERVING while the gateway
 * listens and the health service of a scheduler (one of its addresses, upstream.ts) says SERVING,
 * NOT_SERVING otherwise. No token is needed (common/src/auth.ts marks Check and Watch public:
 * probes carry none).
 *
 * Check: SERVING or NOT_SERVING for "" (the gateway) and for each service it exposes; NOT_FOUND for
 * any other name. Watch: the status at once, then each change, checked every `watchIntervalMs`,
 * until the client cancels; SERVICE_UNKNOWN (and the call stays open) for an unknown name, as the
 * protocol asks. When the gateway starts draining a Watch sends NOT_SERVING and ends UNAVAILABLE.
 */
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type ServiceImpl } from "@connectrpc/connect";
import type { ReadinessCheck } from "@nexusflow/common";
import { setTimeout as sleep } from "node:timers/promises";
import { Health, HealthCheckResponse_ServingStatus as Status } from "@nexusflow/gen/grpc/health/v1/health_pb";

export { Health as HealthService } from "@nexusflow/gen/grpc/health/v1/health_pb";

/** Options of {@link addHealth}. */
export interface HealthOptions {
  /** The gateway's readiness: undefined when ready, else why not (the same check as /readyz). */
  ready: ReadinessCheck;
  /** Services that report the gateway's readiness besides "" (the gateway as a whole). */
  services: readonly DescService[];
  /** Aborted when the gateway starts draining: open Watch calls end. */
  shutdownSignal?: AbortSignal | undefined;
  /** How often a Watch re-evaluates readiness, in milliseconds. @default 5000 */
  watchIntervalMs?: number | undefined;
}

/** Registers `grpc.health.v1.Health` on `router`. */
export function addHealth(router: ConnectRouter, options: HealthOptions): void {
  const known = new Set(["", ...options.services.map((s) => s.typeName)]);
  const intervalMs = options.watchIntervalMs ?? 5000;
  const status = async (): Promise<Status> =>
    (await options.ready().catch((e: unknown) => String(e))) === undefined
      ? Status.SERVING
      : Status.NOT_SERVING;
  const impl: ServiceImpl<typeof Health> = {
    async check(req) {
      if (!known.has(req.service))
        throw new ConnectError(`unknown service ${JSON.stringify(req.service)}`, Code.NotFound);
      return { status: await status() };
    },
    async *watch(req, ctx) {
      const signals = [ctx.signal, ...(options.shutdownSignal === undefined ? [] : [options.shutdownSignal])];
      const stop = AbortSignal.any(signals);
      let last: Status | undefined;
      while (!stop.aborted) {
        const next = known.has(req.service) ? await status() : Status.SERVICE_UNKNOWN;
        if (next !== last) {
          last = next;
          yield { status: next };
        }
        // Aborted by the client or the drain: the loop condition then ends it.
        await sleep(intervalMs, undefined, { signal: stop }).catch(() => undefined);
      }
      if (ctx.signal.aborted) return;
      if (last !== Status.NOT_SERVING && known.has(req.service)) yield { status: Status.NOT_SERVING };
      throw new ConnectError("gateway is shutting down", Code.Unavailable);
    },
  };
  router.service(Health, impl);
}
