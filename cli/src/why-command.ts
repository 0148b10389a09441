/**
 * `nexusflow runs why <run-id> <step-id> [--compensation]`: why a step's task is not running, from
 * ExplainPending: every gate that holds it now, one plain sentence each (or, as JSON, the
 * response). A task that runs or has finished says so.
 */
import { type Timestamp, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  ExplainPendingResponseSchema,
  TaskKind,
  TaskStatus,
  type ExplainPendingResponse,
  type PendingGate,
} from "@nexusflow/gen";
import { COMMON_OPTIONS, type CommandIo, outputOf, parse, positionals, printJson } from "./command.js";
import { withGateway } from "./gateway-client.js";
import { formatDuration, runStatusName, taskStatusName } from "./progress.js";
import { createStyle, type Style } from "./style.js";
import { formatTime } from "./table.js";

const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;
const list = (ids: readonly string[]): string => ids.join(", ");

/** "2026-01-31 12:00:05 (in 59m58s)", or "(… ago)" once past; `nowMs` is the answer's time. */
function when(ts: Timestamp | undefined, nowMs: number): string {
  if (ts === undefined) return "-";
  const delta = timestampMs(ts) - nowMs;
  const rel = delta >= 0 ? `in ${formatDuration(delta)}` : `${formatDuration(-delta)} ago`;
  return `${formatTime(ts)} UTC (${rel})`;
}

/** "2 tasks of its type are ahead of it in the queue" or "" when none is. */
function ahead(n: number): string {
  return n === 0
    ? "it is first in line"
    : `${plural(n, "task")} of its type ${n === 1 ? "is" : "are"} ahead of it`;
}

/** One gate as a sentence for people. */
export function describeGate(gate: PendingGate, nowMs: number): string {
  const g = gate.gate;
  switch (g.case) {
    case "dependencies": {
      const parts: string[] = [];
      if (g.value.stepIds.length > 0)
        parts.push(
          `waiting for ${g.value.stepIds.length === 1 ? "step" : "steps"} ${list(g.value.stepIds)} to finish`,
        );
      if (g.value.readingOutputStepIds.length > 0)
        parts.push(
          `waiting for the offloaded output of ${list(g.value.readingOutputStepIds)} to be read back`,
        );
      return parts.join("; ");
    }
    case "condition":
      return `its condition ${JSON.stringify(g.value.expression)} is decided once ${list(g.value.stepIds)} ${g.value.stepIds.length === 1 ? "finishes" : "finish"}`;
    case "retryBackoff": {
      const e = g.value.lastError;
      const failure =
        e === undefined ? "its last attempt failed" : `its last attempt failed (${e.type}: ${e.message})`;
      return `${failure}; attempt ${g.value.nextAttempt} of ${g.value.maxAttempts} is due at ${when(g.value.nextAttemptTime, nowMs)}`;
    }
    case "noExecutor":
      return `no executor advertises type ${JSON.stringify(g.value.type)}${g.value.since === undefined ? "" : ` (since ${formatTime(g.value.since)} UTC)`}: start one that runs it; ${ahead(g.value.ahead)}`;
    case "executorsBusy": {
      const { executors, draining } = g.value;
      const who = executors === 1 ? "the one executor" : `all ${executors} executors`;
      const state =
        draining === executors
          ? `${executors === 1 ? "is" : "are"} draining`
          : draining === 0
            ? `${executors === 1 ? "has" : "have"} every slot in use (no credit)`
            : `${executors === 1 ? "has" : "have"} every slot in use or ${executors === 1 ? "is" : "are"} draining`;
      return `${who} for type ${JSON.stringify(g.value.type)} ${state}${g.value.since === undefined ? "" : ` (since ${formatTime(g.value.since)} UTC)`}; ${ahead(g.value.ahead)}`;
    }
    case "scheduleToStart":
      return `unless an executor takes it by ${when(g.value.deadline, nowMs)}, this attempt fails with SCHEDULE_TO_START_TIMEOUT (timeout ${formatDuration(Number(g.value.timeoutMs))}) and is retried per its policy`;
    case "runStopping":
      return g.value.cancelRequested
        ? "the run was cancelled: it will not start"
        : "the run is rolling back (compensating): it will not start";
    case "concurrencyKey": {
      const v = g.value;
      const what = v.scope === "workflow" ? "its run waits for a slot of" : "it waits for a slot of";
      const holders = v.holders.map((h) =>
        h.stepId === "" ? `run ${h.runId}` : `${h.stepId} of run ${h.runId}`,
      );
      const more = v.holding > holders.length ? ` and ${v.holding - holders.length} more` : "";
      const held = v.holding === 0 ? "nobody holds it" : `held by ${holders.join(", ")}${more}`;
      const place =
        v.position > 0
          ? `it is ${v.position} of ${v.waiting} in the key's queue`
          : v.waiting > 0
            ? `${plural(v.waiting, "other")} wait${v.waiting === 1 ? "s" : ""} in the key's queue`
            : "nothing else waits for it";
      return `${what} concurrency key ${JSON.stringify(v.key)} (${v.keyExpression}, limit ${v.limit}, ${v.strategy}): ${held}; ${place}`;
    }
    case "durableWait":
      if (g.value.event !== "")
        return `it waits for an event ${JSON.stringify(g.value.event)}${g.value.filter === "" ? "" : ` for which ${g.value.filter}`} published while it waits${g.value.until === undefined ? "" : `, and fails with WAIT_TIMEOUT unless one is by ${when(g.value.until, nowMs)}`}: publish it with nexusflow events publish`;
      return g.value.signal === ""
        ? `it sleeps until ${when(g.value.until, nowMs)}`
        : `it waits for signal ${JSON.stringify(g.value.signal)}${g.value.until === undefined ? "" : `, and fails with WAIT_TIMEOUT unless it arrives by ${when(g.value.until, nowMs)}`}: send it with nexusflow runs signal`;
    case "rateLimit": {
      const v = g.value;
      const limit = `rate limit ${JSON.stringify(v.name)}${v.key === "" ? "" : ` key ${JSON.stringify(v.key)}`}`;
      if (v.pausedUntil !== undefined)
        return `${limit} is paused until ${when(v.pausedUntil, nowMs)}${v.pausedBy === "" ? "" : ` by ${v.pausedBy}`}${v.pauseNote === "" ? "" : ` (${v.pauseNote})`}: resume it with nexusflow ratelimits resume ${v.name}${v.key === "" ? "" : ` --key ${JSON.stringify(v.key)}`}`;
      return `${limit} has no token for it: the next is due at ${when(v.nextTokenAt, nowMs)}`;
    }
    case "fairShare": {
      const v = g.value;
      const group = (value: string): string =>
        v.level === "key"
          ? `key ${JSON.stringify(value)} of tenant ${JSON.stringify(v.tenant)}`
          : `tenant ${JSON.stringify(value)}${value === "" ? " (the runs without fairness)" : ""}`;
      const own = group(v.level === "key" ? v.key : v.tenant);
      const cap = v.max === 0 ? "" : v.atMax ? `, at its maximum of ${v.max}` : `, maximum ${v.max}`;
      const min = v.min === 0 ? "" : `, minimum ${v.min}`;
      const others = v.level === "key" ? "keys of the tenant have" : "tenants have";
      return `by fair share, ${group(v.next)} is served before ${own} when a slot for type ${JSON.stringify(v.type)} frees (${own} holds ${plural(v.leased, "lease")} of the type, weight ${v.weight}${min}${cap}; ${v.waiting} ${others} ready tasks)`;
    }
    case "mapElements": {
      const v = g.value;
      return `it is a map step waiting for its elements: ${v.succeeded + v.failed} of ${v.total} ended (${v.succeeded} succeeded, ${v.failed} failed), ${v.running} running, ${v.queued} queued, ${v.waitingForParallelism} waiting for a place under its parallelism of ${v.parallelism}; each is a task run of its own (nexusflow runs get lists them as <step>[<index>])`;
    }
    case "childRun":
      return `it waits for its child run ${g.value.runId} (workflow ${g.value.workflowName}${g.value.workflowVersion === 0 ? "" : ` v${g.value.workflowVersion}`}) to ${g.value.compensating ? "roll back (its compensations)" : "end"}: see nexusflow runs get ${g.value.runId}`;
    case undefined:
      return "held by a gate this CLI does not know (a newer scheduler?): see --output json";
  }
}

