/**
 * REST/JSON transcoding: an HTTP handler (HTTP/1.1 and h2c alike) that serves every RPC annotated
 * with `google.api.http` under its annotated paths (`/v1/...`), built once from the descriptors.
 *
 * A matched request becomes the RPC's request message (see request.ts) and is called through a
 * Connect `Transport`: the gateway passes an in-process transport to its own handlers, so REST
 * calls go through the same guard (token, scopes, stream limits), logging and forwarding
 * (deadline, cancellation, headers) as gRPC, gRPC-Web and Connect calls.
 *
 * - Unary: 200 with the response (or its `response_body` field) in proto3 JSON.
 * - Server streaming: 200 with `application/x-ndjson`, one `{"result": <message>}` line per message
 *   and, if the stream fails after it started, a last `{"error": <google.rpc.Status>}` line (the
 *   framing grpc-gateway uses). The 200 and its headers go out with the first message, or after
 *   `streamHeaderDelayMs` (250 ms) without one, so that a client of a quiet stream sees it is
 *   connected: a failure before either is an ordinary error response, one after is that last line.
 * - Errors: `google.rpc.Status` JSON with the code's HTTP status (status.ts).
 * - Deadline: the `connect-timeout-ms` request header, when sent. A client that disconnects
 *   cancels the call upstream.
 */
import type * as http from "node:http";
import * as http2 from "node:http2";
import {
  type DescMessage,
  type DescMethod,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type JsonValue,
  type MessageShape,
  toJson,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "@nexusflow/common";
import { activeTraceparent } from "@nexusflow/common/telemetry";
import { endToEndHeaders } from "../http/headers.js";
import { buildRequest, invalidArgument } from "./request.js";
import { type RestRoute, matchRoute } from "./routes.js";
import { DETAILS_REGISTRY, httpStatusOf, statusJson } from "./status.js";

type NodeHandler = ReturnType<typeof connectNodeAdapter>;
type NodeRequest = Parameters<NodeHandler>[0];
type NodeResponse = Parameters<NodeHandler>[1];

/** Options of {@link createRestHandler}. */
export interface RestHandlerOptions {
  /** The routes to serve (from `compileRoutes`). */
  routes: readonly RestRoute[];
  /** Where calls go: an in-process transport to the gateway's handlers. */
  transport: Transport;
  /** Largest accepted body, in bytes; larger ones get 413. */
  maxBodyBytes: number;
  /** Logger for failures of the handler itself. */
  log: Logger;
  /**
   * Authenticates and authorizes a call of `method` from its request headers before anything else
   * of the request (query, body) is looked at; rejects with the ConnectError to answer
   * (UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE). The gateway passes its token check.
   * @default undefined (no check here; the transport's handlers may still refuse the call)
   */
  authenticate?: ((method: DescMethod, headers: Headers) => Promise<unknown>) | undefined;
  /**
   * Told of each call answered before it reached the handlers (refused token, unreadable body),
   * with the code it was answered with (metrics).
   */
  onRefused?: ((method: DescMethod, code: Code) => void) | undefined;
  /**
   * How long a stream may wait for its first message before the 200 and headers go out anyway
   * (after that, errors can only be reported in-band), in milliseconds.
   * @default 250
   */
  streamHeaderDelayMs?: number;
}

/** Serves `req` if it is a REST route and returns true; returns false (nothing written) otherwise. */
export type RestHandler = (req: NodeRequest, res: NodeResponse) => boolean;

/** Both response flavours (http and http2 compat) have these members with these shapes. */
function h1(res: NodeResponse): http.ServerResponse {
  return res as unknown as http.ServerResponse;
}

function requestHeaders(req: NodeRequest): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (name.startsWith(":") || value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
  }
  return headers;
}

function sendError(res: NodeResponse, err: ConnectError, hadToken: boolean, httpStatus?: number): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(statusJson(err));
  const headers: Record<string, string | number> = {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  };
  if (err.code === Code.Unauthenticated) {
    headers["www-authenticate"] = hadToken
      ? 'Bearer realm="nexusflow", error="invalid_token"'
      : 'Bearer realm="nexusflow"';
  }
  h1(res).writeHead(httpStatus ?? httpStatusOf(err.code), headers);
  h1(res).end(text);
}

