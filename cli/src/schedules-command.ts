/**
 * `nexusflow schedules create|list|get|pause|resume|trigger|delete|backfill`: cron schedules
 * through the gateway (ScheduleService), as tables or JSON (`--output json`).
 */
import { fromJson } from "@bufbuild/protobuf";
import { type Timestamp, ValueSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DurationError, parseDuration } from "@nexusflow/common/duration";
import {
  BackfillScheduleResponseSchema,
  CatchUpPolicy,
  CreateScheduleResponseSchema,
  ListSchedulesResponseSchema,
  OverlapPolicy,
  type Schedule,
  ScheduleSchema,
  FireOrigin,
  TriggerScheduleResponseSchema,
} from "@nexusflow/gen";
import {
  COMMON_OPTIONS,
  type CommandIo,
  UsageError,
  outputOf,
  parse,
  parseCount,
  parseLabels,
  positionals,
  printJson,
} from "./command.js";
import { withGateway } from "./gateway-client.js";
import { readInput } from "./runs-command.js";
import { formatTable, formatTime, truncate } from "./table.js";

/** An enum option given by its name in kebab case (`buffer-one`) or as the API writes it. */
function enumOption<E extends number>(
  name: string,
  value: string | undefined,
  values: Record<string, E>,
): E | undefined {
  if (value === undefined) return undefined;
  const key = value.toLowerCase().replace(/_/g, "-");
  const found = values[key];
  if (found === undefined)
    throw new UsageError(
      `--${name} must be one of ${Object.keys(values).join(", ")}, got ${JSON.stringify(value)}`,
    );
  return found;
}

const OVERLAP: Record<string, OverlapPolicy> = {
  skip: OverlapPolicy.SKIP,
  "buffer-one": OverlapPolicy.BUFFER_ONE,
  "allow-all": OverlapPolicy.ALLOW_ALL,
  "cancel-other": OverlapPolicy.CANCEL_OTHER,
  "terminate-other": OverlapPolicy.TERMINATE_OTHER,
};
const CATCH_UP: Record<string, CatchUpPolicy> = {
  off: CatchUpPolicy.OFF,
  last: CatchUpPolicy.LAST,
  all: CatchUpPolicy.ALL,
};
const kebab = (name: string): string => name.toLowerCase().replace(/_/g, "-");

/**
 * Whether the date and time written in `value` (before any offset) name a real instant of the
 * calendar: Date.parse reads 2026-02-30 as March 2 and 24:00 as the next day without a word.
 */
function realCalendarTime(value: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?/.exec(value);
  if (m === null) return false;
  const [y, mo, d, h = "0", mi = "0", s = "0"] = m.slice(1);
  const at = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)));
  return (
    at.getUTCFullYear() === Number(y) &&
    at.getUTCMonth() === Number(mo) - 1 &&
    at.getUTCDate() === Number(d) &&
    at.getUTCHours() === Number(h) &&
    at.getUTCMinutes() === Number(mi) &&
    at.getUTCSeconds() === Number(s)
  );
}

/** A time option (ISO 8601, e.g. 2026-12-01T00:00:00Z). */
function timeOption(name: string, value: string | undefined): Timestamp {
  if (value === undefined)
    throw new UsageError(`--${name} is required (an ISO 8601 time, e.g. 2026-12-01T00:00:00Z)`);
  const ms = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(ms))
    throw new UsageError(
      `--${name} must be an ISO 8601 time (e.g. 2026-12-01T00:00:00Z), got ${JSON.stringify(value)}`,
    );
  if (!realCalendarTime(value))
    throw new UsageError(`--${name}: ${JSON.stringify(value)} is not a date and time of the calendar`);
  return timestampFromMs(ms);
}

const HEADERS = [
  "SCHEDULE",
  "WORKFLOW",
  "CRON",
  "ZONE",
  "STATE",
  "NEXT FIRE",
  "STARTED",
  "SKIPPED",
  "MISSED",
];

function row(s: Schedule): string[] {
  const spec = s.spec;
  return [
    s.scheduleId,
    spec === undefined
      ? ""
      : `${spec.workflowName}${spec.workflowVersion === 0 ? "" : ` v${spec.workflowVersion}`}${s.declaredBy === undefined ? "" : " (definition)"}`,
    spec?.cron ?? "",
    spec?.timeZone ?? "",
    s.paused ? "paused" : "active",
    formatTime(s.nextFireTimes[0]),
    String(s.startedCount),
    String(s.skippedCount),
    String(s.missedCount),
  ];
}

