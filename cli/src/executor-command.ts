/**
 * `nexusflow executor --handlers ./my-handlers.ts`: an executor process with your handlers, run
 * from any directory, attached to the running dev stack or to any scheduler.
 *
 * What it adds to the executor process (services/executor/src/main.ts, configured by the same
 * variables): options that override those variables; the running dev stack's scheduler and
 * artifact directory when nothing names others; an `executor`-scope token minted for its own id
 * with the dev stack's key when no EXECUTOR_TOKEN is given; and `@nexusflow/executor` (common, gen)
 * importable from a handler module that has no copy of its own (own-packages.ts).
 */
import { access, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import {
  ConfigError,
  type ExecutorConfig,
  createLogger,
  loadExecutorConfig,
  logProcessWarnings,
} from "@nexusflow/common";
import { type ArtifactStore, createArtifactStore, isArtifactError } from "@nexusflow/common/artifacts";
import { loadTelemetryConfig } from "@nexusflow/common/config";
import { type TelemetryConfig, shutdownTelemetry, startTelemetry } from "@nexusflow/common/telemetry";
import {
  Executor,
  type BearerTokenSource,
  HandlerModuleError,
  HandlerRegistrationError,
  bearerToken,
  isExecutorError,
  loadHandlerModule,
  processExecutorOptions,
} from "@nexusflow/executor";
import { ensureDevKeys, mintDevToken } from "./dev-keys.js";
import { type DevState, findDevKeys, readDevState } from "./dev-state.js";
import { type CommandIo, parseArgsErrorText } from "./command.js";
import { shareOwnPackages } from "./own-packages.js";

/** The options of `nexusflow executor` (`nexusflow help` explains them). */
const SYNOPSIS =
  "nexusflow executor [--handlers <module>] [--id ID] [--slots N] [--types a,b] [--scheduler host:port]";

/** Lifetime of a token minted with the dev key; a session opened later gets a fresh one. */
const DEV_TOKEN_TTL_SEC = 3600;
/** A minted token with less than this left is replaced before a session is opened with it. */
const DEV_TOKEN_RENEW_BEFORE_MS = 10 * 60_000;

/** Each option and the variable it overrides. */
const OPTION_VARIABLES = {
  handlers: "EXECUTOR_HANDLERS",
  id: "EXECUTOR_ID",
  slots: "EXECUTOR_SLOTS",
  types: "EXECUTOR_TASK_TYPES",
  scheduler: "SCHEDULER_ADDRESS",
} as const;

type OptionName = keyof typeof OPTION_VARIABLES;

/** The command cannot run as configured: one line, and the exit code (2: bad usage or configuration). */
class CommandFailure extends Error {
  override name = "CommandFailure";
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

/** Error text on one line (module loaders and esbuild write several). */
function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}

function errorText(e: unknown): string {
  return oneLine(e instanceof Error ? e.message : String(e));
}

/** Parses the options; every value given must be non-empty. */
function parseOptions(args: string[]): Partial<Record<OptionName, string>> | "help" {
  let values: Partial<Record<OptionName | "help", string | boolean>>;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        handlers: { type: "string" },
        id: { type: "string" },
        slots: { type: "string" },
        types: { type: "string" },
        scheduler: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    throw new CommandFailure(parseArgsErrorText(e, args), 2);
  }
  if (values.help === true) return "help";
  const options: Partial<Record<OptionName, string>> = {};
  for (const name of Object.keys(OPTION_VARIABLES) as OptionName[]) {
    const value = values[name];
    if (typeof value !== "string") continue;
    const trimmed = value.trim();
    const empty = name === "types" ? trimmed.split(",").every((t) => t.trim() === "") : trimmed === "";
    if (empty) throw new CommandFailure(`--${name} needs a value`, 2);
    options[name] = trimmed;
  }
  return options;
}

function isSet(env: NodeJS.ProcessEnv, name: string): boolean {
  return (env[name] ?? "").trim() !== "";
}

/**
 * The executor's configuration: the options over the environment, with the running dev stack's
 * scheduler (and, when attaching to it, its artifact directory) where neither names one.
 */
