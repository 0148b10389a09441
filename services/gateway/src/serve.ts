/** The gateway process (after main.ts started tracing): read config, start, stop on signals. */
import {
  ConfigError,
  type GatewayConfig,
  KeyFileError,
  type ReadinessCheck,
  type TokenVerifier,
  checkGrpcHealth,
  createLogger,
  logProcessWarnings,
  loadGatewayConfig,
  tokenVerifierFromConfig,
} from "@nexusflow/common";
import {
  MetricsListenError,
  type OpsEndpoints,
  createMetricsRegistry,
  startOpsEndpoints,
} from "@nexusflow/common/metrics";
import { shutdownTelemetry, tracingEnabled } from "@nexusflow/common/telemetry";
import { GatewayListenError, createGateway } from "./server.js";
import { replicasReadiness } from "./upstream.js";

function fail(message: string, exitCode: number): never {
  process.stderr.write(`nexusflow-gateway: ${message}\n`);
  process.exit(exitCode);
}

let config: GatewayConfig;
try {
  config = loadGatewayConfig();
} catch (e) {
  if (e instanceof ConfigError) fail(e.message, 2);
  throw e;
}

const logger = createLogger("gateway", config.logLevel, { traceContext: tracingEnabled() });
logProcessWarnings(logger);
let verifier: TokenVerifier | undefined;
try {
  verifier = await tokenVerifierFromConfig(config.auth);
} catch (e) {
  if (e instanceof KeyFileError) fail(`AUTH_PUBLIC_KEYS: ${e.message}`, 2);
  throw e;
}
if (verifier === undefined) {
  logger.warn("authentication is OFF (AUTH_DISABLED=true): every caller can do everything");
} else if (config.auth.issuer.includes("nexusflow-dev")) {
  logger.warn("accepting dev tokens (AUTH_ISSUER nexusflow-dev): for local development only");
}
// Ready (GET /readyz) while the health service of at least one scheduler address answers SERVING.
const schedulerReady: ReadinessCheck = replicasReadiness(config.schedulerAddresses, {
  check: (address) => checkGrpcHealth(address, { timeoutMs: 2000 }),
  logger,
});
const registry = config.metrics === undefined ? undefined : createMetricsRegistry();
const gateway = createGateway({
  ready: schedulerReady,
  host: config.host,
  port: config.port,
  schedulerAddress: config.schedulerAddresses,
  logger,
  verifier,
  maxRequestBytes: config.maxRequestBytes,
  maxStreamsPerClient: config.maxStreamsPerClient,
  // A stream ends when its token would no longer be accepted: exp plus the verifier's tolerance.
  tokenExpiryGraceMs: config.auth.clockToleranceSec * 1000,
  metrics: registry,
});

// The ops endpoints' /readyz answers as the gateway's own port does (there also while draining).
let ops: OpsEndpoints;
try {
  ops = await startOpsEndpoints({
    metrics: config.metrics,
    probes: config.probes,
    registry,
    log: logger,
    ready: schedulerReady,
  });
} catch (e) {
  if (e instanceof MetricsListenError) fail(e.message, 1);
  throw e;
}

try {
  const { url } = await gateway.listen();
  logger.info(
    {
      url,
      protocols: ["grpc", "grpc-web", "connect", "rest"],
      auth: verifier === undefined ? "off" : config.auth.jwksUrl === undefined ? "public keys" : "jwks",
      http: ["h2c", "http/1.1"],
      scheduler: config.schedulerAddresses.join(","),
    },
    "gateway listening",
  );
} catch (e) {
  if (e instanceof GatewayListenError) fail(`${e.message} (set GATEWAY_PORT to use another port)`, 1);
  throw e;
}

let stopping = false;
const stop = (signal: NodeJS.Signals): void => {
  if (stopping) {
    logger.warn({ signal }, "second signal, exiting now");
    process.exit(1);
  }
  stopping = true;
  logger.info({ signal }, "gateway stopping");
  Promise.all([gateway.close(), ops.close()])
    .then(() => shutdownTelemetry())
    .then(
      () => {
        logger.info("gateway stopped");
        process.exit(0);
      },
      (e: unknown) => {
        logger.error({ err: e }, "gateway failed to stop cleanly");
        process.exit(1);
      },
    );
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
