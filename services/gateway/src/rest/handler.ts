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
 *   framing grpc-gateway uses). A failure before the first message is an ordinary error response.
 * - Errors: `google.rpc.Status` JSON with the code's HTTP status (status.ts).
 * - Deadline: the `connect-timeout-ms` request header, when sent. A client that disconnects
 *   cancels the call upstream.
 */
import type * as http from "node:http";
import * as http2 from "node:http2";
import {
  type DescMessage,
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
import { endToEndHeaders } from "../proxy.js";
import { buildRequest, invalidArgument } from "./request.js";
import { type RestRoute, matchRoute } from "./routes.js";
import { httpStatusOf, statusJson } from "./status.js";

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

function parseJsonBody(bytes: Buffer | undefined, contentType: string | undefined): JsonValue | undefined {
  if (bytes === undefined) return undefined;
  if (contentType !== undefined && contentType !== "" && !/[/+]json\b/i.test(contentType)) {
    throw invalidArgument([
      { field: "content-type", description: `expected application/json, got ${JSON.stringify(contentType)}` },
    ]);
  }
  try {
    return JSON.parse(bytes.toString("utf8")) as JsonValue;
  } catch (e) {
    throw invalidArgument([{ field: "body", description: `not JSON: ${(e as Error).message}` }]);
  }
}

function timeoutOf(req: NodeRequest): number | undefined {
  const raw = req.headers["connect-timeout-ms"];
  if (typeof raw !== "string") return undefined;
  if (!/^\d{1,10}$/.test(raw)) {
    throw invalidArgument([
      { field: "connect-timeout-ms", description: "expected milliseconds as an integer" },
    ]);
  }
  return Number(raw);
}

function responseJson(route: RestRoute, message: MessageShape<DescMessage>): JsonValue {
  const json = toJson(route.method.output, message);
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

/** Creates the REST handler. */
export function createRestHandler(options: RestHandlerOptions): RestHandler {
  const { routes, transport, maxBodyBytes, log } = options;
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
      if (!res.writableFinished)
        abort.abort(new ConnectError("the client closed the request", Code.Canceled));
    });
    let message: MessageShape<DescMessage>;
    let timeoutMs: number | undefined;
    try {
      timeoutMs = timeoutOf(req);
      const body =
        route.body === ""
          ? undefined
          : parseJsonBody(await readBody(req, maxBodyBytes), req.headers["content-type"]);
      message = buildRequest(route, params, query, body);
    } catch (e) {
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
    try {
      const result = await transport.stream(
        route.method as DescMethodServerStreaming<DescMessage, DescMessage>,
        abort.signal,
        timeoutMs,
        forward,
        createAsyncIterable([message]),
      );
      iterator = result.message[Symbol.asyncIterator]();
      const startStream = (): void => {
        copyResponseHeaders(result.header, res);
        h1(res).writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
        // Headers out now: a client of a quiet stream (logs --follow) sees that it is connected.
        // (HTTP/2's writeHead sends them at once; only HTTP/1.1 responses buffer them.)
        if (!("stream" in res)) h1(res).flushHeaders();
      };
      let next = iterator.next();
      let timer: NodeJS.Timeout | undefined;
      const early = await Promise.race([
        next.then((r) => ({ kind: "message" as const, r })),
        new Promise<{ kind: "delay" }>(
          (resolve) => (timer = setTimeout(() => resolve({ kind: "delay" }), headerDelayMs)),
        ),
      ]);
      clearTimeout(timer);
      if (early.kind === "delay") startStream();
      for (;;) {
        const r = await next;
        if (!res.headersSent) startStream();
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
      if (abort.signal.aborted) await iterator?.return?.().catch(() => undefined);
    }
  }

  return (req, res) => {
    const url = new URL(req.url ?? "/", "http://gateway");
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