function configure(
  options: Partial<Record<OptionName, string>>,
  env: NodeJS.ProcessEnv,
  stack: DevState | undefined,
): ExecutorConfig {
  const merged: NodeJS.ProcessEnv = { ...env };
  for (const [name, variable] of Object.entries(OPTION_VARIABLES)) {
    const value = options[name as OptionName];
    if (value !== undefined) merged[variable] = value;
  }
  if (!isSet(merged, "SCHEDULER_ADDRESS") && stack?.schedulerAddress !== undefined) {
    merged["SCHEDULER_ADDRESS"] = stack.schedulerAddress;
  }
  const attachingToStack =
    stack?.schedulerAddress !== undefined && merged["SCHEDULER_ADDRESS"]?.trim() === stack.schedulerAddress;
  // The stack's scheduler serves task logs from its artifact directory: write them there, unless
  // the environment says where they go.
  const storageSet = ["ARTIFACTS_DIR", "S3_ENDPOINT", "NEXUSFLOW_DATA_DIR"].some((v) => isSet(env, v));
  if (attachingToStack && !storageSet && stack.artifactsDir !== undefined) {
    merged["ARTIFACTS_DIR"] = stack.artifactsDir;
  }
  try {
    return loadExecutorConfig(merged);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    const option = (Object.keys(OPTION_VARIABLES) as OptionName[]).find(
      (name) => OPTION_VARIABLES[name] === e.variable && options[name] !== undefined,
    );
    // An option's error names the option; the variable's prefix in the message is then dropped.
    const prefix = `${e.variable}: `;
    const detail = e.message.startsWith(prefix) ? e.message.slice(prefix.length) : e.message;
    throw new CommandFailure(option === undefined ? e.message : `--${option}: ${detail}`, 2);
  }
}

/** What the session sends as its bearer token, and where it came from (for the attach line). */
interface TokenChoice {
  source: BearerTokenSource;
  description: string;
}

/**
 * EXECUTOR_TOKEN, else EXECUTOR_TOKEN_FILE (read for every session, like the executor process),
 * else tokens minted with the dev key for `executorId`, renewed before they expire.
 */
async function chooseToken(config: ExecutorConfig, io: CommandIo): Promise<TokenChoice> {
  if (config.token !== undefined) return { source: config.token, description: "EXECUTOR_TOKEN" };
  const tokenFile = config.tokenFile;
  if (tokenFile !== undefined) {
    return {
      source: async () => (await readFile(tokenFile, "utf8")).trim(),
      description: `EXECUTOR_TOKEN_FILE ${tokenFile}`,
    };
  }
  // The key `nexusflow token` would use, but never a new one: no stack would accept its tokens.
  const location = await findDevKeys(io.env, io.root, io.cwd).catch(() => undefined);
  const exists =
    location !== undefined &&
    (await access(join(location.dir, "private.pem")).then(
      () => true,
      () => false,
    ));
  if (!exists) {
    throw new CommandFailure(
      `no token for executor ${config.executorId}: set EXECUTOR_TOKEN or EXECUTOR_TOKEN_FILE (a token with the ` +
        `executor scope for this id), or start the dev stack (npm start) or set NEXUSFLOW_DATA_DIR to its data directory`,
      2,
    );
  }
  const keys = await ensureDevKeys(location.dir);
  let current: { token: string; expiresAt: number } | undefined;
  const source = async (): Promise<string> => {
    if (current === undefined || current.expiresAt - Date.now() < DEV_TOKEN_RENEW_BEFORE_MS) {
      const expiresAt = Date.now() + DEV_TOKEN_TTL_SEC * 1000;
      const token = await mintDevToken(keys, {
        subject: config.executorId,
        scopes: ["executor"],
        ttlSec: DEV_TOKEN_TTL_SEC,
      });
      current = { token, expiresAt };
    }
    return current.token;
  };
  return { source, description: `a dev token minted with ${keys.dir}` };
}

/** The handler module's absolute path; it must be a file. */
async function handlerFile(module: string, cwd: string, named: string): Promise<string> {
  const file = resolve(cwd, module);
  const info = await stat(file).catch(() => undefined);
  if (info === undefined) throw new CommandFailure(`${named}: no such file: ${file}`, 2);
  if (!info.isFile()) throw new CommandFailure(`${named}: not a file: ${file}`, 2);
  return file;
}

/**
 * Runs the executor until `io.signal` aborts, then drains it (`executor.stop()`). Returns the exit
 * code: 0 after a stop, 1 when the scheduler refuses the session or it cannot start, 2 on bad
 * options or configuration (one line on stderr saying which).
 */
export async function executorCommand(args: string[], io: CommandIo): Promise<number> {
  try {
    return await run(args, io);
  } catch (e) {
    io.stderr(`nexusflow: executor: ${errorText(e)}\n`);
    return e instanceof CommandFailure ? e.exitCode : 1;
  }
}

