/**
 * The executor process's entry point. Tracing (OTEL_* variables; off by default) starts first, before
 * any module it instruments (gRPC, HTTP, pg) is imported; then serve.ts reads the rest of
 * the configuration, starts the executor and stops it on signals.
 */
import { ConfigError, loadTelemetryConfig } from "@nexusflow/common/config";
import { startTelemetry } from "@nexusflow/common/telemetry";

try {
  await startTelemetry(loadTelemetryConfig("nexusflow-executor"));
} catch (e) {
  if (e instanceof ConfigError) {
    process.stderr.write(`nexusflow-executor: ${e.message}\n`);
    process.exit(2);
  }
  throw e;
}
await import("./serve.js");
