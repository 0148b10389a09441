/**
 * `nexusflow <command>`: the operator CLI. This module only wires: arguments, environment,
 * signals and the exit code.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { applyCommand } from "./apply-command.js";
import { type CommandIo, UsageError, parseArgsErrorText } from "./command.js";
import { MAX_DEV_SCHEDULERS, runDev } from "./dev.js";
import { DEFAULT_ADDRESS } from "./gateway-client.js";
import { logsCommand } from "./logs-command.js";
import { BROKEN_PIPE_EXIT_CODE, BrokenPipeError, guardOutput } from "./process-output.js";
import { runsCommand } from "./runs-command.js";
import { stopSignalHandler } from "./stop-signals.js";
import { tokenCommand } from "./token-command.js";

/** Usage of the operator commands. */
const OPERATOR_USAGE = `Operator commands (talk to the gateway):
  apply <file>...                 register workflow definitions (JSON files; other JSON is skipped)
  runs start <workflow> [--input <json|@file>] [--version N] [--label k=v]... [--idempotency-key K] [--watch]
  runs get <run-id>               a run with its tasks
  runs list [--workflow W] [--status S]... [--label k=v]... [--limit N] [--page-token T]
  runs watch <run-id>             live progress until the run ends (exit 1 unless it succeeded)
  runs cancel <run-id> [--reason R] [--compensate]
  runs signal <run-id> <name> [--payload JSON|@file] [--idempotency-key K]
  runs rerun <run-id> --from STEP [--input JSON|@file] [--idempotency-key K] [--watch]
                                  a new run from STEP: the steps upstream keep their outputs
  runs why <run-id> <step-id> [--compensation]
                                  why a step is not running: every gate that holds it now
  schedules create <id> --workflow W --cron EXPR [--zone Europe/Lisbon] [--input <json|@file>] [--version N]
                                  [--label k=v]... [--overlap skip|buffer-one|allow-all|cancel-other|terminate-other]
                                  [--max-concurrent N] [--catch-up off|last|all] [--catch-up-window 1h] [--paused] [--note N]
  schedules list [--workflow W] [--limit N] [--page-token T]
  schedules get <id>              a schedule, its next ten fire times and its recent fires
  schedules pause|resume <id> [--note N]
  schedules trigger <id> [--idempotency-key K]
                                  start a run now, whatever the overlap policy
  schedules backfill <id> --from TIME --to TIME
                                  a run for each fire time of [from, to) that has none
  schedules delete <id>
  ratelimits list [--name N] [--limit N] [--page-token T]
                                  rate limit buckets: tokens, pauses, tasks waiting
  ratelimits pause <name> [--key K] --until TIME|--for DURATION [--note N]
                                  no task of the bucket is leased until then (stored: survives restarts)
  ratelimits resume <name> [--key K]
  events publish <key> [--payload JSON|@file] [--idempotency-key K]
                                  store an event: each workflow whose triggers match it starts a run
                                  with the payload as input (the same key again starts nothing)
  events get <event-id>           an event and the run each matching workflow started, or why not
  events list [--prefix P] [--limit N] [--page-token T]
  logs <run-id> <step-id> [--attempt N] [--follow]
                                  a task's log lines; one that is not there is an error saying where it looked
                                  (<step-id>: a step, step.compensation, or step[i] for element i of a map step)
  artifacts list <run-id> [<step-id>]
                                  what a run's tasks stored: step, attempt, name, size, content type
  artifacts get <run-id> <step-id> <name> [--attempt N] [-o FILE|-] [--force] [--stream]
                                  one of those files (the latest attempt's unless --attempt) to standard output,
                                  or with -o to FILE (replaced only with --force); --stream skips presigned URLs
  executors [--type T] [--limit N] [--page-token T]
                                  the executor sessions attached now: task types, leases held, slots, credit, draining
  cluster                         the scheduler replicas, the partitions each owns and their epochs
  token [--scope S]... [--ttl 1h] [--subject NAME]
                                  mint a DEV token with the dev key of NEXUSFLOW_DATA_DIR, ./.nexusflow or the running npm start

Common options:
  --address URL      the gateway (NEXUSFLOW_ADDRESS; default: the running npm start's, else ${DEFAULT_ADDRESS})
  --token JWT        bearer token (NEXUSFLOW_TOKEN; on this machine, a dev token when the dev key exists)
  --output FORMAT    table (default) or json (artifacts get: -o/--output is the file to write)
`;

