/**
 * `nexusflow events publish|get|list`: events through the gateway (EventService), as text or
 * JSON (`--output json`). A published event starts a run of each workflow whose triggers match
 * it, and ends the wait steps waiting for it; the text output names each run (or why a workflow's
 * match failed) and each waiting step it matched.
 */
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  EventMatchStatus,
  EventWaitMatchStatus,
  GetEventResponseSchema,
  ListEventsResponseSchema,
  PublishEventResponseSchema,
  type PublishedEvent,
} from "@nexusflow/gen";
import {
  COMMON_OPTIONS,
  type CommandIo,
  UsageError,
  outputOf,
  parse,
  parseCount,
  positionals,
  printJson,
} from "./command.js";
import { withGateway } from "./gateway-client.js";
import { readJson } from "./runs-command.js";
import { formatTable, formatTime, truncate } from "./table.js";

const STATUS: Record<EventMatchStatus, string> = {
  [EventMatchStatus.UNSPECIFIED]: "",
  [EventMatchStatus.PENDING]: "pending",
  [EventMatchStatus.STARTED]: "started",
  [EventMatchStatus.FAILED]: "failed",
};

const WAIT_STATUS: Record<EventWaitMatchStatus, string> = {
  [EventWaitMatchStatus.UNSPECIFIED]: "",
  [EventWaitMatchStatus.PENDING]: "pending",
  [EventWaitMatchStatus.SATISFIED]: "satisfied",
  [EventWaitMatchStatus.WAIT_ENDED]: "wait ended",
};

/** An event, its matches and the waiting steps it matched, as text. */
export function describeEvent(event: PublishedEvent): string {
  const lines = [`event ${event.eventId} ${event.key} at ${formatTime(event.publishTime)}`];
  if (event.matches.length === 0) lines.push("no workflow's trigger matched it");
  else
    lines.push(
      formatTable(
        ["WORKFLOW", "VERSION", "TRIGGER", "STATUS", "RUN / ERROR"],
        event.matches.map((m) => [
          m.workflowName,
          String(m.workflowVersion),
          String(m.triggerIndex),
          STATUS[m.status] ?? String(m.status),
          m.runId !== "" ? m.runId : truncate(m.error, 120),
        ]),
      ),
    );
  if (event.waits.length > 0)
    lines.push(
      formatTable(
        ["WAITING RUN", "STEP", "STATUS"],
        event.waits.map((w) => [w.runId, w.stepId, WAIT_STATUS[w.status] ?? String(w.status)]),
      ),
    );
  return lines.join("\n");
}

/** `events publish <key> [--payload JSON|@file] [--idempotency-key K]`. */
async function publishCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: { ...COMMON_OPTIONS, payload: { type: "string" }, "idempotency-key": { type: "string" } },
  });
  const [key = ""] = positionals(pos, ["key"], "events publish");
  const output = outputOf(values.output);
  const payload = values.payload === undefined ? null : await readJson(values.payload, "--payload");
  return withGateway(io, "events publish", values, async (client) => {
    const res = await client.events.publishEvent(
      { key, payload: fromJson(ValueSchema, payload), idempotencyKey: values["idempotency-key"] ?? "" },
      { signal: io.signal },
    );
    if (output === "json") printJson(io, PublishEventResponseSchema, res);
    else if (res.event !== undefined) {
      if (!res.created) io.stdout("(existing event for this idempotency key)\n");
      io.stdout(`${describeEvent(res.event)}\n`);
    }
    return 0;
  });
}

/** `events get <event-id>`. */
async function getCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({ args, allowPositionals: true, options: COMMON_OPTIONS });
  const [eventId = ""] = positionals(pos, ["event-id"], "events get");
  const output = outputOf(values.output);
  return withGateway(io, "events get", values, async (client) => {
    const res = await client.events.getEvent({ eventId }, { signal: io.signal });
    if (output === "json") printJson(io, GetEventResponseSchema, res);
    else if (res.event !== undefined) io.stdout(`${describeEvent(res.event)}\n`);
    return 0;
  });
}

/** `events list [--prefix P] [--limit N] [--page-token T]`. */
async function listCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: {
      ...COMMON_OPTIONS,
      prefix: { type: "string" },
      limit: { type: "string" },
      "page-token": { type: "string" },
    },
  });
  positionals(pos, [], "events list");
  const output = outputOf(values.output);
  const pageSize = parseCount("limit", values.limit, 1, 1000) ?? 100;
  return withGateway(io, "events list", values, async (client) => {
    const res = await client.events.listEvents(
      { keyPrefix: values.prefix ?? "", pageSize, pageToken: values["page-token"] ?? "" },
      { signal: io.signal },
    );
    if (output === "json") printJson(io, ListEventsResponseSchema, res);
    else {
      io.stdout(
        `${formatTable(
          ["EVENT", "KEY", "PUBLISHED"],
          res.events.map((e) => [e.eventId, e.key, formatTime(e.publishTime)]),
        )}\n`,
      );
      if (res.nextPageToken !== "") io.stderr(`more: --page-token ${res.nextPageToken}\n`);
    }
    return 0;
  });
}

/** `nexusflow events <publish|get|list> ...` (`events tail` is events.ts'). */
export async function publishedEventsCommand(
  sub: "publish" | "get" | "list",
  args: string[],
  io: CommandIo,
): Promise<number> {
  switch (sub) {
    case "publish":
      return publishCommand(args, io);
    case "get":
      return getCommand(args, io);
    case "list":
      return listCommand(args, io);
    default:
      throw new UsageError(`events: unknown subcommand ${JSON.stringify(sub)}`);
  }
}
