/**
 * `http`: makes one HTTP request with the global fetch.
 *
 * Input:
 * ```ts
 * {
 *   method?: string;                  // default "GET"; upper-cased
 *   url: string;                      // http: or https: only, no user:password@ (use a header)
 *   headers?: Record<string, string>;
 *   body?: unknown;                   // string: sent as-is; anything else: JSON, with
 *                                     // content-type application/json unless set
 *   timeout?: string;                 // whole request incl. body, default "30s"
 * }
 * ```
 * Output: `{ status: number, headers: Record<string, string>, body: unknown }`; header names are
 * lower-case; the body is parsed JSON when the response content-type is JSON, else UTF-8 text.
 *
 * Errors: 2xx succeeds. 408, 429 and 5xx are retryable `HTTP_<status>` (Retry-After, in seconds
 * or as a date, becomes `retryAfterMs`; on a 429 or 503 also `pauseKeyUntil`, which pauses the
 * keys of the step's rate limits until then); other statuses are terminal `HTTP_<status>`. Both carry
 * `details: { status, headers, body }` with the body text cut to 4 KiB. Network failures are
 * retryable NETWORK_ERROR, the timeout is retryable TIMEOUT, a body over the size cap is terminal
 * RESPONSE_TOO_LARGE, a 2xx body that is not the JSON it claims is terminal INVALID_RESPONSE,
 * bad input is INVALID_INPUT (so is a request fetch refuses to make as given), and an abort of
 * `ctx.signal` rejects with `cancellationError`. Headers fetch cannot send (`Keep-Alive`,
 * `Transfer-Encoding`, `Upgrade`, `Expect`, a `Connection` other than `close` or `keep-alive`, a
 * `Content-Length` that is not the body's) are refused as INVALID_INPUT naming them
 * (`headers.<name>`); a `Content-Length` that is the body's is left to fetch, which sends it.
 */
import { formatDuration } from "@nexusflow/common/duration";
import { TaskErrorType, httpStatusErrorType } from "@nexusflow/common/task-error-types";
import { MAX_RETRY_AFTER_MS, TaskError, cancellationError } from "./task-error.js";
import { startTimer } from "./timers.js";
import type { TaskHandler } from "./types.js";
import {
  durationField,
  expectObject,
  invalidInput,
  kindOf,
  optionalString,
  optionalStringRecord,
  requiredString,
} from "./validate.js";

/** Options of {@link createHttpHandler}. */
export interface HttpHandlerOptions {
  /**
   * Largest response body read, in bytes; a larger one fails with RESPONSE_TOO_LARGE.
   * @default 10 MiB
   */
  maxResponseBytes?: number;
}

/** Input of the `http` handler, as written in a workflow definition. */
export interface HttpInput {
  /** HTTP method. @default "GET" */
  method?: string;
  /** Absolute http: or https: URL. */
  url: string;
  /** Request headers. */
  headers?: Record<string, string>;
  /** A string is sent as-is; any other value as JSON. */
  body?: unknown;
  /** Duration for the whole exchange, body included. @default "30s" */
  timeout?: string;
}

/** {@link HttpInput} after validation. */
interface ParsedHttpInput {
  method: string;
  url: URL;
  headers: Headers;
  body: string | undefined;
  timeoutMs: number;
}

/** Output of the `http` handler. */
export interface HttpOutput {
  /** Response status code (2xx). */
  status: number;
  /** Response headers, lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** Parsed JSON for JSON content types, otherwise the body as text. */
  body: unknown;
}

const DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024;
const DEFAULT_TIMEOUT = "30s";
const MAX_DETAIL_BODY_CHARS = 4096;
const INPUT_FIELDS = ["method", "url", "headers", "body", "timeout"] as const;
const METHOD_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const FORBIDDEN_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);
const JSON_CONTENT_TYPE = /^(?:application|text)\/(?:[\w.+-]*\+)?json\s*(?:;|$)/i;
/**
 * Request headers fetch (undici) does not send as given: it refuses them at every attempt (which
 * would be retried as a network error) or replaces them. Why each one, by lower-case name.
 */
const UNSENDABLE_HEADERS: ReadonlyMap<string, string> = new Map([
  ["keep-alive", "the executor's HTTP client manages its connections and cannot send it"],
  ["transfer-encoding", "the executor's HTTP client frames the body itself and cannot send it"],
  ["upgrade", "protocol upgrades are not supported"],
  ["expect", "the executor's HTTP client does not support Expect (100-continue)"],
]);
/** `Connection` values the HTTP client sends; it replaces any other. */
const CONNECTION_VALUES = new Set(["close", "keep-alive"]);
/**
 * Codes of undici errors (the `cause` of fetch's "fetch failed") that say the request cannot be
 * made as given: retrying it changes nothing.
 */
