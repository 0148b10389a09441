/**
 * What every operator command shares: what it gets from the process ({@link CommandIo}), bad usage
 * ({@link UsageError}, exit 2), the common options and the parsing of their values.
 */
import { type ParseArgsConfig, parseArgs } from "node:util";
import { type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import { RunStatus } from "@nexusflow/gen";

/** What a command gets from the process. */
export interface CommandIo {
  /** The environment (NEXUSFLOW_ADDRESS, NEXUSFLOW_TOKEN, NEXUSFLOW_DATA_DIR). */
  env: NodeJS.ProcessEnv;
  /** Aborted on Ctrl-C. */
  signal: AbortSignal;
  /** Writes to standard output. */
  stdout: (text: string) => void;
  /** Writes to standard error. */
  stderr: (text: string) => void;
  /** Colour in the human output. */
  color: boolean;
  /** Directory relative data directories are resolved against (the repository root). */
  root: string;
  /** The working directory: a `.nexusflow` there holds the dev key to use. */
  cwd: string;
}

/** A command that the user called wrongly: exit 2 with the message. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Options of every command that calls the gateway. */
export const COMMON_OPTIONS = {
  address: { type: "string" },
  token: { type: "string" },
  output: { type: "string", short: "o" },
} as const;

/** How a command prints its result: a readable table, or the API's JSON. */
export type Output = "table" | "json";

/** The --output value; table unless json is asked for. */
export function outputOf(value: string | undefined): Output {
  if (value === undefined || value === "table") return "table";
  if (value === "json") return "json";
  throw new UsageError(`--output must be table or json, got ${JSON.stringify(value)}`);
}

/**
 * One line for an error of `parseArgs` on `args`. Node's own messages run over three lines, and
 * call a value that starts with "-" (`--limit -3`) "ambiguous" without saying how to give it.
 */
export function parseArgsErrorText(e: unknown, args: readonly string[] = []): string {
  const message = e instanceof Error ? e.message : String(e);
  const code = (e as { code?: unknown } | undefined)?.code;
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    const ambiguous = /^Option '(--?[\w-]+)' argument is ambiguous/.exec(message);
    if (ambiguous !== null) {
      const typed = ambiguous[1] as string; // as the user wrote it: --limit or -n
      const name = /use '(--[\w-]+)=-XYZ'/.exec(message)?.[1] ?? typed;
      const value = args[args.indexOf(typed) + 1] ?? "-…";
      return `${name}: a value that starts with "-" must be written ${name}=${value}`;
    }
    const missing = /^Option '(?:-\w, )?(--?[\w-]+)[^']*' argument missing/.exec(message);
    if (missing !== null) return `${missing[1]} needs a value`;
  }
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    const unknown = /^Unknown option '([^']*)'/.exec(message);
    if (unknown !== null)
      return `unknown option ${unknown[1]} (an argument that starts with "-" goes after --)`;
  }
  return message.replace(/\s*\n\s*/g, " ").trim();
}

/** Parses `args`, turning parseArgs' errors into {@link UsageError}s of one line. */
export function parse<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (e) {
    throw new UsageError(parseArgsErrorText(e, config.args));
  }
}

/** `list` when it holds exactly the arguments `want` names; a {@link UsageError} otherwise. */
export function positionals(list: readonly string[], want: readonly string[], usage: string): string[] {
  if (want.length === 0 && list.length > 0) {
    throw new UsageError(`${usage}: takes no arguments, got ${JSON.stringify(list)}`);
  }
  if (list.length !== want.length) {
    throw new UsageError(
      `${usage}: expected ${want.map((w) => `<${w}>`).join(" ")}${list.length > want.length ? `, got extra ${JSON.stringify(list.slice(want.length))}` : ""}`,
    );
  }
  return [...list];
}

/** The labels of `--label k=v` options. */
export function parseLabels(values: readonly string[] | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const v of values ?? []) {
    const eq = v.indexOf("=");
    if (eq <= 0) throw new UsageError(`--label expects key=value, got ${JSON.stringify(v)}`);
    labels[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return labels;
}

/** An integer option from `min` to `max`; undefined when not given. */
export function parseCount(
  name: string,
  value: string | undefined,
  min: number,
  max: number,
): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

/** A run status given by name, with or without the `RUN_STATUS_` prefix, in any case. */
export function parseRunStatus(value: string): RunStatus {
  const upper = value.toUpperCase().replace(/^RUN_STATUS_/, "");
  const entry = Object.entries(RunStatus).find(([k, v]) => typeof v === "number" && k === upper);
  if (entry === undefined || entry[1] === RunStatus.UNSPECIFIED) {
    const names = Object.keys(RunStatus).filter((k) => !/^\d+$/.test(k) && k !== "UNSPECIFIED");
    throw new UsageError(`--status must be one of ${names.join(", ")}, got ${JSON.stringify(value)}`);
  }
  return entry[1] as RunStatus;
}

/** Prints `message` as the API's JSON, indented. */
export function printJson<D extends DescMessage>(io: CommandIo, schema: D, message: MessageShape<D>): void {
  io.stdout(`${JSON.stringify(toJson(schema, message), null, 2)}\n`);
}
