/**
 * `nexusflow ratelimits list|pause|resume`: the token buckets of named rate limits through the
 * gateway (RateLimitService), as tables or JSON (`--output json`).
 */
import { timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { DurationError, parseDuration } from "@nexusflow/common/duration";
import { ListRateLimitsResponseSchema, type RateLimitBucket, RateLimitBucketSchema } from "@nexusflow/gen";
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
import { formatTable, formatTime, truncate } from "./table.js";

const HEADERS = ["NAME", "KEY", "TOKENS", "AS OF", "PAUSED UNTIL", "BY", "NOTE", "WAITING"];

function row(b: RateLimitBucket): string[] {
  return [
    b.name,
    b.key === "" ? "-" : b.key,
    Number.isFinite(b.tokens) ? b.tokens.toFixed(2) : "full",
    formatTime(b.asOf),
    b.pausedUntil === undefined ? "-" : formatTime(b.pausedUntil),
    b.pausedBy === "" ? "-" : b.pausedBy,
    b.pauseNote === "" ? "-" : truncate(b.pauseNote, 40),
    String(b.waiting),
  ];
}

/** --until TIME (ISO 8601) or --for DURATION (from now), exactly one. */
function untilOption(until: string | undefined, forValue: string | undefined): Timestamp {
  if ((until === undefined) === (forValue === undefined))
    throw new UsageError(
      "ratelimits pause: give --until TIME (ISO 8601) or --for DURATION (e.g. 10m), one of them",
    );
  if (forValue !== undefined) {
    try {
      return timestampFromMs(Date.now() + parseDuration(forValue));
    } catch (e) {
      if (e instanceof DurationError) throw new UsageError(`--for: ${e.message}`);
      throw e;
    }
  }
  const ms = Date.parse(until as string);
  if (!/^\d{4}-\d{2}-\d{2}/.test(until as string) || Number.isNaN(ms))
    throw new UsageError(
      `--until must be an ISO 8601 time (e.g. 2026-12-01T00:00:00Z), got ${JSON.stringify(until)}`,
    );
  return timestampFromMs(ms);
}

function describe(b: RateLimitBucket): string {
  const key = b.key === "" ? "" : ` key ${JSON.stringify(b.key)}`;
  return b.pausedUntil === undefined
    ? `rate limit ${JSON.stringify(b.name)}${key} is not paused`
    : `rate limit ${JSON.stringify(b.name)}${key} is paused until ${formatTime(b.pausedUntil)} by ${b.pausedBy}${b.pauseNote === "" ? "" : ` (${b.pauseNote})`}`;
}

/** `nexusflow ratelimits <list|pause|resume> ...`. */
export async function rateLimitsCommand(args: string[], io: CommandIo): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case "list": {
      const { values } = parse({
        args: rest,
        options: {
          ...COMMON_OPTIONS,
          name: { type: "string" },
          limit: { type: "string" },
          "page-token": { type: "string" },
        },
      });
      const output = outputOf(values.output);
      const pageSize = parseCount("limit", values.limit, 1, 1000) ?? 100;
      return withGateway(io, "ratelimits list", values, async (client) => {
        const res = await client.rateLimits.listRateLimits(
          { name: values.name ?? "", pageSize, pageToken: values["page-token"] ?? "" },
          { signal: io.signal },
        );
        if (output === "json") {
          printJson(io, ListRateLimitsResponseSchema, res);
          return 0;
        }
        io.stdout(`${formatTable(HEADERS, res.buckets.map(row))}\n`);
        if (res.nextPageToken !== "") io.stderr(`more: --page-token ${res.nextPageToken}\n`);
        return 0;
      });
    }
    case "pause":
    case "resume": {
      const { values, positionals: pos } = parse({
        args: rest,
        allowPositionals: true,
        options: {
          ...COMMON_OPTIONS,
          key: { type: "string" },
          ...(sub === "pause"
            ? { until: { type: "string" }, for: { type: "string" }, note: { type: "string" } }
            : {}),
        },
      });
      const [name = ""] = positionals(pos, ["name"], `ratelimits ${sub}`);
      const v = values as { key?: string; until?: string; for?: string; note?: string };
      const key = v.key ?? "";
      const until = sub === "pause" ? untilOption(v.until, v.for) : undefined;
      const output = outputOf(values.output);
      return withGateway(io, `ratelimits ${sub}`, values, async (client) => {
        const call = { signal: io.signal };
        const res =
          sub === "pause"
            ? await client.rateLimits.pauseRateLimit({ name, key, until, note: v.note ?? "" }, call)
            : await client.rateLimits.resumeRateLimit({ name, key }, call);
        if (res.bucket === undefined) return 1;
        if (output === "json") printJson(io, RateLimitBucketSchema, res.bucket);
        else io.stdout(`${describe(res.bucket)}\n`);
        return 0;
      });
    }
    case undefined:
      throw new UsageError("ratelimits: expected list, pause or resume");
    default:
      throw new UsageError(`ratelimits: unknown subcommand ${JSON.stringify(sub)} (list, pause, resume)`);
  }
}
