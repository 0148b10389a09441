/**
 * The JSON Lines format of task logs (`logs.jsonl` and its chunks): one object per line, the
 * protobuf JSON form of `nexusflow.v1.LogLine` plus the structured `fields` of `ctx.log` lines:
 *
 * ```json
 * {"time":"2026-11-26T10:00:00.123Z","stream":"log","level":"info","text":"charged","attempt":1,"fields":{"amount":12}}
 * {"time":"2026-11-26T10:00:00.456Z","stream":"stdout","level":"","text":"done","attempt":1}
 * ```
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type LogLine, LogLineSchema } from "@nexusflow/gen";

/** One line to encode. */
export interface LogLineInit {
  readonly time: Date;
  /** "stdout", "stderr" or "log". */
  readonly stream: string;
  /** "info", "warn", "error" for "log" lines; "" otherwise. */
  readonly level: string;
  readonly text: string;
  readonly attempt: number;
  readonly fields?: Readonly<Record<string, unknown>> | undefined;
}

/** One line of JSON Lines, newline included. Fields that cannot be serialised are dropped. */
export function encodeLogLine(line: LogLineInit): string {
  const base = {
    time: line.time.toISOString(),
    stream: line.stream,
    level: line.level,
    text: line.text,
    attempt: line.attempt,
  };
  if (line.fields !== undefined && Object.keys(line.fields).length > 0) {
    try {
      return `${JSON.stringify({ ...base, fields: line.fields })}\n`;
    } catch {
      // A cyclic or BigInt field must not lose the line itself.
    }
  }
  return `${JSON.stringify(base)}\n`;
}

function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}

/**
 * Decodes one line of a log file to a LogLine; structured fields are appended to the text as
 * JSON so API clients see them. A line that is not a JSON object comes back as its raw text on
 * the "log" stream, so a damaged file still shows what it holds. Undefined for a blank line.
 */
export function decodeLogLine(text: string, attempt: number): LogLine | undefined {
  if (text.trim() === "") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    return create(LogLineSchema, { stream: "log", level: "warn", text, attempt });
  const o = parsed as Record<string, unknown>;
  const time = new Date(str(o["time"]));
  let body = str(o["text"]);
  const fields = o["fields"];
  if (typeof fields === "object" && fields !== null && Object.keys(fields).length > 0)
    body = `${body} ${JSON.stringify(fields)}`;
  return create(LogLineSchema, {
    ...(Number.isNaN(time.getTime()) ? {} : { time: timestampFromDate(time) }),
    stream: str(o["stream"]),
    level: str(o["level"]),
    text: body,
    attempt: typeof o["attempt"] === "number" && Number.isInteger(o["attempt"]) ? o["attempt"] : attempt,
  });
}

/** Decodes a whole chunk or file (complete lines). */
export function decodeLogLines(text: string, attempt: number): LogLine[] {
  const lines: LogLine[] = [];
  for (const raw of text.split("\n")) {
    const line = decodeLogLine(raw, attempt);
    if (line !== undefined) lines.push(line);
  }
  return lines;
}