/** `schedules get` as text: the row, the policies, the next fire times and the recent fires. */
export function describeSchedule(s: Schedule): string {
  const spec = s.spec;
  const lines = [formatTable(HEADERS, [row(s)])];
  if (spec !== undefined) {
    const window = Number(spec.catchUpWindow?.seconds ?? 0n);
    lines.push(
      `overlap: ${kebab(OverlapPolicy[spec.overlapPolicy])}` +
        (spec.overlapPolicy === OverlapPolicy.ALLOW_ALL
          ? ` (at most ${spec.maxConcurrentRuns} active)`
          : "") +
        `; catch-up: ${kebab(CatchUpPolicy[spec.catchUpPolicy])} within ${window}s`,
    );
  }
  if (s.declaredBy !== undefined)
    lines.push(
      `declared by: ${s.declaredBy.workflowName} v${s.declaredBy.workflowVersion} (schedules id ${JSON.stringify(s.declaredBy.id)}): its definition's versions update or delete it`,
    );
  if (s.note !== "") lines.push(`note: ${s.note}`);
  if (s.bufferedFireTime !== undefined) lines.push(`buffered: ${formatTime(s.bufferedFireTime)}`);
  if (s.nextFireTimes.length > 0) lines.push(`next: ${s.nextFireTimes.map((t) => formatTime(t)).join(", ")}`);
  if (s.recentFires.length > 0) {
    lines.push("");
    lines.push(
      formatTable(
        ["FIRE TIME", "ORIGIN", "RUN"],
        s.recentFires.map((f) => [
          formatTime(f.fireTime),
          kebab(FireOrigin[f.origin]),
          f.runId === "" ? `none: ${truncate(f.error, 80)}` : f.runId,
        ]),
      ),
    );
  }
  return lines.join("\n");
}

/** `schedules create <id> --workflow W --cron EXPR [...]`. */
async function createCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: {
      ...COMMON_OPTIONS,
      workflow: { type: "string" },
      version: { type: "string" },
      cron: { type: "string" },
      zone: { type: "string" },
      input: { type: "string", short: "i" },
      label: { type: "string", multiple: true },
      overlap: { type: "string" },
      "max-concurrent": { type: "string" },
      "catch-up": { type: "string" },
      "catch-up-window": { type: "string" },
      paused: { type: "boolean" },
      note: { type: "string" },
    },
  });
  const [scheduleId = ""] = positionals(pos, ["schedule-id"], "schedules create");
  if (values.workflow === undefined) throw new UsageError("schedules create: --workflow is required");
  if (values.cron === undefined) throw new UsageError("schedules create: --cron is required");
  const output = outputOf(values.output);
  const input = await readInput(values.input);
  let windowMs: number | undefined;
  try {
    windowMs =
      values["catch-up-window"] === undefined
        ? undefined
        : parseDuration(values["catch-up-window"], 366 * 86_400_000);
  } catch (e) {
    if (e instanceof DurationError) throw new UsageError(`--catch-up-window: ${e.message}`);
    throw e;
  }
  const spec = {
    cron: values.cron,
    timeZone: values.zone ?? "",
    workflowName: values.workflow,
    workflowVersion: parseCount("version", values.version, 0, 2 ** 31 - 1) ?? 0,
    input: fromJson(ValueSchema, input),
    labels: parseLabels(values.label),
    overlapPolicy: enumOption("overlap", values.overlap, OVERLAP) ?? OverlapPolicy.UNSPECIFIED,
    maxConcurrentRuns: parseCount("max-concurrent", values["max-concurrent"], 1, 1000) ?? 0,
    catchUpPolicy: enumOption("catch-up", values["catch-up"], CATCH_UP) ?? CatchUpPolicy.UNSPECIFIED,
    ...(windowMs === undefined
      ? {}
      : { catchUpWindow: { seconds: BigInt(Math.floor(windowMs / 1000)), nanos: (windowMs % 1000) * 1e6 } }),
  };
  return withGateway(io, "schedules create", values, async (client) => {
    const res = await client.schedules.createSchedule(
      { scheduleId, spec, paused: values.paused === true, note: values.note ?? "" },
      { signal: io.signal },
    );
    if (output === "json") printJson(io, CreateScheduleResponseSchema, res);
    else if (res.schedule !== undefined) {
      io.stdout(`${describeSchedule(res.schedule)}\n`);
      if (!res.created) io.stdout("(this schedule existed already, with this spec)\n");
    }
    return 0;
  });
}