/**
 * Reads the body up to `max` bytes; undefined when empty. Rejects with {@link BodyTooLarge} as soon
 * as the limit is passed, without consuming (or destroying) the rest, so a 413 can still be sent.
 */
function readBody(req: NodeRequest, max: number): Promise<Buffer | undefined> {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > max) return Promise.reject(new BodyTooLarge(max));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = (): void => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > max) {
        cleanup();
        req.pause();
        reject(new BodyTooLarge(max));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(size === 0 ? undefined : Buffer.concat(chunks, size));
    };
    const onError = (e: Error): void => {
      cleanup();
      reject(new ConnectError("the request body could not be read", Code.Canceled, undefined, undefined, e));
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
  });
}

/** The body passed the limit (a plain Error: ConnectError's instanceof matches any ConnectError). */
class BodyTooLarge extends Error {
  override name = "BodyTooLarge";
  constructor(readonly max: number) {
    super(`the request body exceeds the limit of ${max} bytes`);
  }
}

/**
 * Whether a body sent with `contentType` is read as JSON: JSON types (`application/json`,
 * `application/*+json`), and the types clients send JSON text with by default: none, curl -d's
 * `application/x-www-form-urlencoded` and fetch's `text/plain`.
 */
function isJsonContentType(contentType: string | undefined): boolean {
  const media = (contentType ?? "").split(";", 1)[0]?.trim().toLowerCase() ?? "";
  return (
    media === "" ||
    media === "application/x-www-form-urlencoded" ||
    media === "text/plain" ||
    /^[a-z0-9!#$&^_.+-]+\/(?:[a-z0-9!#$&^_.-]+\+)?json$/.test(media)
  );
}

/** Deepest nesting of arrays and objects a body may have (protobuf's own decoding limit). */
const MAX_JSON_DEPTH = 100;

/** Whether `value` nests arrays and objects deeper than `max` (iterative: no stack to overflow). */
function nestedDeeperThan(value: JsonValue, max: number): boolean {
  const stack: [JsonValue, number][] = [[value, 1]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [v, depth] = top;
    if (typeof v !== "object" || v === null) continue;
    if (depth > max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
  return false;
}

/** The body is of a type that is not JSON: 415 (a plain Error, see {@link BodyTooLarge}). */
class UnsupportedMediaType extends Error {
  override name = "UnsupportedMediaType";
  constructor(readonly contentType: string) {
    super(`${JSON.stringify(contentType)} is not supported: send the body as JSON (application/json)`);
  }
}

function parseJsonBody(bytes: Buffer | undefined, contentType: string | undefined): JsonValue | undefined {
  if (bytes === undefined) return undefined;
  if (!isJsonContentType(contentType)) throw new UnsupportedMediaType(contentType ?? "");
  let json: JsonValue;
  try {
    json = JSON.parse(bytes.toString("utf8")) as JsonValue;
  } catch (e) {
    throw invalidArgument([{ field: "body", description: `not JSON: ${(e as Error).message}` }]);
  }
  if (nestedDeeperThan(json, MAX_JSON_DEPTH)) {
    throw invalidArgument([
      { field: "body", description: `nested deeper than ${MAX_JSON_DEPTH} levels of arrays and objects` },
    ]);
  }
  return json;
}

/**
 * Reads and drops what is left of a request body that will not be used (the call was answered
 * before it was read), so that an HTTP/1.1 connection stays usable; a body longer than `max`
 * ends the connection (HTTP/1.1) or the stream (HTTP/2) instead of being read to its end.
 */
function discardBody(req: NodeRequest, max: number): void {
  if (req.readableEnded) return;
  let size = 0;
  const onData = (chunk: Buffer): void => {
    size += chunk.length;
    if (size <= max) return;
    req.off("data", onData);
    if ("stream" in req) req.stream.close(http2.constants.NGHTTP2_CANCEL);
    else req.socket.destroy();
  };
  req.on("data", onData);
  req.on("error", () => undefined);
  req.resume();
}

function timeoutOf(req: NodeRequest): number | undefined {
  const raw = req.headers["connect-timeout-ms"];
  if (typeof raw !== "string") return undefined;
  if (!/^\d{1,10}$/.test(raw)) {
    throw invalidArgument([
      { field: "connect-timeout-ms", description: "expected milliseconds as an integer" },
    ]);
  }
  const ms = Number(raw);
  if (ms > MAX_TIMEOUT_MS) {
    throw invalidArgument([{ field: "connect-timeout-ms", description: `at most ${MAX_TIMEOUT_MS}` }]);
  }
  return ms;
}

function responseJson(route: RestRoute, message: MessageShape<DescMessage>): JsonValue {
  const json = toJson(route.method.output, message, { registry: DETAILS_REGISTRY });
  if (route.responseBody === "") return json;
  const field = route.method.output.fields.find((f) => f.name === route.responseBody);
  const obj = json as Record<string, JsonValue>;
  return field === undefined ? null : (obj[field.jsonName] ?? null);
}

function copyResponseHeaders(from: Headers, res: NodeResponse): void {
  endToEndHeaders(from).forEach((value, key) => h1(res).setHeader(key, value));
}

/** Writes `text`, waiting for the buffer to drain when it is full. */
function write(res: NodeResponse, text: string): Promise<void> {
  return new Promise((resolve) => {
    if (h1(res).write(text)) resolve();
    else {
      const done = (): void => {
        res.off("drain", done);
        res.off("close", done);
        resolve();
      };
      res.on("drain", done);
      res.on("close", done);
    }
  });
}

/**
 * The path and query of a request target, split by hand: `new URL` throws for some targets a client
 * may send (`//[`), which must be a 404 like any other path that is no route.
 */
function splitTarget(target: string): { pathname: string; searchParams: URLSearchParams } {
  const q = target.indexOf("?");
  return q === -1
    ? { pathname: target, searchParams: new URLSearchParams() }
    : { pathname: target.slice(0, q), searchParams: new URLSearchParams(target.slice(q + 1)) };
}

/**
 * The longest deadline a call may have, in milliseconds (about 24.8 days): Node's timers cannot
 * wait longer, and a longer one would expire at once.
 */
export const MAX_TIMEOUT_MS = 2_147_483_647;

/** Creates the REST handler. */
export function createRestHandler(options: RestHandlerOptions): RestHandler {
  const { routes, transport, maxBodyBytes, log, authenticate, onRefused } = options;
  const headerDelayMs = options.streamHeaderDelayMs ?? 250;

  async function serve(
    req: NodeRequest,
    res: NodeResponse,
    route: RestRoute,
    params: ReadonlyMap<string, string>,
    query: URLSearchParams,
  ): Promise<void> {
    const headers = requestHeaders(req);
    const hadToken = headers.has("authorization");
    const abort = new AbortController();
    res.once("close", () => {
      if (!res.writableEnded) abort.abort(new ConnectError("the client closed the request", Code.Canceled));
    });
    let message: MessageShape<DescMessage>;
    let timeoutMs: number | undefined;
    let bodyRead = false;
    try {
      // Who calls, and whether they may, before anything the request carries is looked at: a
      // caller without a token or scope hears so, whatever its body or query holds.
      await authenticate?.(route.method, headers);
      timeoutMs = timeoutOf(req);
      let body: JsonValue | undefined;
      if (route.body !== "") {
        bodyRead = true;
        body = parseJsonBody(await readBody(req, maxBodyBytes), req.headers["content-type"]);
      }
      message = buildRequest(route, params, query, body);
    } catch (e) {
      if (!bodyRead) discardBody(req, maxBodyBytes);
      onRefused?.(
        route.method,
        e instanceof UnsupportedMediaType
          ? Code.InvalidArgument
          : e instanceof BodyTooLarge
            ? Code.ResourceExhausted
            : ConnectError.from(e).code,
      );
      if (e instanceof UnsupportedMediaType) {
        sendError(res, invalidArgument([{ field: "content-type", description: e.message }]), hadToken, 415);
        return;
      }
      if (e instanceof BodyTooLarge) {
        if (!("stream" in req)) h1(res).setHeader("connection", "close");
        sendError(res, new ConnectError(e.message, Code.ResourceExhausted), hadToken, 413);
        // Stop reading what is left of an oversized body.
        res.once("finish", () => {
          if ("stream" in req) req.stream.close(http2.constants.NGHTTP2_CANCEL);
          else req.socket.destroy();
        });
        return;
      }
      sendError(res, ConnectError.from(e), hadToken);
      return;
    }
    const forward = endToEndHeaders(headers);
    // Tracing on: the scheduler's span becomes a child of this call's HTTP span, not a sibling.
    const traceparent = activeTraceparent();
    if (traceparent !== undefined) forward.set("traceparent", traceparent);

    if (route.method.methodKind === "unary") {
      try {
        const result = await transport.unary(
          route.method as DescMethodUnary<DescMessage, DescMessage>,
          abort.signal,
          timeoutMs,
          forward,
          message,
        );
        const text = JSON.stringify(responseJson(route, result.message));
        copyResponseHeaders(result.header, res);
        copyResponseHeaders(result.trailer, res);
        h1(res).writeHead(200, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(text),
        });
        h1(res).end(text);
      } catch (e) {
        sendError(res, ConnectError.from(e), hadToken);
      }
      return;
    }

    // Server streaming.
    let iterator: AsyncIterator<MessageShape<DescMessage>> | undefined;
    const startStream = (header?: Headers): void => {
      if (res.headersSent || abort.signal.aborted) return;
      if (header !== undefined) copyResponseHeaders(header, res);
      h1(res).writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
      // Headers out now: a client of a quiet stream (logs --follow) sees that it is connected.
      // (HTTP/2's writeHead sends them at once; only HTTP/1.1 responses buffer them.)
      if (!("stream" in res)) h1(res).flushHeaders();
    };
    // Armed before the call: transport.stream() itself resolves only with the first message.
    const headTimer = setTimeout(() => startStream(), headerDelayMs);
    try {
      const result = await transport.stream(
        route.method as DescMethodServerStreaming<DescMessage, DescMessage>,
        abort.signal,
        timeoutMs,
        forward,
        createAsyncIterable([message]),
      );
      iterator = result.message[Symbol.asyncIterator]();
      let next = iterator.next();
      for (;;) {
        const r = await next;
        clearTimeout(headTimer);
        startStream(result.header);
        if (r.done === true) break;
        await write(res, `${JSON.stringify({ result: responseJson(route, r.value) })}\n`);
        if (abort.signal.aborted) break;
        next = iterator.next();
      }
      h1(res).end();
    } catch (e) {
      const err = ConnectError.from(e);
      if (abort.signal.aborted && err.code === Code.Canceled) {
        res.end();
        return;
      }
      if (!res.headersSent) {
        sendError(res, err, hadToken);
        return;
      }
      h1(res).end(`${JSON.stringify({ error: statusJson(err) })}\n`);
    } finally {
      clearTimeout(headTimer);
      if (abort.signal.aborted) await iterator?.return?.().catch(() => undefined);
    }
  }

  return (req, res) => {
    const url = splitTarget(req.url ?? "/");
    const found = matchRoute(routes, req.method ?? "GET", url.pathname);
    if (found.kind === "none") return false;
    if (found.kind === "method-not-allowed") {
      h1(res).setHeader("allow", found.allowed.join(", "));
      sendError(
        res,
        new ConnectError(`${req.method ?? "?"} is not allowed for ${url.pathname}`, Code.Unimplemented),
        false,
        405,
      );
      return true;
    }
    serve(req, res, found.route, found.params, url.searchParams).catch((e: unknown) => {
      log.error({ err: e, path: url.pathname }, "REST handler failed");
      if (!res.headersSent) sendError(res, new ConnectError("internal error", Code.Internal), false);
      else res.end();
    });
    return true;
  };
}
