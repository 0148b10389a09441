/**
 * `nexusflow dev`: the whole stack on one machine, as child processes of this CLI.
 *
 * Order: scheduler, two executors (executor-2 also loads examples/handlers.ts), gateway, each
 * started once the one before is ready, as its readiness check says (readiness.ts: an RPC, the
 * executor's attached gauge, `GET /healthz`; never its log), at ports chosen before they start
 * (dev-ports.ts). Then every examples/*.json workflow is registered through the gateway, the sample
 * order-pipeline runs with its progress shown, and the stack keeps running until Ctrl-C. Every
 * service trusts only the local dev key (dev-keys.ts), with which this command mints the
 * executors' tokens and its own. Stopping goes the other way round: gateway, executors, scheduler,
 * each with SIGTERM and, after a grace period, SIGKILL to its process group.
 */
import { readFile, readdir } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import type { JsonValue } from "@bufbuild/protobuf";
import { NexusflowClient } from "@nexusflow/client";
import { ConfigError, createLogger, loadSchedulerConfig } from "@nexusflow/common";
import { type Run, RunStatus } from "@nexusflow/gen";
import { ChildExitedError, ChildNotReadyError, type ChildSpec, ManagedChild } from "./child.js";
import { describeError } from "./describe-error.js";
import { waitForBalancedReplicas } from "./dev-cluster.js";
import { devAuthEnv, devKeysDir, ensureDevKeys, mintDevToken } from "./dev-keys.js";
import { type UiBuild, ensureUiBuilt, uiSignInLink, uiUrl } from "./dev-ui.js";
import { type DevPorts, choosePorts, connectHost } from "./dev-ports.js";
import { removeDevState, writeDevState } from "./dev-state.js";
import { formatChildLine } from "./log-format.js";
import { followRun } from "./follow-run.js";
import { formatRunSummary } from "./progress.js";
import { executorReadiness, gatewayReadiness, schedulerReadiness, waitUntilReady } from "./readiness.js";
import { type Style, box, createStyle } from "./style.js";

/** Options of {@link runDev}. */
export interface DevOptions {
  /** Repository root: where `services/` and `examples/` are. */
  root: string;
  /** Environment the services inherit; SCHEDULER_PORT and GATEWAY_PORT are honoured when set. */
  env: NodeJS.ProcessEnv;
  /** Aborted on SIGINT/SIGTERM: stop the stack and return 0. */
  signal: AbortSignal;
  /**
   * Stop after the sample run and return 0 if it succeeded, 1 otherwise (smoke tests).
   * @default false
   */
  exitAfterSample?: boolean;
  /**
   * Writes output text.
   * @default process.stdout.write
   */
  write?: (text: string) => void;
  /**
   * Colourful output.
   * @default false
   */
  color?: boolean;
  /**
   * Time between SIGTERM and SIGKILL when stopping a service, in milliseconds.
   * @default 10_000
   */
  stopGraceMs?: number;
  /**
   * Scheduler replicas to run (1 to {@link MAX_DEV_SCHEDULERS}). More than one run in cluster mode
   * (SCHEDULER_CLUSTER=true, docs/replicas.md) on one database: the embedded PostgreSQL, started by
   * this command, unless DATABASE_URL names one.
   * @default 1
   */
  schedulers?: number;
}

/** The most scheduler replicas `nexusflow dev --schedulers N` runs. */
export const MAX_DEV_SCHEDULERS = 9;

/** The sample workflow and its input, relative to the examples directory. */
const SAMPLE_SPEC = "order-pipeline.json";
const SAMPLE_INPUT = "order-pipeline.input.json";

const SCHEDULER_READY_TIMEOUT_MS = 180_000;
const EXECUTOR_READY_TIMEOUT_MS = 60_000;
const GATEWAY_READY_TIMEOUT_MS = 30_000;
/** How long `--schedulers N` waits for every replica to hold partitions (the stable period is 15 s). */
const BALANCE_TIMEOUT_MS = 60_000;
const SAMPLE_TIMEOUT_MS = 300_000;

