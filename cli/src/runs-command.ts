/**
 * `nexusflow runs start|get|list|watch|cancel|signal|rerun|why`: runs through the gateway, as tables or JSON
 * (`--output json`); `runs watch` (and `runs start --watch`) shows each step as it changes and
 * exits 1 unless the run succeeded.
 */
import { readFile } from "node:fs/promises";
import { type JsonValue, create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type { NexusflowClient } from "@nexusflow/client";
import {
  CancelRunResponseSchema,
  ListRunsResponseSchema,
  type Run,
  RunSchema,
  RerunRunResponseSchema,
  RunStatus,
  SignalRunResponseSchema,
  StartRunResponseSchema,
  TaskKind,
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
import { followRun } from "./follow-run.js";
import { withGateway } from "./gateway-client.js";
import { formatRunSummary, isTerminal, runStatusName, taskStatusName } from "./progress.js";
import { createStyle } from "./style.js";
import { formatSpan, formatTable, formatTime, truncate } from "./table.js";
import { whyCommand } from "./why-command.js";

/** The --input value as JSON: the text itself, or `@file` to read it from; `{}` when not given. */
export async function readInput(value: string | undefined): Promise<JsonValue> {
  if (value === undefined) return {};
  return readJson(value, "--input");
}

/** A flag's JSON value (`flag` names it in errors): the text itself, or `@file` to read it from. */
export async function readJson(value: string, flag: string): Promise<JsonValue> {
  let text = value;
  if (value.startsWith("@")) {
    try {
      text = await readFile(value.slice(1), "utf8");
    } catch (e) {
      throw new UsageError(`${flag}: cannot read ${value.slice(1)}: ${(e as Error).message}`);
    }
  }
  let json: JsonValue;
  try {
    json = JSON.parse(text) as JsonValue;
  } catch (e) {
    throw new UsageError(`${flag} is not JSON: ${(e as Error).message}`);
  }
  // JSON that the API's Value cannot hold (nested deeper than 100 levels) is the user's to fix.
  try {
    fromJson(ValueSchema, json);
  } catch (e) {
    throw new UsageError(`${flag} cannot be sent: ${(e as Error).message}`);
  }
  return json;
}

const RUN_HEADERS = ["RUN", "WORKFLOW", "STATUS", "CREATED", "DURATION"];

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
  const head = formatTable(RUN_HEADERS, [runRow(run)]);
  const labels = Object.entries(run.labels);
  const lines = [head];
  if (labels.length > 0) lines.push(`labels: ${labels.map(([k, v]) => `${k}=${v}`).join(", ")}`);
  if (run.rerunOf !== "") lines.push(`rerun of ${run.rerunOf} from step ${run.rerunFromStep}`);
  if (run.reruns.length > 0) lines.push(`reruns: ${run.reruns.join(", ")}`);
  if (run.parentRunId !== "") lines.push(`child of run ${run.parentRunId} (step ${run.parentStepId})`);
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
              t.reusedFrom === "" ? "" : style.gray("reused (not run again)"),
              // A waiting child step's reason names its child already.
              t.childRunId === "" || t.pendingReason !== "" ? "" : style.gray(`child run ${t.childRunId}`),
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
  client: NexusflowClient,
  runId: string,
  output: Output,
  io: CommandIo,
): Promise<number> {
  const style = createStyle(io.color);
  const final = await followRun(client, runId, {
    signal: io.signal,
    say: (line) => io.stdout(`${line}\n`),
    style,
    format: output === "json" ? "json" : "steps",
    header: true,
  });
  if (output === "table") {
    const done = final.tasks.filter((t) => t.kind !== TaskKind.COMPENSATION).length;
    io.stdout(`${formatRunSummary(final, style)}\n${style.gray(`${done} step(s)`)}\n`);
  }
  return final.status === RunStatus.SUCCEEDED ? 0 : 1;
}

/** `runs start <workflow> [--input <json|@file>] [--version N] [--label k=v]... [--idempotency-key K] [--watch]`. */
async function startCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
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
  const [workflowName = ""] = positionals(pos, ["workflow"], "runs start");
  const output = outputOf(values.output);
  const input = await readInput(values.input);
  const labels = parseLabels(values.label);
  const workflowVersion = parseCount("version", values.version, 0, 2 ** 31 - 1) ?? 0;
  return withGateway(io, "runs start", values, async (client) => {
    const started = await client.startRun(
      {
        workflowName,
        workflowVersion,
        input,
        labels,
        // Without --idempotency-key, none: the run records no key, as it always has from the CLI.
        idempotencyKey: values["idempotency-key"] ?? "",
      },
      { signal: io.signal },
    );
    if (output === "json" && values.watch !== true)
      printJson(io, StartRunResponseSchema, create(StartRunResponseSchema, started));
    else if (output === "table") {
      io.stdout(`${formatTable(RUN_HEADERS, [runRow(started.run)])}\n`);
      if (!started.created) io.stdout(`(existing run for this idempotency key)\n`);
    }
    return values.watch === true ? watchRun(client, started.run.id, output, io) : 0;
  });
}

/** `runs get <run-id>`. */
async function getCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({ args, allowPositionals: true, options: COMMON_OPTIONS });
  const [runId = ""] = positionals(pos, ["run-id"], "runs get");
  const output = outputOf(values.output);
  return withGateway(io, "runs get", values, async (client) => {
    const run = await client.getRun(runId, { signal: io.signal });
    if (output === "json") printJson(io, RunSchema, run);
    else io.stdout(`${describeRun(run, io.color)}\n`);
    return 0;
  });
}

