/**
 * Where the dev stack's services listen, chosen before they start: from the environment when set
 * there (validated as the services do), free ports otherwise (for 0 too). Every address is thus
 * known in advance, so that each service's readiness can be asked there (readiness.ts) and nothing
 * has to be read from its log.
 */
import { createServer } from "node:net";
import { freePort, loadExecutorConfig, loadGatewayConfig, loadSchedulerConfig } from "@nexusflow/common";

/**
 * Free ports for services that bind them later, never one handed out twice: a port the system
 * gives for a listen on port 0 is free again as soon as that listener closes, so two asks in a
 * row may get the same one (seen: an executor's metrics port equal to the scheduler's).
 */
export class PortPicker {
  readonly #taken = new Set<number>();

  constructor(private readonly allocate: (host: string) => Promise<number> = freePort) {}

  /** Marks `port` as handed out (one chosen another way). */
  take(port: number): number {
    this.#taken.add(port);
    return port;
  }

  /** A free port on `host` not handed out before. */
  async free(host: string): Promise<number> {
    for (;;) {
      const port = await this.allocate(host);
      if (!this.#taken.has(port)) return this.take(port);
    }
  }
}

/** Where the stack listens, and the addresses to reach it at. */
export interface DevPorts {
  /** Hands out the ports of services started later (more scheduler replicas), none of these. */
  picker: PortPicker;
  schedulerHost: string;
  schedulerPort: number;
  /** host:port to call the scheduler at. */
  schedulerAddress: string;
  gatewayHost: string;
  gatewayPort: number;
  /** The gateway's base URL. */
  gatewayUrl: string;
  /** Where the executors serve their metrics (METRICS_HOST). */
  metricsHost: string;
  /**
   * Where each executor serves its metrics, its readiness check: a port of its own, whatever
   * METRICS_PORT says (off included), so that the two never contend for one.
   */
  executorMetrics: readonly { port: number; url: string }[];
  /**
   * Where the scheduler and the gateway serve their metrics: free ports (so that a second stack on
   * this machine never meets the defaults taken), or none with METRICS_PORT=off.
   */
  serviceMetrics:
    { scheduler: { port: number; url: string }; gateway: { port: number; url: string } } | undefined;
}

/** `port` when it can be bound on `host` right now, else a free port. */
async function preferredPort(picker: PortPicker, host: string, port: number): Promise<number> {
  const free = await new Promise<boolean>((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
  return free ? picker.take(port) : picker.free(host);
}

/** A host to connect to for a host the server listens on (wildcards mean this machine). */
export function connectHost(host: string): string {
  const bare = host.replace(/^\[|\]$/g, "");
  if (bare === "0.0.0.0" || bare === "::" || bare === "") return "127.0.0.1";
  return bare.includes(":") ? `[${bare}]` : bare;
}

/** Chooses the ports of the stack; throws ConfigError for a bad variable, naming it. */
export async function choosePorts(env: NodeJS.ProcessEnv, picker = new PortPicker()): Promise<DevPorts> {
  const scheduler = loadSchedulerConfig(env);
  // SCHEDULER_ADDRESS is ours to set for the gateway; a stale one in the environment must not fail validation.
  const gateway = loadGatewayConfig({ ...env, SCHEDULER_ADDRESS: undefined });
  // Only METRICS_HOST is taken from the environment: each executor gets a metrics port of its own.
  const metricsHost =
    loadExecutorConfig({ METRICS_HOST: env["METRICS_HOST"], METRICS_PORT: "0" }).metrics?.host ?? "127.0.0.1";
  const isSet = (name: string): boolean => (env[name] ?? "").trim() !== "";
  const schedulerPort =
    scheduler.port !== 0 && isSet("SCHEDULER_PORT")
      ? picker.take(scheduler.port)
      : await picker.free(scheduler.host);
  const gatewayPort = !isSet("GATEWAY_PORT")
    ? // The documented default (8080) when it is free, so the README's curl lines work as written.
      await preferredPort(picker, gateway.host, gateway.port)
    : gateway.port !== 0
      ? picker.take(gateway.port)
      : await picker.free(gateway.host);
  // Free ports, never the documented default (9465): dev sets the port explicitly, so a port taken
  // between this choice and the executor's start would stop it, and a default is what another
  // stack on this machine (a second npm start, tests starting several) picks at the same moment.
  const metricsPorts = [await picker.free(metricsHost), await picker.free(metricsHost)];
  const endpoint = (port: number): { port: number; url: string } => ({
    port,
    url: `http://${connectHost(metricsHost)}:${port}/metrics`,
  });
  const metricsOff = (env["METRICS_PORT"] ?? "").trim().toLowerCase() === "off";
  return {
    picker,
    schedulerHost: scheduler.host,
    schedulerPort,
    schedulerAddress: `${connectHost(scheduler.host)}:${schedulerPort}`,
    gatewayHost: gateway.host,
    gatewayPort,
    gatewayUrl: `http://${connectHost(gateway.host)}:${gatewayPort}`,
    metricsHost,
    executorMetrics: metricsPorts.map(endpoint),
    serviceMetrics: metricsOff
      ? undefined
      : {
          scheduler: endpoint(await picker.free(metricsHost)),
          gateway: endpoint(await picker.free(metricsHost)),
        },
  };
}