/** Lifetime of the executors' tokens: the dev stack runs until Ctrl-C, executors reconnect with the same token. */
const EXECUTOR_TOKEN_TTL_SEC = 7 * 86_400;
/** Lifetime of the token the dev command itself uses to register the examples and run the sample. */
const CLI_TOKEN_TTL_SEC = 12 * 3600;

/** METRICS_HOST and METRICS_PORT for a service with `endpoint`, or METRICS_PORT=off without one. */
function metricsEnv(host: string, endpoint: { port: number } | undefined): NodeJS.ProcessEnv {
  return endpoint === undefined
    ? { METRICS_PORT: "off" }
    : { METRICS_HOST: host, METRICS_PORT: String(endpoint.port) };
}

/** Where each service serves `/metrics`, a line each, for the box printed at start. */
function metricsLines(ports: DevPorts): string[] {
  const services = ports.serviceMetrics;
  return [
    ...(services === undefined
      ? []
      : [`scheduler   ${services.scheduler.url}`, `gateway     ${services.gateway.url}`]),
    ...ports.executorMetrics.map((m, i) => `executor-${i + 1}  ${m.url}`),
  ];
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(invalid URL)";
  }
}

/** The running children, started in order and stopped in reverse. */
class Stack {
  readonly #children: ManagedChild[] = [];
  readonly #lifetime: AbortController;
  readonly #style: Style;
  readonly #write: (text: string) => void;
  #stopping = false;

  constructor(lifetime: AbortController, style: Style, write: (text: string) => void) {
    this.#lifetime = lifetime;
    this.#style = style;
    this.#write = write;
  }