/** `runs list [--workflow W] [--status S]... [--label k=v]... [--limit N] [--page-token T]`. */
async function listCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
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
  return withGateway(io, "runs list", values, async (client) => {
    const res = await client.workflows.listRuns(
      {
        workflowName: values.workflow ?? "",
        statuses,
        labels,
        pageSize,
        pageToken: values["page-token"] ?? "",
      },
      { signal: io.signal },
    );
    if (output === "json") {
      printJson(io, ListRunsResponseSchema, res);
      return 0;
    }
    io.stdout(`${formatTable(RUN_HEADERS, res.runs.map(runRow))}\n`);
    if (res.nextPageToken !== "") io.stderr(`more: --page-token ${res.nextPageToken}\n`);
    return 0;
  });
}

/** `runs watch <run-id>`. */
async function watchCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({ args, allowPositionals: true, options: COMMON_OPTIONS });
  const [runId = ""] = positionals(pos, ["run-id"], "runs watch");
  const output = outputOf(values.output);
  return withGateway(io, "runs watch", values, (client) => watchRun(client, runId, output, io));
}

/** `runs cancel <run-id> [--reason R] [--compensate]`. */
async function cancelCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: { ...COMMON_OPTIONS, reason: { type: "string" }, compensate: { type: "boolean" } },
  });
  const [runId = ""] = positionals(pos, ["run-id"], "runs cancel");
  const output = outputOf(values.output);
  return withGateway(io, "runs cancel", values, async (client) => {
    const run = await client.cancelRun(
      runId,
      {
        reason: values.reason ?? "cancelled with nexusflow runs cancel",
        compensate: values.compensate === true,
      },
      { signal: io.signal },
    );
    if (output === "json") printJson(io, CancelRunResponseSchema, create(CancelRunResponseSchema, { run }));
    else io.stdout(`${formatTable(RUN_HEADERS, [runRow(run)])}\n`);
    return 0;
  });
}

/** `runs signal <run-id> <name> [--payload JSON|@file] [--idempotency-key K]`. */
async function signalCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: { ...COMMON_OPTIONS, payload: { type: "string" }, "idempotency-key": { type: "string" } },
  });
  const [runId = "", name = ""] = positionals(pos, ["run-id", "name"], "runs signal");
  const output = outputOf(values.output);
  const payload = values.payload === undefined ? null : await readJson(values.payload, "--payload");
  return withGateway(io, "runs signal", values, async (client) => {
    const answer = await client.signalRun(
      runId,
      name,
      { payload, idempotencyKey: values["idempotency-key"] },
      { signal: io.signal },
    );
    if (output === "json") {
      printJson(io, SignalRunResponseSchema, create(SignalRunResponseSchema, answer));
      return 0;
    }
    const what = answer.duplicate ? "already received (same idempotency key)" : "sent";
    const where =
      answer.stepId === ""
        ? "kept on the run until a wait step for it starts waiting"
        : `completed step ${answer.stepId}`;
    io.stdout(`signal ${name} ${what}: ${where}\n`);
    return 0;
  });
}

/** `runs rerun <run-id> --from STEP [--input JSON|@file] [--idempotency-key K] [--watch]`. */
async function rerunCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: {
      ...COMMON_OPTIONS,
      from: { type: "string" },
      input: { type: "string", short: "i" },
      "idempotency-key": { type: "string" },
      watch: { type: "boolean", short: "w" },
    },
  });
  const [runId = ""] = positionals(pos, ["run-id"], "runs rerun");
  if (values.from === undefined || values.from === "")
    throw new UsageError("runs rerun: --from STEP is required (the step to run again)");
  const output = outputOf(values.output);
  const stepInput = values.input === undefined ? undefined : await readJson(values.input, "--input");
  return withGateway(io, "runs rerun", values, async (client) => {
    const started = await client.rerunRun(
      runId,
      values.from as string,
      { stepInput, idempotencyKey: values["idempotency-key"] },
      { signal: io.signal },
    );
    if (output === "json" && values.watch !== true)
      printJson(io, RerunRunResponseSchema, create(RerunRunResponseSchema, started));
    else if (output === "table") {
      const reused = started.run.tasks.filter((t) => t.reusedFrom !== "").map((t) => t.stepId);
      io.stdout(`${formatTable(RUN_HEADERS, [runRow(started.run)])}\n`);
      io.stdout(
        `rerun of ${started.run.rerunOf} from ${started.run.rerunFromStep}; reused: ${reused.length === 0 ? "none" : reused.join(", ")}\n`,
      );
      if (!started.created) io.stdout(`(existing rerun for this idempotency key)\n`);
    }
    return values.watch === true ? watchRun(client, started.run.id, output, io) : 0;
  });
}

/** `nexusflow runs <start|get|list|watch|cancel|signal|rerun|why> ...`. */
export async function runsCommand(args: string[], io: CommandIo): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case "start":
      return startCommand(rest, io);
    case "get":
      return getCommand(rest, io);
    case "list":
      return listCommand(rest, io);
    case "watch":
      return watchCommand(rest, io);
    case "cancel":
      return cancelCommand(rest, io);
    case "signal":
      return signalCommand(rest, io);
    case "rerun":
      return rerunCommand(rest, io);
    case "why":
      return whyCommand(rest, io);
    case undefined:
      throw new UsageError("runs: expected start, get, list, watch, cancel, signal, rerun or why");
    default:
      throw new UsageError(
        `runs: unknown subcommand ${JSON.stringify(sub)} (start, get, list, watch, cancel, signal, rerun, why)`,
      );
  }
}