const REQUEST_REFUSED_CODES = new Set(["UND_ERR_INVALID_ARG", "UND_ERR_NOT_SUPPORTED"]);

/** Creates the `http` handler. */
export function createHttpHandler(options: HttpHandlerOptions = {}): TaskHandler<unknown, HttpOutput> {
  const maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  return async (rawInput, ctx) => {
    const input = parseHttpInput(rawInput);
    if (ctx.signal.aborted) throw cancellationError(ctx.signal);
    // Messages name the request without its query string, which often carries tokens.
    const target = `${input.method} ${input.url.origin}${input.url.pathname}`;
    const timeout = new AbortController();
    const stopTimer = startTimer(input.timeoutMs, () => timeout.abort());
    const signal = AbortSignal.any([ctx.signal, timeout.signal]);
    // Abort wins over whatever error fetch reports for it; the reason is told apart by signal, not text.
    const failure = (e: unknown, fallback: () => TaskError): TaskError => {
      if (ctx.signal.aborted) return cancellationError(ctx.signal);
      if (timeout.signal.aborted) {
        return TaskError.retryable(
          TaskErrorType.TIMEOUT,
          `${target} timed out after ${formatDuration(input.timeoutMs)}`,
          { cause: e },
        );
      }
      return fallback();
    };
    try {
      let response: Response;
      try {
        response = await fetch(input.url, {
          method: input.method,
          headers: input.headers,
          ...(input.body === undefined ? {} : { body: input.body }),
          signal,
        });
      } catch (e) {
        throw failure(e, () =>
          REQUEST_REFUSED_CODES.has(causeCode(e) ?? "")
            ? TaskError.terminal(
                TaskErrorType.INVALID_INPUT,
                `${target} cannot be sent: ${networkReason(e)}`,
                { cause: e },
              )
            : TaskError.retryable(TaskErrorType.NETWORK_ERROR, `${target} failed: ${networkReason(e)}`, {
                cause: e,
              }),
        );
      }
      const headers = headerRecord(response.headers);
      let text: string;
      try {
        text = await readBody(response, maxResponseBytes);
      } catch (e) {
        throw failure(e, () =>
          e instanceof TaskError
            ? e
            : TaskError.retryable(
                TaskErrorType.NETWORK_ERROR,
                `${target}: reading the response failed: ${networkReason(e)}`,
                { cause: e },
              ),
        );
      }
      const isJson = JSON_CONTENT_TYPE.test(headers["content-type"] ?? "");
      const { status } = response;
      if (status >= 200 && status < 300) {
        return { status, headers, body: isJson ? parseJsonBody(text, target, status) : text };
      }
      throw statusError(status, response.statusText, headers, text, target);
    } finally {
      stopTimer();
    }
  };
}

/** Validates and normalises the handler's input. */
function parseHttpInput(raw: unknown): ParsedHttpInput {
  const record = expectObject(raw, INPUT_FIELDS);
  const method = (optionalString(record, "method") ?? "GET").toUpperCase();
  if (!METHOD_TOKEN.test(method))
    throw invalidInput("method", `${JSON.stringify(method)} is not an HTTP method`);
  if (FORBIDDEN_METHODS.has(method)) throw invalidInput("method", `${method} is not supported`);

  const urlText = requiredString(record, "url");
  let url: URL;
  try {
    url = new URL(urlText);
  } catch {
    throw invalidInput("url", `${JSON.stringify(urlText)} is not an absolute URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw invalidInput("url", `only http: and https: URLs are supported, got ${url.protocol}`);
  }
  if (url.username !== "" || url.password !== "") {
    throw invalidInput(
      "url",
      "credentials in the URL are not supported; send an Authorization header instead",
    );
  }

  const headerFields = optionalStringRecord(record, "headers");
  for (const [name, value] of Object.entries(headerFields ?? {})) {
    const lower = name.trim().toLowerCase();
    const why = UNSENDABLE_HEADERS.get(lower);
    if (why !== undefined) throw invalidInput(`headers.${name}`, `cannot be set: ${why}`);
    if (lower === "connection" && !CONNECTION_VALUES.has(value.trim().toLowerCase()))
      throw invalidInput(
        `headers.${name}`,
        `${JSON.stringify(value)} cannot be sent: the executor's HTTP client sends only "close" or "keep-alive"`,
      );
  }
  let headers: Headers;
  try {
    headers = new Headers(headerFields);
  } catch (e) {
    if (e instanceof TaskError) throw e;
    throw invalidInput("headers", e instanceof Error ? e.message : String(e));
  }

  let body: string | undefined;
  const rawBody = record["body"];
  if (rawBody !== undefined) {
    if (method === "GET" || method === "HEAD") throw invalidInput("body", `not allowed with ${method}`);
    if (typeof rawBody === "string") {
      body = rawBody;
    } else {
      const json = JSON.stringify(rawBody);
      if (typeof json !== "string") throw invalidInput("body", `cannot be sent as JSON (${kindOf(rawBody)})`);
      body = json;
      if (!headers.has("content-type")) headers.set("content-type", "application/json");
    }
  }
  // fetch computes it from the body (and refuses any other): a copy of curl's is taken as it is.
  const length = headers.get("content-length");
  if (length !== null) {
    const bytes = Buffer.byteLength(body ?? "");
    if (length.trim() !== String(bytes)) {
      const name = Object.keys(headerFields ?? {}).find((k) => k.trim().toLowerCase() === "content-length");
      throw invalidInput(
        `headers.${name ?? "content-length"}`,
        `${JSON.stringify(length)} is not the body's length (${bytes} bytes); leave it out, it is computed from the body`,
      );
    }
    headers.delete("content-length");
  }

  return { method, url, headers, body, timeoutMs: durationField(record, "timeout", DEFAULT_TIMEOUT) };
}

