/**
 * The run page's view of a WatchRun message. A run too large for a client's usual limits (over
 * 3 MiB encoded, or nested deeper than decoders read) is sent without its values, the message
 * saying so (`valuesOmitted`): its states are current, its inputs, outputs, error details and
 * signal payloads left out. The page keeps the values it has (from GetRun, or an earlier whole
 * message) and takes the states from such a message ({@link mergeWatchedRun}); when the run has
 * ended that way, it reads the run once more with GetRun for its final output and error.
 */
import { mergeWatchedRun } from "@nexusflow/client/watched-run";
import type { Run, WatchRunResponse } from "@nexusflow/gen";

export { mergeWatchedRun };

/** The run a WatchRun message shows, given the run shown before (`known`). */
export function watchedRun(
  known: Run | undefined,
  message: Pick<WatchRunResponse, "run" | "valuesOmitted">,
): Run | undefined {
  if (message.run === undefined) return undefined;
  return message.valuesOmitted ? mergeWatchedRun(known, message.run) : message.run;
}
