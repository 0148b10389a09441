/**
 * `nexusflow executors [--type T] [--limit N] [--page-token T]`: the executor sessions attached to
 * the scheduler (ClusterService.ListExecutors), one row each: its task types with the leases of
 * each it holds, slots in use, credit, draining; or, with `--output json`, the response.
 */
import type { ExecutorSession } from "@nexusflow/gen";
import { ListExecutorsResponseSchema } from "@nexusflow/gen";
import {
  COMMON_OPTIONS,
  type CommandIo,
  outputOf,
  parse,
  parseCount,
  positionals,
  printJson,
} from "./command.js";
import { withGateway } from "./gateway-client.js";
import { formatTable, formatTime } from "./table.js";

const HEADERS = ["EXECUTOR", "SESSION", "TYPES (LEASES HELD)", "IN USE", "CREDIT", "STATE", "ATTACHED"];

/** One session as a table row. */
export function executorRow(e: ExecutorSession): string[] {
  return [
    e.executorId,
    e.sessionId.slice(0, 8),
    e.taskTypes.map((t) => (t.slotsInUse > 0 ? `${t.name} (${t.slotsInUse})` : t.name)).join(", "),
    e.slots > 0 ? `${e.slotsInUse}/${e.slots}` : String(e.slotsInUse),
    String(e.credit),
    e.draining ? "draining" : "taking work",
    formatTime(e.attachTime),
  ];
}

/** Runs `nexusflow executors`. */
export async function executorsCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: {
      ...COMMON_OPTIONS,
      type: { type: "string" },
      limit: { type: "string" },
      "page-token": { type: "string" },
    },
  });
  positionals(pos, [], "executors");
  const output = outputOf(values.output);
  const pageSize = parseCount("limit", values.limit, 1, 1000) ?? 100;
  return withGateway(io, "executors", values, async (client) => {
    const res = await client.cluster.listExecutors(
      { taskType: values.type ?? "", pageSize, pageToken: values["page-token"] ?? "" },
      { signal: io.signal },
    );
    if (output === "json") {
      printJson(io, ListExecutorsResponseSchema, res);
      return 0;
    }
    if (res.executors.length === 0) {
      io.stdout(`no executor is attached${values.type === undefined ? "" : ` for ${values.type}`}\n`);
      return 0;
    }
    io.stdout(`${formatTable(HEADERS, res.executors.map(executorRow))}\n`);
    if (res.nextPageToken !== "") io.stderr(`more: --page-token ${res.nextPageToken}\n`);
    return 0;
  });
}
