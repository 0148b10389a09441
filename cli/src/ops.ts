/**
 * The operator commands: `apply`, `runs start|get|list|watch|cancel`, `logs` and `token`. Each
 * talks to the gateway (see gateway-client.ts), prints a readable table by default or JSON with
 * `--output json`, and returns the exit code: 0 on success, 1 when the call fails (one line on
 * stderr saying why), 2 on bad usage. `runs watch` returns 1 when the run did not succeed.
 */
import { readFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { type ParseArgsConfig, parseArgs } from "node:util";
import { type DescMessage, type JsonValue, type MessageShape, fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { Scope } from "@nexusflow/common";
import { parseDuration } from "@nexusflow/common/duration";
import {
  CancelRunResponseSchema,
  GetTaskLogsResponseSchema,
  ListRunsResponseSchema,
  RegisterWorkflowResponseSchema,
  type Run,
  RunSchema,
  RunStatus,
  StartRunResponseSchema,
  TaskKind,
  WatchRunResponseSchema,
} from "@nexusflow/gen";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { DEV_ISSUER, ensureDevKeys, mintDevToken } from "./dev-keys.js";
import { findDevKeys, readDevState } from "./dev-state.js";
import {
  AddressError,
  DEFAULT_ADDRESS,
  type GatewayClients,
  connectGateway,
  gatewayUrl,
  resolveToken,
} from "./gateway-client.js";
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

/** What a command gets from the process. */
export interface CommandIo {
  /** The environment (NEXUSFLOW_ADDRESS, NEXUSFLOW_TOKEN, NEXUSFLOW_DATA_DIR). */
  env: NodeJS.ProcessEnv;
  /** Aborted on Ctrl-C. */
  signal: AbortSignal;
  /** Writes to standard output. */
  stdout: (text: string) => void;
  /** Writes to standard error. */
  stderr: (text: string) => void;
  /** Colour in the human output. */
  color: boolean;
  /** Directory relative data directories are resolved against (the repository root). */
  root: string;
  /** The working directory: a `.nexusflow` there holds the dev key to use. */
  cwd: string;
}

/** A command that the user called wrongly: exit 2 with the message. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Usage of the operator commands. */
export const OPERATOR_USAGE = `Operator commands (talk to the gateway):
  apply <file>...                 register workflow definitions (JSON files; other JSON is skipped)
  runs start <workflow> [--input <json|@file>] [--version N] [--label k=v]... [--idempotency-key K] [--watch]
  runs get <run-id>               a run with its tasks
  runs list [--workflow W] [--status S]... [--label k=v]... [--limit N] [--page-token T]
  runs watch <run-id>             live progress until the run ends (exit 1 unless it succeeded)
  runs cancel <run-id> [--reason R] [--compensate]
  logs <run-id> <step-id> [--attempt N] [--follow]
                                  a task's log lines; one that is not there is an error saying where it looked
  artifacts list <run-id> [<step-id>]
                                  what a run's tasks stored: step, attempt, name, size, content type
  artifacts get <run-id> <step-id> <name> [--attempt N] [-o FILE|-] [--force] [--stream]
                                  one of those files (the latest attempt's unless --attempt) to standard output,
                                  or with -o to FILE (replaced only with --force); --stream skips presigned URLs
  token [--scope S]... [--ttl 1h] [--subject NAME]
                                  mint a DEV token with the dev key of NEXUSFLOW_DATA_DIR, ./.nexusflow or the running npm start

Common options:
  --address URL      the gateway (NEXUSFLOW_ADDRESS; default: the running npm start's, else ${DEFAULT_ADDRESS})
  --token JWT        bearer token (NEXUSFLOW_TOKEN; on this machine, a dev token when the dev key exists)
  --output FORMAT    table (default) or json (artifacts get: -o/--output is the file to write)
`;

const RPC_TIMEOUT_MS = 30_000;

const COMMON_OPTIONS = {
  address: { type: "string" },
  token: { type: "string" },
  output: { type: "string", short: "o" },
} as const;

type Output = "table" | "json";

function outputOf(value: string | undefined): Output {
  if (value === undefined || value === "table") return "table";
  if (value === "json") return "json";
  throw new UsageError(`--output must be table or json, got ${JSON.stringify(value)}`);
}

/** SCREAMING_SNAKE name of a code ("INVALID_ARGUMENT"). */
function codeName(code: Code): string {
  return (Code[code] ?? "UNKNOWN").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** One line describing a failed call, with the field violations and a hint where one helps. */
export function describeError(e: unknown, address: string): string {
  if (!(e instanceof ConnectError)) return e instanceof Error ? e.message : String(e);
  const violations = e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
  let text = `${codeName(e.code)}: ${e.rawMessage}`;
  const listed = violations.filter((v) => !e.rawMessage.includes(v.description));
  if (listed.length > 0) text += ` (${listed.map((v) => `${v.field}: ${v.description}`).join("; ")})`;
  switch (e.code) {
    case Code.Unavailable:
      return `${text} (is the gateway running at ${address}? set NEXUSFLOW_ADDRESS or --address)`;
    case Code.Unauthenticated:
      return `${text} (set NEXUSFLOW_TOKEN or --token; for a dev stack: export NEXUSFLOW_TOKEN=$(nexusflow token))`;
    default:
      return text.replace(/\s+/g, " ");
  }
}

function parseLabels(values: readonly string[] | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const v of values ?? []) {
    const eq = v.indexOf("=");
    if (eq <= 0) throw new UsageError(`--label expects key=value, got ${JSON.stringify(v)}`);
    labels[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return labels;
}

function parseCount(name: string, value: string | undefined, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

function parseRunStatus(value: string): RunStatus {
  const upper = value.toUpperCase().replace(/^RUN_STATUS_/, "");
  const entry = Object.entries(RunStatus).find(([k, v]) => typeof v === "number" && k === upper);
  if (entry === undefined || entry[1] === RunStatus.UNSPECIFIED) {
    const names = Object.keys(RunStatus).filter((k) => !/^\d+$/.test(k) && k !== "UNSPECIFIED");
    throw new UsageError(`--status must be one of ${names.join(", ")}, got ${JSON.stringify(value)}`);
  }
  return entry[1] as RunStatus;
}

function printJson<D extends DescMessage>(io: CommandIo, schema: D, message: MessageShape<D>): void {
  io.stdout(`${JSON.stringify(toJson(schema, message), null, 2)}\n`);
}

/** Runs `fn` with gateway clients from the common options; maps failures to exit codes. */
export async function withGateway(
  io: CommandIo,
  name: string,
  values: { address?: string | undefined; token?: string | undefined },
  fn: (clients: GatewayClients) => Promise<number>,
): Promise<number> {
  let url: string;
  try {
    url = gatewayUrl(
      values.address ??
        (io.env["NEXUSFLOW_ADDRESS"]?.trim() || (await readDevState(io.env))?.gatewayUrl || DEFAULT_ADDRESS),
    );
  } catch (e) {
    if (e instanceof AddressError) throw new UsageError(e.message);
    throw e;
  }
  const { token, source } = await resolveToken(values.token, io.env, url, io.root, io.cwd);
  if (source === "dev-key")
    io.stderr(`nexusflow: using a dev token (${DEV_ISSUER}) minted with the local dev key\n`);
  const clients = connectGateway(url, token);
  try {
    return await fn(clients);
  } catch (e) {
    if (io.signal.aborted) return 130;
    io.stderr(`nexusflow: ${name}: ${describeError(e, url)}\n`);
    return 1;
  } finally {
    clients.close();
  }
}

/** Parses `args`, turning parseArgs' errors into {@link UsageError}. */
export function parse<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

function positionals(list: readonly string[], want: readonly string[], usage: string): string[] {
  if (list.length !== want.length) {
    throw new UsageError(
      `${usage}: expected ${want.map((w) => `<${w}>`).join(" ")}${list.length > want.length ? `, got extra ${JSON.stringify(list.slice(want.length))}` : ""}`,
    );
  }
  return [...list];
}

/** `nexusflow apply <file>...`: registers each workflow definition file. */
export async function applyCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: files } = parse({ args, options: COMMON_OPTIONS, allowPositionals: true });
  const output = outputOf(values.output);
  if (files.length === 0) throw new UsageError("apply: expected one or more workflow files");
  const texts: [string, string][] = [];
  let failed = false;
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (e) {
      io.stderr(`nexusflow: apply: cannot read ${file}: ${(e as Error).message}\n`);
      return 1;
    }
    // `apply examples/*.json` also matches input documents: those are skipped, not sent.
    const kind = classifyWorkflowFile(text);
    if (kind.kind === "definition") texts.push([file, text]);
    else if (kind.kind === "other") io.stderr(`nexusflow: apply: skipping ${file}: ${kind.reason}\n`);
    else {
      io.stderr(`nexusflow: apply: ${file} is not valid JSON: ${kind.message}\n`);
      failed = true;
    }
  }
  if (texts.length === 0) return failed ? 1 : 0;
  return withGateway(io, "apply", values, async ({ workflows }) => {
    const rows: string[][] = [];
    const results: JsonValue[] = [];
    for (const [file, text] of texts) {
      let res;
      try {
        res = await workflows.registerWorkflow(
          { definition: { case: "specJson", value: text } },
          { signal: io.signal, timeoutMs: RPC_TIMEOUT_MS },
        );
      } catch (e) {
        // Name the file: with several, the error alone does not say which one is wrong.
        const err = ConnectError.from(e);
        const named = new ConnectError(`${file}: ${err.rawMessage}`, err.code, err.metadata, undefined, err);
        named.details = err.details;
        throw named;
      }
      results.push(toJson(RegisterWorkflowResponseSchema, res));
      rows.push([
        res.workflow?.name ?? "?",
        String(res.workflow?.version ?? "?"),
        res.created ? "registered" : "unchanged",
        file,
      ]);
    }
    if (output === "json") io.stdout(`${JSON.stringify(results, null, 2)}\n`);
    else io.stdout(`${formatTable(["WORKFLOW", "VERSION", "RESULT", "FILE"], rows)}\n`);
    return failed ? 1 : 0;
  });
}

/** What a file given to `apply` holds: a definition, other JSON (skipped), or no JSON at all. */
export type WorkflowFileKind =
  { kind: "definition" } | { kind: "other"; reason: string } | { kind: "invalid"; message: string };

/** A definition is a JSON object with "name" and "steps"; the server validates the rest. */
export function classifyWorkflowFile(text: string): WorkflowFileKind {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { kind: "invalid", message: e instanceof Error ? e.message : String(e) };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { kind: "other", reason: "not a workflow definition (not a JSON object)" };
  }
  if (!("name" in value) || !("steps" in value)) {
    return { kind: "other", reason: 'not a workflow definition (no "name" and "steps")' };
  }
  return { kind: "definition" };
}

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
  return withGateway(io, "logs", values, async ({ artifacts, url }) => {
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

/** Scopes a dev token may carry. */
const KNOWN_SCOPES: readonly string[] = Object.values(Scope);

/** `nexusflow token [--scope S]... [--ttl 1h] [--subject NAME]`: mints a dev token. */
export async function tokenCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: {
      scope: { type: "string", multiple: true },
      ttl: { type: "string" },
      subject: { type: "string" },
    },
  });
  positionals(pos, [], "token");
  const scopes = (values.scope ?? [Scope.ADMIN]).flatMap((s) => s.split(/[\s,]+/)).filter((s) => s !== "");
  const unknown = scopes.filter((s) => !KNOWN_SCOPES.includes(s));
  if (unknown.length > 0) {
    throw new UsageError(
      `--scope: unknown scope ${JSON.stringify(unknown[0])} (known: ${KNOWN_SCOPES.join(", ")})`,
    );
  }
  let ttlMs: number;
  try {
    ttlMs = parseDuration(values.ttl ?? "1h");
  } catch (e) {
    throw new UsageError(`--ttl: ${(e as Error).message}`);
  }
  if (ttlMs < 1000 || ttlMs > 7 * 86_400_000) throw new UsageError("--ttl must be between 1s and 7d");
  // Never a new key unless NEXUSFLOW_DATA_DIR asks for one: no running stack would accept its tokens.
  const location = await findDevKeys(io.env, io.root, io.cwd);
  const keys = await ensureDevKeys(location.dir);
  const subject = values.subject ?? `dev-${userInfo().username}`;
  const token = await mintDevToken(keys, { subject, scopes, ttlSec: Math.round(ttlMs / 1000) });
  const expires = new Date(Date.now() + ttlMs).toISOString();
  io.stderr(
    `nexusflow: DEV token (iss ${DEV_ISSUER}, sub ${subject}, scopes ${scopes.join(" ")}, expires ${expires}); ` +
      `only a stack started with 'nexusflow dev' (npm start) accepts it\n`,
  );
  io.stdout(`${token}\n`);
  return 0;
}
