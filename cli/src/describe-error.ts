/** The one line that says why a call failed, for the operator commands and `nexusflow dev`. */
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";

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