  start(spec: ChildSpec): ManagedChild {
    const child = new ManagedChild(spec, (name, line, stream) =>
      this.#write(`${formatChildLine(name, line, stream, this.#style)}\n`),
    );
    this.#children.push(child);
    void child.exited.then((exit) => {
      if (!this.#stopping) this.#lifetime.abort(new ChildExitedError(child.name, exit));
    });
    return child;
  }

  /** Whether any child was started. */
  get started(): boolean {
    return this.#children.length > 0;
  }

  find(name: string): ManagedChild | undefined {
    return this.#children.find((c) => c.name === name);
  }

  /** Stops every child, last started first; children started together stop together. */
  async stop(graceMs: number, groups: readonly (readonly string[])[]): Promise<void> {
    this.#stopping = true;
    const remaining = new Set(this.#children);
    for (const group of groups) {
      const members = this.#children.filter((c) => group.includes(c.name));
      members.forEach((c) => remaining.delete(c));
      await Promise.all(members.map((c) => c.stop(graceMs)));
    }
    await Promise.all([...remaining].map((c) => c.stop(graceMs)));
  }

  /** Last resort on process exit: SIGKILL every child's process group. */
  killAll(): void {
    for (const child of this.#children) child.killGroup();
  }
}

/**
 * Runs the dev stack until `options.signal` aborts (or, with `exitAfterSample`, until the sample
 * run ends). Returns the process exit code: 0 on a normal stop, 1 when a service failed or the
 * sample failed, 2 on bad configuration.
 */
export async function runDev(options: DevOptions): Promise<number> {
  const write = options.write ?? ((text: string) => void process.stdout.write(text));
  const style = createStyle(options.color ?? false);
  const say = (line = ""): void => write(`${line}\n`);
  const fail = (message: string): void => write(`${style.red(style.bold("nexusflow dev:"))} ${message}\n`);
  const { root, env } = options;
  const examplesDir = join(root, "examples");
  const watchdog = join(root, "cli", "src", "parent-watchdog.ts");
  const service = (name: string): string => join(root, "services", name, "src", "main.ts");

  // Aborted by Ctrl-C (reason: the signal's) or by a child that died (reason: ChildExitedError).
  const lifetime = new AbortController();
  const onSignal = (): void => lifetime.abort(options.signal.reason);
  if (options.signal.aborted) onSignal();
  else options.signal.addEventListener("abort", onSignal, { once: true });

  const stack = new Stack(lifetime, style, write);
  const killAll = (): void => stack.killAll();
  process.on("exit", killAll);
  const clients: NexusflowClient[] = [];

  let exitCode = 0;
  let stateRecorded = false;
  let stopDatabase: (() => Promise<void>) | undefined;
  try {
    // Nobody without a valid token gets in, not even in dev: the services trust a local dev key
    // (created on first use) and nothing else; tokens are minted here for the executors and for us.
    const dataDir = resolve(root, env["NEXUSFLOW_DATA_DIR"]?.trim() || ".nexusflow");
    const keys = await ensureDevKeys(devKeysDir(dataDir));
    const authEnv = devAuthEnv(keys);
    const ports = await choosePorts({ ...env, ...authEnv });
    const common = (name: string, entry: string, extra: NodeJS.ProcessEnv): ChildSpec => ({
      name,
      entry,
      cwd: root,
      env: { ...env, ...authEnv, ...extra },
      preload: [watchdog],
    });
    const executorToken = (id: string): Promise<string> =>
      mintDevToken(keys, { subject: id, scopes: ["executor"], ttlSec: EXECUTOR_TOKEN_TTL_SEC });
    // What this command calls the services with: the scheduler's readiness check, then the gateway.
    const token = await mintDevToken(keys, {
      subject: "nexusflow-dev",
      scopes: ["workflows:write", "workflows:read", "runs:write", "runs:read"],
      ttlSec: CLI_TOKEN_TTL_SEC,
    });

    // The web UI builds while the services start (dev-ui.ts); the gateway serves it under /ui/.
    const uiBuild: Promise<UiBuild> = ensureUiBuilt(root, lifetime.signal);
    const uiToken = await mintDevToken(keys, {
      subject: "nexusflow-dev-ui",
      scopes: ["workflows:read", "workflows:write", "runs:read", "runs:write"],
      ttlSec: CLI_TOKEN_TTL_SEC,
    });

    const database = env["DATABASE_URL"]
      ? redactUrl(env["DATABASE_URL"])
      : `embedded PostgreSQL in ${env["NEXUSFLOW_DATA_DIR"] ?? ".nexusflow"}/`;
    say(style.bold(`Starting the Nexusflow dev stack (${database})`));

    const { schedulerAddress, gatewayUrl } = ports;
    const replicas = options.schedulers ?? 1;
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_DEV_SCHEDULERS)
      throw new ConfigError("--schedulers", `expected 1 to ${MAX_DEV_SCHEDULERS}, got ${String(replicas)}`);
    // Several replicas share one database: the embedded one is this command's to start (each
    // scheduler alone would start its own), in the same folder a single scheduler uses.
    let clusterEnv: NodeJS.ProcessEnv = {};
    let databaseUrl: string | undefined;
    if (replicas > 1) {
      let url = env["DATABASE_URL"]?.trim();
      if (url === undefined || url === "") {
        const { startEmbeddedPostgres } = await import("@nexusflow/scheduler");
        const embedded = await startEmbeddedPostgres({
          dir: join(dataDir, "postgres"),
          log: createLogger("postgres", "warn"),
        });
        stopDatabase = () => embedded.stop();
        url = embedded.localUrl;
      }
      clusterEnv = {
        DATABASE_URL: url,
        SCHEDULER_CLUSTER: "true",
        // What a replica presents on its own calls to another (an overlap policy ending a run there).
        SCHEDULER_TOKEN: await mintDevToken(keys, {
          subject: "nexusflow-scheduler",
          scopes: ["runs:read", "runs:write"],
          ttlSec: EXECUTOR_TOKEN_TTL_SEC,
        }),
      };
      databaseUrl = url;
    }
    const schedulerNames = replicas === 1 ? ["scheduler"] : range(replicas).map((i) => `scheduler-${i + 1}`);
    const schedulerAddresses: string[] = [];
    const schedulers: ManagedChild[] = [];
    for (const [i, name] of schedulerNames.entries()) {
      const port = i === 0 ? ports.schedulerPort : await ports.picker.free(ports.schedulerHost);
      const metrics =
        i === 0 || ports.serviceMetrics === undefined
          ? ports.serviceMetrics?.scheduler
          : { port: await ports.picker.free(ports.metricsHost) };
      schedulerAddresses.push(i === 0 ? schedulerAddress : `${connectHost(ports.schedulerHost)}:${port}`);
      schedulers.push(
        stack.start(
          common(name, service("scheduler"), {
            SCHEDULER_HOST: ports.schedulerHost,
            SCHEDULER_PORT: String(port),
            ...clusterEnv,
            ...metricsEnv(ports.metricsHost, metrics),
          }),
        ),
      );
    }
    await Promise.all(
      schedulers.map((scheduler, i) =>
        waitUntilReady(
          scheduler,
          schedulerReadiness(schedulerAddresses[i] ?? schedulerAddress, token),
          SCHEDULER_READY_TIMEOUT_MS,
          lifetime.signal,
        ),
      ),
    );
    if (databaseUrl !== undefined) {
      say(style.gray(`Waiting for the ${replicas} scheduler replicas to share the partitions...`));
      if (!(await waitForBalancedReplicas(databaseUrl, replicas, BALANCE_TIMEOUT_MS, lifetime.signal)))
        fail(
          `the scheduler replicas did not all hold partitions within ${BALANCE_TIMEOUT_MS / 1000} s; going on`,
        );
    }

    // Each executor's metrics say when it has attached (readiness.ts); executor-2 also runs the
    // examples' handlers.
    const executors: [ManagedChild, string][] = [];
    for (const [i, metrics] of ports.executorMetrics.entries()) {
      const id = `executor-${i + 1}`;
      const child = stack.start(
        common(id, service("executor"), {
          SCHEDULER_ADDRESS: schedulerAddress,
          EXECUTOR_ID: id,
          EXECUTOR_TOKEN: await executorToken(id),
          METRICS_HOST: ports.metricsHost,
          METRICS_PORT: String(metrics.port),
          ...(i === 1 ? { EXECUTOR_HANDLERS: join(examplesDir, "handlers.ts") } : {}),
        }),
      );
      executors.push([child, metrics.url]);
    }
    await Promise.all(
      executors.map(([child, metricsUrl]) =>
        waitUntilReady(child, executorReadiness(metricsUrl), EXECUTOR_READY_TIMEOUT_MS, lifetime.signal),
      ),
    );

    const gateway = stack.start(
      common("gateway", service("gateway"), {
        GATEWAY_HOST: ports.gatewayHost,
        GATEWAY_PORT: String(ports.gatewayPort),
        // Every replica: the gateway goes on through another when one stops.
        SCHEDULER_ADDRESS: schedulerAddresses.join(","),
        ...metricsEnv(ports.metricsHost, ports.serviceMetrics?.gateway),
      }),
    );
    await waitUntilReady(gateway, gatewayReadiness(gatewayUrl), GATEWAY_READY_TIMEOUT_MS, lifetime.signal);
    // So that `nexusflow token` in another shell and directory finds this stack's key, and
    // `nexusflow executor` its scheduler and the artifact directory the scheduler reads (dev-state.ts).
    const storage = loadSchedulerConfig({ ...env, ...authEnv }).artifacts;
    stateRecorded = await writeDevState(env, {
      dataDir,
      gatewayUrl,
      pid: process.pid,
      schedulerAddress,
      artifactsDir: storage.s3Endpoint === undefined ? resolve(root, storage.dir) : undefined,
    });
    const ui = await uiBuild;
    if (ui.state === "failed") fail(`the web UI could not be built (${ui.reason}); /ui/ will say so`);
    const tokenCommand =
      `${stateRecorded ? "" : `NEXUSFLOW_DATA_DIR=${dataDir} `}` +
      `npm --prefix ${root} exec -- nexusflow token --scope admin`;

    say();
    say(
      box([
        style.bold("Nexusflow dev stack"),
        "",
        `  ${style.cyan("gateway  ")}  ${style.bold(gatewayUrl)}   gRPC, gRPC-Web, Connect, REST /v1 (h2c and HTTP/1.1)`,
        `  ${style.cyan("web UI   ")}  ${style.bold(uiUrl(gatewayUrl))}   runs, live DAGs, workflows (link below)`,
        ...schedulerAddresses.map(
          (address, i) =>
            `  ${style.cyan(i === 0 ? "scheduler" : "         ")}  ${address}   gRPC, internal${replicas > 1 ? ` (replica ${i + 1} of ${replicas})` : ""}`,
        ),
        `  ${style.cyan("executors")}  executor-1 (built-in types), executor-2 (+ examples/handlers.ts)`,
        `  ${style.cyan("database ")}  ${database}`,
        ...metricsLines(ports).map(
          (line, i) => `  ${style.cyan(i === 0 ? "metrics  " : "         ")}  ${line}`,
        ),
        `  ${style.cyan("auth     ")}  dev key ${relative(root, keys.dir) || keys.dir}/ (tokens: npx nexusflow token --scope ...)`,
        "",
        style.gray(`  export NEXUSFLOW_ADDRESS=${gatewayUrl} NEXUSFLOW_TOKEN=$(${tokenCommand} 2>/dev/null)`),
        style.gray(`  npx nexusflow runs list`),
        style.gray(`  curl -s ${gatewayUrl}/v1/workflows -H "authorization: Bearer $NEXUSFLOW_TOKEN"`),
      ]),
    );
    say();

    const client = new NexusflowClient({ baseUrl: gatewayUrl, token });
    clients.push(client);

    const registered = await registerExamples(client, examplesDir, root, lifetime.signal, say, style);
    let sampleOk = false;
    if (registered.has(SAMPLE_SPEC)) {
      try {
        const run = await runSample(
          client,
          examplesDir,
          root,
          lifetime.signal,
          options.exitAfterSample === true,
          say,
          style,
        );
        sampleOk = run.status === RunStatus.SUCCEEDED;
      } catch (e) {
        if (lifetime.signal.aborted) throw e;
        fail(`the sample run failed: ${describeError(e)}`);
      }
    } else {
      fail(`the sample workflow examples/${SAMPLE_SPEC} is not registered; skipping the sample run`);
    }

    if (options.exitAfterSample === true) {
      exitCode = sampleOk ? 0 : 1;
    } else {
      say();
      say(style.bold(`Nexusflow is running at ${gatewayUrl}. Press Ctrl-C to stop.`));
      say(`Web UI: ${uiUrl(gatewayUrl)}. To open it signed in with a dev token (which the page keeps`);
      say(`in the tab's session storage and removes from the address bar), open:`);
      say(`  ${uiSignInLink(gatewayUrl, uiToken)}`);
      await new Promise<void>((resolve) => {
        if (lifetime.signal.aborted) resolve();
        else lifetime.signal.addEventListener("abort", () => resolve(), { once: true });
      });
      throw lifetime.signal.reason;
    }
  } catch (e) {
    exitCode = reportFailure(e, lifetime.signal, options.signal, stack, write, fail, style);
  } finally {
    options.signal.removeEventListener("abort", onSignal);
    for (const c of clients) c.close();
    if (stack.started) say(style.gray("Stopping gateway, executors and scheduler..."));
    await stack.stop(options.stopGraceMs ?? 10_000, [
      ["gateway"],
      ["executor-1", "executor-2"],
      ["scheduler", ...range(MAX_DEV_SCHEDULERS).map((i) => `scheduler-${i + 1}`)],
    ]);
    // After every scheduler: the database they shared (started here with --schedulers N).
    await stopDatabase?.().catch((e: unknown) =>
      fail(`stopping the embedded PostgreSQL: ${describeError(e)}`),
    );
    process.off("exit", killAll);
    if (stateRecorded) await removeDevState(env, process.pid);
    if (stack.started) say(style.gray("Stopped."));
  }
  return exitCode;
}

/** Prints why the stack stops and returns the exit code. */
function reportFailure(
  e: unknown,
  lifetime: AbortSignal,
  shutdown: AbortSignal,
  stack: Stack,
  write: (text: string) => void,
  fail: (message: string) => void,
  style: Style,
): number {
  // An orderly stop requested by the user, whatever was in progress.
  if (shutdown.aborted && !(lifetime.reason instanceof ChildExitedError)) return 0;
  const error = lifetime.aborted && lifetime.reason instanceof ChildExitedError ? lifetime.reason : e;
  if (error instanceof ChildExitedError || error instanceof ChildNotReadyError) {
    const child = stack.find(error.child);
    const tail = child?.tail() ?? [];
    if (tail.length > 0) {
      write(style.gray(`--- last lines of ${error.child} ---\n`));
      for (const line of tail) write(`${style.gray("|")} ${line}\n`);
      write(style.gray(`---\n`));
    }
    fail(error.message);
    return 1;
  }
  if (error instanceof ConfigError) {
    fail(error.message);
    return 2;
  }
  fail(describeError(error));
  return 1;
}

/** Registers every examples/*.json definition (not the *.input.json files); returns the files that are registered. */
async function registerExamples(
  client: NexusflowClient,
  examplesDir: string,
  root: string,
  signal: AbortSignal,
  say: (line?: string) => void,
  style: Style,
): Promise<Set<string>> {
  const files = (await readdir(examplesDir))
    .filter((f) => f.endsWith(".json") && !f.endsWith(".input.json"))
    .sort();
  say(style.bold(`Registering ${files.length} workflow(s) from ${relative(root, examplesDir)}/`));
  const ok = new Set<string>();
  for (const file of files) {
    const text = await readFile(join(examplesDir, file), "utf8");
    try {
      const res = await client.registerWorkflow(text, { signal });
      const wf = res.workflow;
      say(
        `  ${style.green("✔")} ${wf?.name ?? file} v${wf?.version ?? "?"} ${style.gray(res.created ? "(registered)" : "(unchanged)")}`,
      );
      ok.add(file);
    } catch (e) {
      if (signal.aborted) throw e;
      say(`  ${style.red("✘")} ${file}: ${describeError(e)}`);
    }
  }
  return ok;
}

/** Starts the sample workflow with its sample input, prints its progress and returns the final run. */
async function runSample(
  client: NexusflowClient,
  examplesDir: string,
  root: string,
  signal: AbortSignal,
  bounded: boolean,
  say: (line?: string) => void,
  style: Style,
): Promise<Run> {
  const spec = JSON.parse(await readFile(join(examplesDir, SAMPLE_SPEC), "utf8")) as {
    name: string;
    version: number;
  };
  const input = JSON.parse(await readFile(join(examplesDir, SAMPLE_INPUT), "utf8")) as JsonValue;

  say();
  say(
    style.bold(
      `Running ${spec.name} v${spec.version} with ${relative(root, join(examplesDir, SAMPLE_INPUT))}`,
    ),
  );
  const { run } = await client.startRun(
    {
      workflowName: spec.name,
      workflowVersion: spec.version,
      input,
      labels: { source: "nexusflow-dev" },
      // None, as before: the sample run records no idempotency key.
      idempotencyKey: "",
    },
    { signal },
  );
  say(`  run ${style.bold(run.id)}`);
  const final = await followRun(client, run.id, {
    signal,
    timeoutMs: bounded ? SAMPLE_TIMEOUT_MS : undefined,
    say,
    style,
  });
  say(formatRunSummary(final, style));
  return final;
}