const USAGE = `Usage: nexusflow <command> [options]

Commands:
  dev      Start the whole stack locally (scheduler, two executors, gateway), register the
           workflows in examples/, run the sample order-pipeline and keep running until Ctrl-C.
           Options:
             --exit-after-sample   stop after the sample run; exit 0 if it succeeded, 1 if not
             --schedulers N        run N scheduler replicas (1 to 9, default 1) sharing one database
                                   in cluster mode (docs/replicas.md); SCHEDULER_PORT is the first's
           The services trust only a local dev key (.nexusflow/dev-keys, created on first use).
  executor [--handlers <module>] [--id ID] [--slots N] [--types a,b] [--scheduler host:port]
           Run an executor with the built-in task types and the handlers of a module (.ts or .js,
           relative to the current directory, default export (registry) => ...; it may import
           @nexusflow/executor without installing it) until Ctrl-C, which drains it (again: exit now).
           Defaults: EXECUTOR_HANDLERS, EXECUTOR_ID, EXECUTOR_SLOTS, EXECUTOR_TASK_TYPES and
           SCHEDULER_ADDRESS, else the running dev stack's scheduler. Token: EXECUTOR_TOKEN or
           EXECUTOR_TOKEN_FILE, else minted for the executor id with the dev key (as token finds it).
  events tail [--brokers host:port] [--topic T] [--from-beginning] [--run ID]
           Print lifecycle events as JSON lines until Ctrl-C: from Kafka (KAFKA_BROKERS, KAFKA_TOPIC),
           else from the outbox in PostgreSQL (DATABASE_URL, else the dev stack's database).
  help     Show this help.

Environment (dev): SCHEDULER_PORT and GATEWAY_PORT (free ports when unset), DATABASE_URL (unset:
embedded PostgreSQL under NEXUSFLOW_DATA_DIR, default .nexusflow), LOG_LEVEL, and everything else
the services read; it is passed through to them.

${OPERATOR_USAGE}`;

/** The repository root: cli/src/main.ts is two levels below it. */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

function usageError(message: string): never {
  process.stderr.write(`nexusflow: ${message}\nRun "nexusflow help" for usage.\n`);
  process.exit(2);
}

/**
 * What an operator command gets: the environment, Ctrl-C as a signal, the output streams. The
 * signal also aborts when standard output can no longer be written (`| head -1`: EPIPE), and
 * `stdoutBroken` then says so.
 */
