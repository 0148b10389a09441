/**
 * The CLI's one watch loop: `runs watch`, `runs start --watch` and the sample run of `nexusflow dev`
 * follow a run with {@link followRun}. The watching is the client's `waitForRun` (WatchRun, opened
 * again when the connection is lost); this module prints what it sees, with progress.ts.
 */
import { toJson } from "@bufbuild/protobuf";
import { type NexusflowClient, type Run, isTerminalRunStatus } from "@nexusflow/client";
import { type WatchRunResponse, WatchRunResponseSchema } from "@nexusflow/gen";
import { RunProgress, formatTaskChange } from "./progress.js";
import type { Style } from "./style.js";

/** How {@link followRun} follows and prints. */
export interface FollowRunOptions {
  /** Stops following: the promise rejects with CANCELED. */
  signal: AbortSignal;
  /**
   * Gives up after this many milliseconds (DEADLINE_EXCEEDED).
   * @default none
   */
  timeoutMs?: number | undefined;
  /** Writes one line (without its newline). */
  say: (line: string) => void;
  style: Style;
  /**
   * `steps`: a line per task change; `json`: every WatchRun message as a JSON line (the last one,
   * when it came without the run's values, `valuesOmitted`, with the whole run as it ended, read
   * with GetRun, instead).
   * @default "steps"
   */
  format?: "steps" | "json" | undefined;
  /**
   * Starts with a line naming the run and its workflow (`steps` only).
   * @default false
   */
  header?: boolean | undefined;
}

/** Step column width: the longest step id with room for " (undo)". */
function stepWidth(run: Run): number {
  return Math.max(12, ...run.tasks.map((t) => t.stepId.length + 7));
}

/**
 * Follows run `runId` until it ends, printing it as it changes; resolves with the run as it ended,
 * whole (waitForRun reads a run too large for WatchRun's messages with GetRun at its end).
 */
export async function followRun(
  client: NexusflowClient,
  runId: string,
  options: FollowRunOptions,
): Promise<Run> {
  const { say, style } = options;
  const progress = new RunProgress();
  let first = true;
  /** The last message (the run ended) when it came without the run's values: printed whole below. */
  let lean: WatchRunResponse | undefined;
  const final = await client.waitForRun(runId, {
    signal: options.signal,
    timeoutMs: options.timeoutMs,
    onMessage: (message) => {
      const run = message.run;
      if (run === undefined) return;
      if (options.format === "json") {
        if (message.valuesOmitted && isTerminalRunStatus(run.status)) lean = message;
        else say(JSON.stringify(toJson(WatchRunResponseSchema, message)));
        return;
      }
      if (first && options.header === true)
        say(`run ${style.bold(run.id)} ${run.workflowName} v${run.workflowVersion}`);
      first = false;
      const width = stepWidth(run);
      for (const change of progress.update(run)) say(formatTaskChange(change, style, width));
    },
  });
  if (lean !== undefined)
    say(JSON.stringify(toJson(WatchRunResponseSchema, { ...lean, run: final, valuesOmitted: false })));
  return final;
}
