// Worker-thread bootstrap: loads the TypeScript module named in `workerData.module` through tsx
// (a worker does not inherit the parent's loader hooks on Node 20). With `workerData.tracing` (a
// TelemetryConfig: `npm run bench -- --tracing`), the thread starts its own telemetry first, as a
// service's main.ts does, so the instrumentations patch the modules the host then imports.
import { workerData } from "node:worker_threads";
import { register } from "tsx/esm/api";

register();
if (workerData.tracing !== undefined) {
  const { startTelemetry } = await import("@nexusflow/common/telemetry");
  await startTelemetry(workerData.tracing);
}
await import(new URL(workerData.module, import.meta.url).href);
