/**
 * `nexusflow apply <file>...`: registers workflow definitions from JSON files through the gateway;
 * JSON that is not a definition (an input document matched by `examples/*.json`) is skipped with
 * a note, and a file that is not JSON fails without stopping the others.
 */
import { readFile } from "node:fs/promises";
import { type JsonValue, toJson } from "@bufbuild/protobuf";
import { ConnectError } from "@nexusflow/client";
import { RegisterWorkflowResponseSchema } from "@nexusflow/gen";
import { COMMON_OPTIONS, type CommandIo, UsageError, outputOf, parse } from "./command.js";
import { withGateway } from "./gateway-client.js";
import { formatTable } from "./table.js";

/** `nexusflow apply <file>...`: registers each workflow definition file. */
export async function applyCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: files } = parse({ args, options: COMMON_OPTIONS, allowPositionals: true });
  const output = outputOf(values.output);
  if (files.length === 0) throw new UsageError("apply: expected one or more workflow files");
  const texts: [string, string][] = [];
  let failed = false;
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (e) {
      io.stderr(`nexusflow: apply: cannot read ${file}: ${(e as Error).message}\n`);
      return 1;
    }
    // `apply examples/*.json` also matches input documents: those are skipped, not sent.
    const kind = classifyWorkflowFile(text);
    if (kind.kind === "definition") texts.push([file, text]);
    else if (kind.kind === "other") io.stderr(`nexusflow: apply: skipping ${file}: ${kind.reason}\n`);
    else {
      io.stderr(`nexusflow: apply: ${file} is not valid JSON: ${kind.message}\n`);
      failed = true;
    }
  }
  if (texts.length === 0) return failed ? 1 : 0;
  return withGateway(io, "apply", values, async (client) => {
    const rows: string[][] = [];
    const results: JsonValue[] = [];
    for (const [file, text] of texts) {
      let res;
      try {
        res = await client.registerWorkflow(text, { signal: io.signal });
      } catch (e) {
        // Name the file: with several, the error alone does not say which one is wrong.
        const err = ConnectError.from(e);
        const named = new ConnectError(`${file}: ${err.rawMessage}`, err.code, err.metadata, undefined, err);
        named.details = err.details;
        throw named;
      }
      results.push(toJson(RegisterWorkflowResponseSchema, res));
      rows.push([
        res.workflow?.name ?? "?",
        String(res.workflow?.version ?? "?"),
        res.created ? "registered" : "unchanged",
        file,
      ]);
    }
    if (output === "json") io.stdout(`${JSON.stringify(results, null, 2)}\n`);
    else io.stdout(`${formatTable(["WORKFLOW", "VERSION", "RESULT", "FILE"], rows)}\n`);
    return failed ? 1 : 0;
  });
}

/** What a file given to `apply` holds: a definition, other JSON (skipped), or no JSON at all. */
export type WorkflowFileKind =
  { kind: "definition" } | { kind: "other"; reason: string } | { kind: "invalid"; message: string };

/** A definition is a JSON object with "name" and "steps"; the server validates the rest. */
export function classifyWorkflowFile(text: string): WorkflowFileKind {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { kind: "invalid", message: e instanceof Error ? e.message : String(e) };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { kind: "other", reason: "not a workflow definition (not a JSON object)" };
  }
  if (!("name" in value) || !("steps" in value)) {
    return { kind: "other", reason: 'not a workflow definition (no "name" and "steps")' };
  }
  return { kind: "definition" };
}
