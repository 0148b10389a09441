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
import { logsCommand } from "./logs-command.js";
import { BROKEN_PIPE_EXIT_CODE, BrokenPipeError, guardOutput } from "./process-output.js";
import { runsCommand } from "./runs-command.js";
import { stopSignalHandler } from "./stop-signals.js";
import { tokenCommand } from "./token-command.js";
import { USAGE, commandUsage, wantsHelp } from "./usage.js";

/** The repository root: cli/src/main.ts is two levels below it. */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Exits 2 with one line, and where to read the usage (of `command` when one is given). */
function usageError(message: string, command?: string): never {
  const help = command === undefined ? "nexusflow help" : `nexusflow help ${command}`;
  process.stderr.write(`nexusflow: ${message}\nRun "${help}" for usage.\n`);
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
    if (e instanceof UsageError) usageError(e.message, command);
    io.stderr(`nexusflow: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

const [command = "help", ...rest] = process.argv.slice(2);

// `nexusflow help runs`, `nexusflow runs --help`, `nexusflow runs list -h`: that command's help.
const helpFor = command === "help" || command === "--help" || command === "-h" ? rest[0] : command;
if (helpFor !== undefined && helpFor !== "help" && (helpFor !== command || wantsHelp(rest))) {
  const usage = commandUsage(helpFor);
  if (usage === undefined) usageError(`unknown command "${helpFor}"`);
  process.stdout.write(usage);
  process.exit(0);
}

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
        },
      });
      exitAfterSample = values["exit-after-sample"] === true;
      if (values.schedulers !== undefined) {
        schedulers = Number(values.schedulers);
        if (!/^\d+$/.test(values.schedulers) || schedulers < 1 || schedulers > MAX_DEV_SCHEDULERS)
          throw new Error(
            `--schedulers: expected 1 to ${MAX_DEV_SCHEDULERS}, got ${JSON.stringify(values.schedulers)}`,
          );
      }
    } catch (e) {
      usageError(parseArgsErrorText(e, rest), "dev");
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