async function run(args: string[], io: CommandIo): Promise<number> {
  const options = parseOptions(args);
  if (options === "help") {
    io.stdout(`Usage: ${SYNOPSIS}\nRun "nexusflow help" for what each option does.\n`);
    return 0;
  }
  const stack = await readDevState(io.env);
  const config = configure(options, io.env, stack);
  const named = (name: OptionName): string =>
    options[name] !== undefined ? `--${name}` : OPTION_VARIABLES[name];
  const file =
    config.handlersModule === undefined
      ? undefined
      : await handlerFile(config.handlersModule, io.cwd, named("handlers"));
  const token = await chooseToken(config, io);

  let artifacts: ArtifactStore;
  try {
    artifacts = await createArtifactStore(config.artifacts);
  } catch (e) {
    if (e instanceof ConfigError) throw new CommandFailure(e.message, 2);
    if (isArtifactError(e)) throw new CommandFailure(`artifact store: ${errorText(e)}`, 2);
    throw e;
  }
  const telemetry = telemetryConfig(io.env);
  try {
    return await serve(config, named, file, token, artifacts, stack, telemetry, io);
  } finally {
    // Flushes the spans still buffered (a no-op with tracing off).
    await shutdownTelemetry();
  }
}

/**
 * Tracing as the executor process has it (services/executor/src/main.ts): from the OTEL_*
 * variables, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set; a bad value ends the command at once.
 */
function telemetryConfig(env: NodeJS.ProcessEnv): TelemetryConfig | undefined {
  try {
    return loadTelemetryConfig("nexusflow-executor", env);
  } catch (e) {
    if (e instanceof ConfigError) throw new CommandFailure(e.message, 2);
    throw e;
  }
}

/** Builds the executor, loads the handlers, runs until the signal aborts, and drains. */
async function serve(
  config: ExecutorConfig,
  named: (name: OptionName) => string,
  file: string | undefined,
  token: TokenChoice,
  artifacts: ArtifactStore,
  stack: DevState | undefined,
  telemetry: TelemetryConfig | undefined,
  io: CommandIo,
): Promise<number> {
  const logger = createLogger("executor", config.logLevel, { traceContext: telemetry !== undefined });
  logProcessWarnings(logger);
  let executor: Executor;
  try {
    executor = new Executor(
      processExecutorOptions(config, io.env, { artifacts, logger, metadata: bearerToken(token.source) }),
    );
  } catch (e) {
    if (isExecutorError(e, "INVALID_OPTIONS")) throw new CommandFailure(errorText(e), 2);
    throw e;
  }

  if (file !== undefined) {
    shareOwnPackages();
    try {
      const added = await loadHandlerModule(file, executor.registry);
      logger.info({ module: file, task_types: added }, "handler module loaded");
    } catch (e) {
      if (e instanceof HandlerModuleError || e instanceof HandlerRegistrationError) {
        throw new CommandFailure(`${named("handlers")}: ${errorText(e)}`, 2);
      }
      throw e;
    }
  }

  // Tracing starts once the handler module is loaded: the module hooks its instrumentations
  // register (import-in-the-middle) would keep the module's imports of @nexusflow/executor from
  // resolving through shareOwnPackages. So, unlike the executor process, the modules loaded before
  // (gRPC, HTTP, pg, the handler module's own imports) are not instrumented: what is traced is the
  // SDK's own spans, the handler span (a child of the scheduler's attempt span the lease names)
  // and a handler's spans (`ctx.startSpan`).
  await startTelemetry(telemetry);
  if (io.signal.aborted) return 0; // Ctrl-C while loading: nothing to drain
  // From here on, Ctrl-C drains: the executor stops when the signal aborts.
  let onAbort = (): void => {};
  const stopped = new Promise<void>((resolve) => {
    onAbort = () => resolve(executor.stop(errorText(io.signal.reason)));
    io.signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    try {
      await executor.start();
    } catch (e) {
      if (isExecutorError(e, "STOPPED")) {
        await stopped; // Ctrl-C before the first attach
        return 0;
      }
      if (isExecutorError(e, "UNKNOWN_TASK_TYPES")) {
        throw new CommandFailure(`${named("types")}: ${errorText(e)}`, 2);
      }
      if (isExecutorError(e, "ATTACH_REFUSED")) {
        throw new CommandFailure(`${errorText(e)} (token: ${token.description})`, 1);
      }
      throw new CommandFailure(`could not start: ${errorText(e)}`, 1);
    }
    const where = config.schedulerAddress === stack?.schedulerAddress ? " (the running dev stack)" : "";
    io.stderr(
      `nexusflow: executor ${config.executorId} attached to ${config.schedulerAddress}${where}: ` +
        `types ${executor.taskTypes.join(", ")}; ${config.slots} slots; Ctrl-C drains and stops\n`,
    );
    await stopped;
    return 0;
  } finally {
    io.signal.removeEventListener("abort", onAbort);
  }
}
