/**
 * `nexusflow cluster`: the scheduler replicas of the installation and the partitions each owns,
 * with their epochs (ReplicaService.ListReplicas, read from the database's tables by whichever
 * replica answers), one row per replica, then the partitions no replica holds; or, with
 * `--output json`, the response.
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ListReplicasResponseSchema, type PartitionLease, type Replica } from "@nexusflow/gen";
import { COMMON_OPTIONS, type CommandIo, outputOf, parse, positionals, printJson } from "./command.js";
import { withGateway } from "./gateway-client.js";
import { formatTable, formatTime } from "./table.js";

const HEADERS = ["REPLICA", "ADDRESS", "HOST/PID", "STATE", "HEARTBEAT", "PARTITIONS (EPOCH)"];

/** Partitions as "0-3 (1), 4 (2)": consecutive partitions of one epoch share a range. */
export function formatPartitions(leases: readonly PartitionLease[]): string {
  const parts: string[] = [];
  let start: PartitionLease | undefined;
  let end: PartitionLease | undefined;
  const flush = (): void => {
    if (start === undefined || end === undefined) return;
    const range =
      start.partition === end.partition ? `${start.partition}` : `${start.partition}-${end.partition}`;
    parts.push(`${range} (${start.epoch})`);
  };
  for (const p of [...leases].sort((a, b) => a.partition - b.partition)) {
    if (
      start !== undefined &&
      end !== undefined &&
      p.partition === end.partition + 1 &&
      p.epoch === start.epoch
    )
      end = p;
    else {
      flush();
      start = p;
      end = p;
    }
  }
  flush();
  return parts.length === 0 ? "-" : parts.join(", ");
}

/** One replica as a table row; `readMs`: the database's time of the answer. */
export function replicaRow(r: Replica, readMs: number): string[] {
  const age = r.heartbeatTime === undefined ? undefined : readMs - timestampMs(r.heartbeatTime);
  return [
    r.replicaId,
    r.address === "" ? "-" : r.address,
    `${r.host}/${r.pid}`,
    r.live ? "live" : "silent",
    age === undefined ? formatTime(r.heartbeatTime) : `${(Math.max(0, age) / 1000).toFixed(1)}s ago`,
    `${r.partitions.length}: ${formatPartitions(r.partitions)}`,
  ];
}

/** Runs `nexusflow cluster`. */
export async function clusterCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: { ...COMMON_OPTIONS },
  });
  positionals(pos, [], "cluster");
  const output = outputOf(values.output);
  return withGateway(io, "cluster", values, async (client) => {
    const res = await client.replicas.listReplicas({}, { signal: io.signal });
    if (output === "json") {
      printJson(io, ListReplicasResponseSchema, res);
      return 0;
    }
    const readMs = res.readTime === undefined ? Date.now() : timestampMs(res.readTime);
    const live = res.replicas.filter((r) => r.live).length;
    io.stdout(`${res.partitionCount} partitions, ${live} live replica${live === 1 ? "" : "s"}\n`);
    if (res.replicas.length > 0)
      io.stdout(
        `${formatTable(
          HEADERS,
          res.replicas.map((r) => replicaRow(r, readMs)),
        )}\n`,
      );
    if (res.unowned.length > 0) io.stdout(`not held by any replica: ${formatPartitions(res.unowned)}\n`);
    return 0;
  });
}
