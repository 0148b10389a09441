/**
 * An executor of `nexusflow dev`, as a child process: the `nexusflow executor` command
 * (executor-command.ts: the Executor configured by the same EXECUTOR_* variables as
 * services/executor/src/main.ts) that tells its parent on the IPC channel once it has attached,
 * so that the dev stack waits for that message rather than for a line of its log. The executor
 * process of services/executor has no such signal. SIGTERM or SIGINT drains it; a second exits.
 * This module only wires.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { READY_MESSAGE } from "./child.js";
import { executorCommand } from "./executor-command.js";

/** The repository root: cli/src/dev-executor.ts is two levels below it. */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

const drain = new AbortController();
const onSignal = (signal: NodeJS.Signals): void => {
  if (drain.signal.aborted) process.exit(1);
  drain.abort(new Error(signal));
};
process.on("SIGTERM", onSignal);
process.on("SIGINT", onSignal);

const code = await executorCommand(
  [],
  {
    env: process.env,
    signal: drain.signal,
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    color: false,
    root: ROOT,
    cwd: process.cwd(),
  },
  {
    onAttached: ({ executor, config, logger }) => {
      // The record services/executor/src/main.ts writes, so that the stack's output reads the same.
      logger.info(
        {
          schedulerAddress: config.schedulerAddress,
          executorId: config.executorId,
          slots: config.slots,
          sessionId: executor.sessionId,
          taskTypes: executor.taskTypes,
        },
        "executor attached to the scheduler",
      );
      // One message is all the channel is for: closing it leaves nothing open.
      process.send?.(READY_MESSAGE, undefined, {}, () => process.disconnect());
    },
  },
);
process.exit(code);