/** What a task in a state that nothing holds is doing, in words. */
function stateSentence(status: TaskStatus): string {
  switch (status) {
    case TaskStatus.LEASED:
      return "an executor has taken it and is about to start it";
    case TaskStatus.RUNNING:
      return "it is running";
    case TaskStatus.SUCCEEDED:
    case TaskStatus.FAILED:
    case TaskStatus.SKIPPED:
    case TaskStatus.CANCELLED:
      return "it has finished";
    default:
      return "nothing holds it: it is about to be scheduled";
  }
}

/** The explanation as text: a headline, then one line per gate. */
export function describeExplanation(r: ExplainPendingResponse, style: Style): string {
  const nowMs = r.time === undefined ? Date.now() : timestampMs(r.time);
  const name = r.kind === TaskKind.COMPENSATION ? `${r.stepId} (undo)` : r.stepId;
  const priority = r.priority === 0 ? "" : `, priority ${r.priority}`;
  const head = `${style.bold(name)} of run ${r.runId} (${runStatusName(r.runStatus)}) is ${taskStatusName(r.status)}${priority}`;
  if (r.gates.length === 0) return `${head}: ${stateSentence(r.status)}.`;
  const lines = [`${head}; held by ${plural(r.gates.length, "gate")}:`];
  for (const gate of r.gates) lines.push(`  - ${style.yellow(describeGate(gate, nowMs))}`);
  return lines.join("\n");
}

/** `runs why <run-id> <step-id> [--compensation]`. */
export async function whyCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: { ...COMMON_OPTIONS, compensation: { type: "boolean" } },
  });
  const [runId = "", stepId = ""] = positionals(pos, ["run-id", "step-id"], "runs why");
  const output = outputOf(values.output);
  return withGateway(io, "runs why", values, async (client) => {
    const res = await client.workflows.explainPending(
      { runId, stepId, compensation: values.compensation === true },
      { signal: io.signal },
    );
    if (output === "json") printJson(io, ExplainPendingResponseSchema, res);
    else io.stdout(`${describeExplanation(res, createStyle(io.color))}\n`);
    return 0;
  });
}
