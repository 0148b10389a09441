/**
 * `nexusflow runs start|get|list|watch|cancel`: runs through the gateway, as tables or JSON
 * (`--output json`); `runs watch` (and `runs start --watch`) shows each step as it changes and
 * exits 1 unless the run succeeded.
 */
import { readFile } from "node:fs/promises";
import { type JsonValue, fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  CancelRunResponseSchema,
  ListRunsResponseSchema,
  type Run,
  RunSchema,
  RunStatus,
  StartRunResponseSchema,
  TaskKind,
  WatchRunResponseSchema,
} from "@nexusflow/gen";
import {
  COMMON_OPTIONS,
  type CommandIo,
  type Output,
  UsageError,
  outputOf,
  parse,
  parseCount,
  parseLabels,
  parseRunStatus,
  positionals,
  printJson,
} from "./command.js";
import { type GatewayClients, withGateway } from "./gateway-client.js";
import {
  RunProgress,
  formatRunSummary,
  formatTaskChange,
  isTerminal,
  runStatusName,
  taskStatusName,
} from "./progress.js";
import { createStyle } from "./style.js";
import { formatSpan, formatTable, formatTime, truncate } from "./table.js";

const RPC_TIMEOUT_MS = 30_000;

async function readInput(value: string | undefined): Promise<JsonValue> {
  if (value === undefined) return {};
  let text = value;
  if (value.startsWith("@")) {
    try {
      text = await readFile(value.slice(1), "utf8");
    } catch (e) {
      throw new UsageError(`--input: cannot read ${value.slice(1)}: ${(e as Error).message}`);
    }
  }
  try {
    return JSON.parse(text) as JsonValue;
  } catch (e) {
    throw new UsageError(`--input is not JSON: ${(e as Error).message}`);
  }
}

function runRow(run: Run): string[] {
  return [
    run.id,
    `${run.workflowName} v${run.workflowVersion}`,
    runStatusName(run.status),
    formatTime(run.createTime),
    formatSpan(run.createTime, run.endTime),
  ];
}

/**
 * `runs get` as a table: the run, then a row per task; the last column says why a queued task
 * waits (`waiting: no executor advertises type "charge-card"`), and holds its latest error or a
 * skip reason.
 */
export function describeRun(run: Run, color: boolean): string {
  const style = createStyle(color);
  const head = formatTable(["RUN", "WORKFLOW", "STATUS", "CREATED", "DURATION"], [runRow(run)]);
  const labels = Object.entries(run.labels);
  const lines = [head];
  if (labels.length > 0) lines.push(`labels: ${labels.map(([k, v]) => `${k}=${v}`).join(", ")}`);
  if (run.tasks.length > 0) {
    lines.push("");
    lines.push(
      formatTable(
        ["STEP", "STATUS", "ATTEMPT", "EXECUTOR", "DURATION", "ERROR"],
        run.tasks.map((t) => {
          const last = t.attempts[t.attempts.length - 1];
          const error = t.error ?? last?.error;
          return [
            t.kind === TaskKind.COMPENSATION ? `${t.stepId} (undo)` : t.stepId,
            taskStatusName(t.status),
            String(last?.number ?? 0),
            last?.executorId || "-",
            formatSpan(last?.startTime ?? last?.leaseTime, last?.endTime),
            [
              // A waiting task's reason is shown whole: the type it names is what to act on.
              t.pendingReason === "" ? "" : style.yellow(`waiting: ${t.pendingReason}`),
              error === undefined
                ? t.skipReason === ""
                  ? ""
                  : `(${t.skipReason})`
                : truncate(`${error.type}: ${error.message}`, 60),
            ]
              .filter((text) => text !== "")
              .join("; "),
          ];
        }),
      ),
    );
  }
  if (isTerminal(run)) {
    lines.push("");
    lines.push(formatRunSummary(run, style));
  }
  return lines.join("\n");
}

/** Follows a run and prints its progress; returns 0 when it succeeded, 1 otherwise. */
async function watchRun(
  clients: GatewayClients,
  runId: string,
  output: Output,
  io: CommandIo,
): Promise<number> {
  const style = createStyle(io.color);
  const progress = new RunProgress();
  let final: Run | undefined;
  let first = true;
  for await (const message of clients.workflows.watchRun({ runId }, { signal: io.signal })) {
    const run = message.run;
    if (run === undefined) continue;
    if (output === "json") {
      io.stdout(`${JSON.stringify(toJson(WatchRunResponseSchema, message))}\n`);
    } else {
      if (first) io.stdout(`run ${style.bold(run.id)} ${run.workflowName} v${run.workflowVersion}\n`);
      const width = Math.max(12, ...run.tasks.map((t) => t.stepId.length + 7));
      for (const change of progress.update(run)) io.stdout(`${formatTaskChange(change, style, width)}\n`);
    }
    first = false;
    if (isTerminal(run)) {
      final = run;
      break;
    }
  }
  if (final === undefined) {
    const { run } = await clients.workflows.getRun(
      { runId },
      { signal: io.signal, timeoutMs: RPC_TIMEOUT_MS },
    );
    if (run === undefined || !isTerminal(run)) {
      throw new Error(
        `the watch ended while run ${runId} was ${run === undefined ? "unknown" : runStatusName(run.status)}`,
      );
    }
    final = run;
  }
  if (output === "table") {
    const done = final.tasks.filter((t) => t.kind !== TaskKind.COMPENSATION).length;
    io.stdout(`${formatRunSummary(final, style)}\n${style.gray(`${done} step(s)`)}\n`);
  }
  return final.status === RunStatus.SUCCEEDED ? 0 : 1;
}

