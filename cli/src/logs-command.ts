/**
 * `nexusflow logs <run-id> <step-id>`: a task's log lines through the gateway; a log that is not
 * there is one line saying where the scheduler looked and which gateway was asked.
 */
import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@nexusflow/client";
import { GetTaskLogsResponseSchema } from "@nexusflow/gen";
import { COMMON_OPTIONS, type CommandIo, outputOf, parse, parseCount, positionals } from "./command.js";
import { describeError } from "./describe-error.js";
import { withGateway } from "./gateway-client.js";
import { formatTime } from "./table.js";

const RPC_TIMEOUT_MS = 30_000;

/** `nexusflow logs <run-id> <step-id> [--attempt N] [--follow]`: prints a task's log lines. */
export async function logsCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: { ...COMMON_OPTIONS, attempt: { type: "string" }, follow: { type: "boolean", short: "f" } },
  });
  const [runId, stepId] = positionals(pos, ["run-id", "step-id"], "logs");
  const output = outputOf(values.output);
  const attempt = parseCount("attempt", values.attempt, 0, 2 ** 31 - 1) ?? 0;
  return withGateway(io, "logs", values, async ({ artifacts }, url) => {
    let lines = 0;
    try {
      const stream = artifacts.getTaskLogs(
        { runId: runId as string, stepId: stepId as string, attempt, follow: values.follow === true },
        values.follow === true ? { signal: io.signal } : { signal: io.signal, timeoutMs: RPC_TIMEOUT_MS },
      );
      for await (const res of stream) {
        lines += res.lines.length;
        if (output === "json") {
          io.stdout(`${JSON.stringify(toJson(GetTaskLogsResponseSchema, res))}\n`);
          continue;
        }
        for (const line of res.lines) {
          const tag = line.level !== "" ? line.level : line.stream;
          io.stdout(`${formatTime(line.time)}  #${line.attempt} ${tag.padEnd(6)} ${line.text}\n`);
        }
      }
    } catch (e) {
      if (e instanceof ConnectError && e.code === Code.Unimplemented) {
        io.stderr(`nexusflow: logs: the gateway at ${url} does not serve task logs yet (UNIMPLEMENTED)\n`);
        return 1;
      }
      // The scheduler says which key it looked for in which store; which stack was asked is known here.
      if (e instanceof ConnectError && e.code === Code.NotFound && !io.signal.aborted) {
        io.stderr(`nexusflow: logs: ${describeError(e, url)}; asked the gateway at ${url}\n`);
        return 1;
      }
      throw e;
    }
    // An empty log is not an error, but silence would look like one.
    if (lines === 0)
      io.stderr(
        `nexusflow: logs: step ${stepId} of run ${runId}${attempt > 0 ? ` attempt ${attempt}` : ""} logged no lines; ` +
          `asked the gateway at ${url}\n`,
      );
    return 0;
  });
}
