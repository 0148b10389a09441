/**
 * The one line that says why something failed, for every command of the CLI (`nexusflow dev`
 * included): an RPC's code, message and field violations; anything else, its message.
 */
import { Code, ConnectError, fieldViolations } from "@nexusflow/client";

/** SCREAMING_SNAKE name of a code ("INVALID_ARGUMENT"). */
function codeName(code: Code): string {
  return (Code[code] ?? "UNKNOWN").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/**
 * One line describing a failure, with the field violations of a refused call. Given the address
 * of the gateway the user chose, UNAVAILABLE and UNAUTHENTICATED also say what to set.
 */
export function describeError(e: unknown, address?: string): string {
  if (!(e instanceof ConnectError)) return e instanceof Error ? e.message : String(e);
  const violations = fieldViolations(e);
  let text = `${codeName(e.code)}: ${e.rawMessage}`;
  const listed = violations.filter((v) => !e.rawMessage.includes(v.description));
  if (listed.length > 0) text += ` (${listed.map((v) => `${v.field}: ${v.description}`).join("; ")})`;
  if (address !== undefined && e.code === Code.Unavailable) {
    return `${text} (is the gateway running at ${address}? set NEXUSFLOW_ADDRESS or --address)`;
  }
  if (address !== undefined && e.code === Code.Unauthenticated) {
    return `${text} (set NEXUSFLOW_TOKEN or --token; for a dev stack: export NEXUSFLOW_TOKEN=$(nexusflow token))`;
  }
  return text.replace(/\s+/g, " ");
}
