/**
 * Turns the services' pino JSON lines into compact terminal lines:
 * `12:00:01.234 INFO  [scheduler] run started runId=… workflow=order-pipeline`.
 */
import type { Style } from "./style.js";

/** A parsed pino record (any JSON object). */
export type LogRecord = Record<string, unknown>;

/** Parses one line of child output as a pino record; undefined for anything that is not a JSON object. */
export function parseLogLine(line: string): LogRecord | undefined {
  const trimmed = line.trim();
  if (!trimmed.startsWith("{")) return undefined;
  try {
    const value: unknown = JSON.parse(trimmed);
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? (value as LogRecord)
      : undefined;
  } catch {
    return undefined;
  }
}

const LEVELS: ReadonlyArray<readonly [number, string]> = [
  [60, "FATAL"],
  [50, "ERROR"],
  [40, "WARN"],
  [30, "INFO"],
  [20, "DEBUG"],
  [10, "TRACE"],
];

/** Fields pino adds to every line that the compact form shows elsewhere or leaves out. */
const HIDDEN = new Set(["level", "time", "msg", "pid", "hostname", "name", "service", "v"]);
const MAX_VALUE_CHARS = 300;

function levelName(level: unknown): string {
  if (typeof level === "string") return level.toUpperCase();
  if (typeof level !== "number") return "INFO";
  return LEVELS.find(([n]) => level >= n)?.[1] ?? "TRACE";
}

function colourLevel(name: string, style: Style): string {
  const padded = name.padEnd(5);
  switch (name) {
    case "FATAL":
      return style.magenta(padded);
    case "ERROR":
      return style.red(padded);
    case "WARN":
      return style.yellow(padded);
    case "INFO":
      return style.green(padded);
    default:
      return style.gray(padded);
  }
}

/** `HH:MM:SS.mmm` in local time. */
export function clock(time: Date): string {
  const two = (n: number): string => String(n).padStart(2, "0");
  return `${two(time.getHours())}:${two(time.getMinutes())}:${two(time.getSeconds())}.${String(time.getMilliseconds()).padStart(3, "0")}`;
}

function truncate(text: string): string {
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS)}…` : text;
}

function formatValue(value: unknown): string {
  if (typeof value === "string") return truncate(/^[^\s"=]+$/.test(value) ? value : JSON.stringify(value));
  return truncate(JSON.stringify(value) ?? String(value));
}

function formatError(err: unknown): { summary: string; stack: string | undefined } {
  if (typeof err !== "object" || err === null) return { summary: formatValue(err), stack: undefined };
  const e = err as Record<string, unknown>;
  const type = typeof e["type"] === "string" ? e["type"] : "Error";
  const message = typeof e["message"] === "string" ? e["message"] : "";
  return {
    summary: JSON.stringify(`${type}: ${message}`),
    stack: typeof e["stack"] === "string" ? e["stack"] : undefined,
  };
}

/** Formats one pino record from `source` (e.g. "executor-1"); errors at level >= 50 get their stack below. */
export function formatLogRecord(source: string, record: LogRecord, style: Style): string {
  const time = typeof record["time"] === "number" ? new Date(record["time"]) : new Date();
  const level = levelName(record["level"]);
  const msg = typeof record["msg"] === "string" ? record["msg"] : "";
  const fields: string[] = [];
  let stack: string | undefined;
  for (const [key, value] of Object.entries(record)) {
    if (HIDDEN.has(key) || value === undefined) continue;
    if (key === "err" || key === "error") {
      const formatted = formatError(value);
      fields.push(`${style.red(key)}=${formatted.summary}`);
      stack = formatted.stack;
      continue;
    }
    fields.push(`${style.gray(`${key}=`)}${formatValue(value)}`);
  }
  const head = `${style.gray(clock(time))} ${colourLevel(level, style)} ${style.cyan(`[${source}]`)} ${msg}`;
  const line = fields.length > 0 ? `${head} ${fields.join(" ")}` : head;
  const numeric = typeof record["level"] === "number" ? record["level"] : 30;
  if (stack === undefined || numeric < 50) return line;
  const indented = stack
    .split("\n")
    .slice(1)
    .map((l) => style.gray(`    ${l.trim()}`));
  return [line, ...indented].join("\n");
}

/** Formats any line of child output: pino records compactly, other text as is behind the source tag. */
export function formatChildLine(
  source: string,
  line: string,
  stream: "stdout" | "stderr",
  style: Style,
): string {
  const record = parseLogLine(line);
  if (record !== undefined) return formatLogRecord(source, record, style);
  const tag = style.cyan(`[${source}]`);
  return stream === "stderr" ? `${tag} ${style.yellow(line)}` : `${tag} ${line}`;
}
