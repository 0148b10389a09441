/**
 * `nexusflow <command>`: the operator CLI. This module only wires: arguments, environment,
 * signals and the exit code.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { runDev } from "./dev.js";

const USAGE = `Usage: nexusflow <command> [options]

Commands:
  dev      Start the whole stack locally (scheduler, two executors, gateway), register the
           workflows in examples/, run the sample order-pipeline and keep running until Ctrl-C.
           Options:
             --exit-after-sample   stop after the sample run; exit 0 if it succeeded, 1 if not
  help     Show this help.

Environment (dev): SCHEDULER_PORT and GATEWAY_PORT (free ports when unset), DATABASE_URL (unset:
embedded PostgreSQL under NEXUSFLOW_DATA_DIR, default .nexusflow), LOG_LEVEL, and everything else
the services read; it is passed through to them.
`;

/** The repository root: cli/src/main.ts is two levels below it. */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

function usageError(message: string): never {
  process.stderr.write(`nexusflow: ${message}\nRun "nexusflow help" for usage.\n`);
  process.exit(2);
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
    try {
      const { values } = parseArgs({
        args: rest,
        options: { "exit-after-sample": { type: "boolean" }, help: { type: "boolean", short: "h" } },
      });
      if (values.help === true) {
        process.stdout.write(USAGE);
        process.exit(0);
      }
      exitAfterSample = values["exit-after-sample"] === true;
    } catch (e) {
      usageError(e instanceof Error ? e.message : String(e));
    }

    const shutdown = new AbortController();
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals === 1) {
        process.stderr.write(`\n${signal}: stopping (press Ctrl-C again to kill everything now)\n`);
        shutdown.abort(new Error(`stopped by ${signal}`));
        return;
      }
      // runDev's exit hook SIGKILLs the services' process groups.
      process.exit(130);
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);

    const color = process.stdout.isTTY === true && (process.env["NO_COLOR"] ?? "") === "";
    const code = await runDev({
      root: ROOT,
      env: process.env,
      signal: shutdown.signal,
      exitAfterSample,
      color,
    });
    process.exit(code);
    break;
  }
  default:
    usageError(`unknown command "${command}"`);
}