/** `nexusflow runs <start|get|list|watch|cancel> ...`. */
export async function runsCommand(args: string[], io: CommandIo): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case "start": {
      const { values, positionals: pos } = parse({
        args: rest,
        allowPositionals: true,
        options: {
          ...COMMON_OPTIONS,
          input: { type: "string", short: "i" },
          version: { type: "string" },
          label: { type: "string", multiple: true },
          "idempotency-key": { type: "string" },
          watch: { type: "boolean", short: "w" },
        },
      });
      const [workflowName] = positionals(pos, ["workflow"], "runs start");
      const output = outputOf(values.output);
      const input = fromJson(ValueSchema, await readInput(values.input));
      const labels = parseLabels(values.label);
      const workflowVersion = parseCount("version", values.version, 0, 2 ** 31 - 1) ?? 0;
      return withGateway(io, "runs start", values, async (clients) => {
        const res = await clients.workflows.startRun(
          {
            workflowName: workflowName as string,
            workflowVersion,
            input,
            labels,
            idempotencyKey: values["idempotency-key"] ?? "",
          },
          { signal: io.signal, timeoutMs: RPC_TIMEOUT_MS },
        );
        const run = res.run as Run;
        if (output === "json" && values.watch !== true) printJson(io, StartRunResponseSchema, res);
        else if (output === "table") {
          io.stdout(`${formatTable(["RUN", "WORKFLOW", "STATUS", "CREATED", "DURATION"], [runRow(run)])}\n`);
          if (!res.created) io.stdout(`(existing run for this idempotency key)\n`);
        }
        return values.watch === true ? watchRun(clients, run.id, output, io) : 0;
      });
    }
    case "get": {
      const { values, positionals: pos } = parse({
        args: rest,
        allowPositionals: true,
        options: COMMON_OPTIONS,
      });
      const [runId] = positionals(pos, ["run-id"], "runs get");
      const output = outputOf(values.output);
      return withGateway(io, "runs get", values, async ({ workflows }) => {
        const { run } = await workflows.getRun(
          { runId: runId as string },
          { signal: io.signal, timeoutMs: RPC_TIMEOUT_MS },
        );
        if (run === undefined) throw new ConnectError(`run ${runId} not returned`, Code.Internal);
        if (output === "json") printJson(io, RunSchema, run);
        else io.stdout(`${describeRun(run, io.color)}\n`);
        return 0;
      });
    }
    case "list": {
      const { values, positionals: pos } = parse({
        args: rest,
        allowPositionals: true,
        options: {
          ...COMMON_OPTIONS,
          workflow: { type: "string" },
          status: { type: "string", multiple: true },
          label: { type: "string", multiple: true },
          limit: { type: "string" },
          "page-token": { type: "string" },
        },
      });
      positionals(pos, [], "runs list");
      const output = outputOf(values.output);
      const statuses = (values.status ?? [])
        .flatMap((s) => s.split(","))
        .filter((s) => s !== "")
        .map(parseRunStatus);
      const labels = parseLabels(values.label);
      const pageSize = parseCount("limit", values.limit, 1, 1000) ?? 20;
      return withGateway(io, "runs list", values, async ({ workflows }) => {
        const res = await workflows.listRuns(
          {
            workflowName: values.workflow ?? "",
            statuses,
            labels,
            pageSize,
            pageToken: values["page-token"] ?? "",
          },
          { signal: io.signal, timeoutMs: RPC_TIMEOUT_MS },
        );
        if (output === "json") {
          printJson(io, ListRunsResponseSchema, res);
          return 0;
        }
        io.stdout(
          `${formatTable(["RUN", "WORKFLOW", "STATUS", "CREATED", "DURATION"], res.runs.map(runRow))}\n`,
        );
        if (res.nextPageToken !== "") io.stderr(`more: --page-token ${res.nextPageToken}\n`);
        return 0;
      });
    }
    case "watch": {
      const { values, positionals: pos } = parse({
        args: rest,
        allowPositionals: true,
        options: COMMON_OPTIONS,
      });
      const [runId] = positionals(pos, ["run-id"], "runs watch");
      const output = outputOf(values.output);
      return withGateway(io, "runs watch", values, (clients) =>
        watchRun(clients, runId as string, output, io),
      );
    }
    case "cancel": {
      const { values, positionals: pos } = parse({
        args: rest,
        allowPositionals: true,
        options: { ...COMMON_OPTIONS, reason: { type: "string" }, compensate: { type: "boolean" } },
      });
      const [runId] = positionals(pos, ["run-id"], "runs cancel");
      const output = outputOf(values.output);
      return withGateway(io, "runs cancel", values, async ({ workflows }) => {
        const res = await workflows.cancelRun(
          {
            runId: runId as string,
            reason: values.reason ?? "cancelled with nexusflow runs cancel",
            compensate: values.compensate === true,
          },
          { signal: io.signal, timeoutMs: RPC_TIMEOUT_MS },
        );
        if (output === "json") printJson(io, CancelRunResponseSchema, res);
        else if (res.run !== undefined)
          io.stdout(
            `${formatTable(["RUN", "WORKFLOW", "STATUS", "CREATED", "DURATION"], [runRow(res.run)])}\n`,
          );
        return 0;
      });
    }
    case undefined:
      throw new UsageError("runs: expected start, get, list, watch or cancel");
    default:
      throw new UsageError(
        `runs: unknown subcommand ${JSON.stringify(sub)} (start, get, list, watch, cancel)`,
      );
  }
}