/** `schedules list [--workflow W] [--limit N] [--page-token T]`. */
async function listCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: {
      ...COMMON_OPTIONS,
      workflow: { type: "string" },
      limit: { type: "string" },
      "page-token": { type: "string" },
    },
  });
  positionals(pos, [], "schedules list");
  const output = outputOf(values.output);
  const pageSize = parseCount("limit", values.limit, 1, 1000) ?? 100;
  return withGateway(io, "schedules list", values, async (client) => {
    const res = await client.schedules.listSchedules(
      { workflowName: values.workflow ?? "", pageSize, pageToken: values["page-token"] ?? "" },
      { signal: io.signal },
    );
    if (output === "json") printJson(io, ListSchedulesResponseSchema, res);
    else {
      io.stdout(`${formatTable(HEADERS, res.schedules.map(row))}\n`);
      if (res.nextPageToken !== "") io.stderr(`more: --page-token ${res.nextPageToken}\n`);
    }
    return 0;
  });
}

/** `schedules get|pause|resume|delete <id> [--note N]`: one schedule, shown after the call. */
async function oneCommand(
  verb: "get" | "pause" | "resume" | "delete",
  args: string[],
  io: CommandIo,
): Promise<number> {
  const withNote = verb === "pause" || verb === "resume";
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: { ...COMMON_OPTIONS, ...(withNote ? { note: { type: "string" } } : {}) },
  });
  const [scheduleId = ""] = positionals(pos, ["schedule-id"], `schedules ${verb}`);
  const note = (values as { note?: string }).note ?? "";
  const output = outputOf(values.output);
  return withGateway(io, `schedules ${verb}`, values, async (client) => {
    const call = { signal: io.signal };
    let schedule: Schedule | undefined;
    if (verb === "get") schedule = (await client.schedules.getSchedule({ scheduleId }, call)).schedule;
    else if (verb === "pause")
      schedule = (await client.schedules.pauseSchedule({ scheduleId, note }, call)).schedule;
    else if (verb === "resume")
      schedule = (await client.schedules.resumeSchedule({ scheduleId, note }, call)).schedule;
    else {
      await client.schedules.deleteSchedule({ scheduleId }, call);
      if (output === "json") io.stdout("{}\n");
      else io.stdout(`deleted schedule ${scheduleId}\n`);
      return 0;
    }
    if (schedule === undefined) return 1;
    if (output === "json") printJson(io, ScheduleSchema, schedule);
    else io.stdout(`${describeSchedule(schedule)}\n`);
    return 0;
  });
}

/** `schedules trigger <id> [--idempotency-key K]`: a run now. */
async function triggerCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: { ...COMMON_OPTIONS, "idempotency-key": { type: "string" } },
  });
  const [scheduleId = ""] = positionals(pos, ["schedule-id"], "schedules trigger");
  const output = outputOf(values.output);
  return withGateway(io, "schedules trigger", values, async (client) => {
    const res = await client.schedules.triggerSchedule(
      { scheduleId, idempotencyKey: values["idempotency-key"] ?? "" },
      { signal: io.signal },
    );
    if (output === "json") printJson(io, TriggerScheduleResponseSchema, res);
    else io.stdout(`${res.created ? "started" : "existing"} run ${res.fire?.runId ?? ""}\n`);
    return 0;
  });
}

/** `schedules backfill <id> --from TIME --to TIME`: a run per fire time of [from, to). */
async function backfillCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: { ...COMMON_OPTIONS, from: { type: "string" }, to: { type: "string" } },
  });
  const [scheduleId = ""] = positionals(pos, ["schedule-id"], "schedules backfill");
  const startTime = timeOption("from", values.from);
  const endTime = timeOption("to", values.to);
  const output = outputOf(values.output);
  return withGateway(io, "schedules backfill", values, async (client) => {
    const res = await client.schedules.backfillSchedule(
      { scheduleId, startTime, endTime },
      { signal: io.signal },
    );
    if (output === "json") printJson(io, BackfillScheduleResponseSchema, res);
    else {
      io.stdout(
        `${formatTable(
          ["FIRE TIME", "RUN"],
          res.fires.map((f) => [formatTime(f.fireTime), f.runId]),
        )}\n`,
      );
      io.stdout(`${res.startedCount} run(s) started, ${res.fires.length - res.startedCount} existed\n`);
    }
    return 0;
  });
}

/** `nexusflow schedules <create|list|get|pause|resume|trigger|delete|backfill> ...`. */
export async function schedulesCommand(args: string[], io: CommandIo): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case "create":
      return createCommand(rest, io);
    case "list":
      return listCommand(rest, io);
    case "get":
    case "pause":
    case "resume":
    case "delete":
      return oneCommand(sub, rest, io);
    case "trigger":
      return triggerCommand(rest, io);
    case "backfill":
      return backfillCommand(rest, io);
    case undefined:
      throw new UsageError(
        "schedules: expected create, list, get, pause, resume, trigger, delete or backfill",
      );
    default:
      throw new UsageError(
        `schedules: unknown subcommand ${JSON.stringify(sub)} (create, list, get, pause, resume, trigger, delete, backfill)`,
      );
  }
}