/** Reads the whole body as UTF-8, refusing more than `maxBytes`. */
async function readBody(response: Response, maxBytes: number): Promise<string> {
  const tooLarge = (): TaskError =>
    TaskError.terminal(TaskErrorType.RESPONSE_TOO_LARGE, `response body is larger than ${maxBytes} bytes`, {
      details: { status: response.status, maxBytes },
    });
  const declared = Number(response.headers.get("content-length") ?? Number.NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw tooLarge();
  }
  if (response.body === null) return "";
  const reader = response.body.getReader() as ReadableStreamDefaultReader<Uint8Array>;
  const decoder = new TextDecoder();
  let size = 0;
  let text = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge();
    }
    text += decoder.decode(value, { stream: true });
  }
  return text + decoder.decode();
}

function parseJsonBody(text: string, target: string, status: number): unknown {
  if (text.trim() === "") return null;
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw TaskError.terminal(
      TaskErrorType.INVALID_RESPONSE,
      `${target} returned ${status} with a JSON content-type but the body is not JSON`,
      {
        cause: e,
        details: { status, body: cut(text) },
      },
    );
  }
}

function statusError(
  status: number,
  statusText: string,
  headers: Record<string, string>,
  text: string,
  target: string,
): TaskError {
  const type = httpStatusErrorType(status);
  const message = `${target} returned ${status}${statusText ? ` ${statusText}` : ""}`;
  const details = { status, headers, body: cut(text) };
  if (status === 408 || status === 429 || status >= 500) {
    const retryAfterMs = parseRetryAfter(headers["retry-after"]);
    // A 429 or 503 with Retry-After also pauses the keys of the step's rate limits until then,
    // so that no other task of those buckets calls the partner before it asked.
    const pauseKeyUntil =
      (status === 429 || status === 503) && retryAfterMs !== undefined
        ? new Date(Date.now() + retryAfterMs)
        : undefined;
    return TaskError.retryable(type, message, { details, retryAfterMs, pauseKeyUntil });
  }
  return TaskError.terminal(type, message, { details });
}

/** Retry-After as delay-seconds or an HTTP date, in milliseconds; undefined when absent or invalid. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  // At most MAX_RETRY_AFTER_MS: a delay of 10^20 s would make the key's pause an invalid Date.
  if (/^\d+$/.test(trimmed)) return Math.min(Number(trimmed) * 1000, MAX_RETRY_AFTER_MS);
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.min(Math.max(0, at - now), MAX_RETRY_AFTER_MS);
}

function headerRecord(headers: Headers): Record<string, string> {
  const record: Record<string, string> = {};
  for (const [name, value] of headers) {
    const previous = record[name];
    record[name] = previous === undefined ? value : `${previous}, ${value}`;
  }
  return record;
}

/** The `code` of the `cause` of a fetch failure (undici's error), if any. */
function causeCode(e: unknown): string | undefined {
  const cause = e instanceof Error ? e.cause : undefined;
  const code = cause instanceof Error ? (cause as { code?: unknown }).code : undefined;
  return typeof code === "string" ? code : undefined;
}

/** fetch reports "fetch failed" and hides the useful part (ECONNREFUSED, ENOTFOUND) in `cause`. */
function networkReason(e: unknown): string {
  const cause = e instanceof Error ? e.cause : undefined;
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === "string" && !cause.message.includes(code)
      ? `${code}: ${cause.message}`
      : cause.message;
  }
  return e instanceof Error ? e.message : String(e);
}

function cut(text: string): string {
  return text.length > MAX_DETAIL_BODY_CHARS ? `${text.slice(0, MAX_DETAIL_BODY_CHARS)}…` : text;
}