function operatorIo(): CommandIo & { readonly stdoutBroken: boolean } {
  const interrupt = new AbortController();
  const onSignal = (): void => {
    if (interrupt.signal.aborted) process.exit(130);
    interrupt.abort(new Error("interrupted"));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const stdout = guardOutput(process.stdout, (e) =>
    interrupt.abort(new BrokenPipeError(`standard output: ${e.message}`, { cause: e })),
  );
  const stderr = guardOutput(process.stderr);
  return {
    env: process.env,
    signal: interrupt.signal,
    stdout: (text) => stdout.write(text),
    stderr: (text) => stderr.write(text),
    color: process.stdout.isTTY === true && (process.env["NO_COLOR"] ?? "") === "",
    root: ROOT,
    cwd: process.cwd(),
    get stdoutBroken() {
      return stdout.broken;
    },
  };
}

/**
 * Runs an operator command to its exit code; usage errors exit 2 with one line. A command whose
 * reader went away (`| head -1`) ends quietly with {@link BROKEN_PIPE_EXIT_CODE}.
 */
async function operator(
  run: (args: string[], io: CommandIo) => Promise<number>,
  args: string[],
): Promise<number> {
  const io = operatorIo();
  try {
    const code = await run(args, io);
    return io.stdoutBroken ? BROKEN_PIPE_EXIT_CODE : code;
  } catch (e) {
    if (io.stdoutBroken) return BROKEN_PIPE_EXIT_CODE;
    if (e instanceof UsageError) usageError(e.message);
    io.stderr(`nexusflow: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

const [command = "help", ...rest] = process.argv.slice(2);

switch (command) {
  case "help":
  case "--help":
  case "-h":
    process.stdout.write(USAGE);
    process.exit(0);
    break;
  case "dev": {
    let exitAfterSample = false;
    let schedulers = 1;
    try {
      const { values } = parseArgs({
        args: rest,
        options: {
          "exit-after-sample": { type: "boolean" },
          schedulers: { type: "string" },
          help: { type: "boolean", short: "h" },
        },
      });
      if (values.help === true) {
        process.stdout.write(USAGE);
        process.exit(0);
      }
      exitAfterSample = values["exit-after-sample"] === true;
      if (values.schedulers !== undefined) {
        schedulers = Number(values.schedulers);
        if (!/^\d+$/.test(values.schedulers) || schedulers < 1 || schedulers > MAX_DEV_SCHEDULERS)
          throw new Error(
            `--schedulers: expected 1 to ${MAX_DEV_SCHEDULERS}, got ${JSON.stringify(values.schedulers)}`,
          );
      }
    } catch (e) {
      usageError(parseArgsErrorText(e, rest));
    }

    const shutdown = new AbortController();
    // One Ctrl-C can arrive two or three times (terminal, npm, tsx): see stop-signals.ts.
    const onSignal = stopSignalHandler({
      onStop: (signal) => {
        process.stderr.write(`\n${signal}: stopping (press Ctrl-C again to kill everything now)\n`);
        shutdown.abort(new Error(`stopped by ${signal}`));
      },
      // runDev's exit hook SIGKILLs the services' process groups.
      onForce: () => process.exit(130),
    });
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);

    const color = process.stdout.isTTY === true && (process.env["NO_COLOR"] ?? "") === "";
    const code = await runDev({
      root: ROOT,
      env: process.env,
      signal: shutdown.signal,
      exitAfterSample,
      color,
      schedulers,
    });
    process.exit(code);
    break;
  }
  case "apply":
    process.exit(await operator(applyCommand, rest));
    break;
  case "runs":
    process.exit(await operator(runsCommand, rest));
    break;
  case "logs":
    process.exit(await operator(logsCommand, rest));
    break;
  case "schedules":
    process.exit(
      await operator(async (a, io) => (await import("./schedules-command.js")).schedulesCommand(a, io), rest),
    );
    break;
  case "ratelimits":
    process.exit(
      await operator(
        async (a, io) => (await import("./ratelimits-command.js")).rateLimitsCommand(a, io),
        rest,
      ),
    );
    break;
  case "executors":
    process.exit(
      await operator(async (a, io) => (await import("./executors-command.js")).executorsCommand(a, io), rest),
    );
    break;
  case "cluster":
    process.exit(
      await operator(async (a, io) => (await import("./cluster-command.js")).clusterCommand(a, io), rest),
    );
    break;
  case "artifacts":
    process.exit(
      await operator(
        async (a, io) =>
          (await import("./artifacts-command.js")).artifactsCommand(a, {
            ...io,
            binaryStdout: process.stdout,
          }),
        rest,
      ),
    );
    break;
  case "events": // loaded on demand: only this command needs kafkajs
    process.exit(await operator(async (a, io) => (await import("./events.js")).eventsCommand(a, io), rest));
    break;
  case "token":
    process.exit(await operator(tokenCommand, rest));
    break;
  case "executor": {
    // Ctrl-C drains the executor; a second one (not a copy of the first: stop-signals.ts) exits now.
    const drain = new AbortController();
    const onSignal = stopSignalHandler({
      onStop: (signal) => {
        process.stderr.write(`\n${signal}: draining (press Ctrl-C again to exit at once)\n`);
        drain.abort(new Error(signal));
      },
      onForce: () => process.exit(130),
    });
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    const { executorCommand } = await import("./executor-command.js"); // loads the executor
    const io: CommandIo = {
      env: process.env,
      signal: drain.signal,
      stdout: (text) => void process.stdout.write(text),
      stderr: (text) => void process.stderr.write(text),
      color: false,
      root: ROOT,
      cwd: process.cwd(),
    };
    process.exit(await executorCommand(rest, io));
    break;
  }
  default:
    usageError(`unknown command "${command}"`);
}
