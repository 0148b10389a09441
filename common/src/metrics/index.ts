/**
 * @nexusflow/common/metrics: Prometheus metrics shared by the services (prom-client): a registry
 * per service with the default process metrics, the `/metrics` endpoint, bucket choices, cached
 * label children (and direct ones for hot paths, cells.ts) and gRPC interceptors.
 */
export { Counter, Gauge, Histogram, Registry } from "prom-client";
export * from "./buckets.js";
export * from "./cells.js";
export * from "./children.js";
export * from "./exemplars.js";
export * from "./grpc.js";
export * from "./registry.js";
export * from "./server.js";
