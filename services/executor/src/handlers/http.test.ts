import assert from "node:assert/strict";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { TaskError } from "./task-error.js";
import { createHttpHandler, parseRetryAfter } from "./http.js";
import { MAX_RETRY_AFTER_MS } from "./task-error.js";
import { createTestContext, waitFor } from "./test-context.js";

type Route = (req: IncomingMessage, body: string, res: ServerResponse) => void;

const routes: Record<string, Route> = {
  "/echo": (req, body, res) => {
    res.writeHead(200, { "content-type": "application/json; charset=utf-8", "x-echo": "yes" });
    res.end(
      JSON.stringify({
        method: req.method,
        contentType: req.headers["content-type"] ?? null,
        auth: req.headers["authorization"] ?? null,
        body,
      }),
    );
  },
  "/text": (_req, _body, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("héllo");
  },
  "/missing": (_req, _body, res) => {
    res.writeHead(404, { "content-type": "application/json" });
    res.end('{"error":"no such thing"}');
  },
  "/unavailable": (_req, _body, res) => {
    res.writeHead(503, { "retry-after": "7" });
    res.end("try later");
  },
  "/big": (_req, _body, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    // Chunked, so the size cap is enforced while streaming, not from content-length.
    for (let i = 0; i < 8; i++) res.write("x".repeat(512));
    res.end();
  },
  "/bad-json": (_req, _body, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end("<html>");
  },
  "/hang": () => {
    // Never answers; the client's timeout or abort must end the request.
  },
};

let server: Server;
let base: string;
let hangingRequests = 0;

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const path = new URL(req.url ?? "/", "http://x").pathname;
      if (path === "/hang") hangingRequests++;
      const route = routes[path];
      if (route === undefined) {
        res.writeHead(500).end();
        return;
      }
      route(req, Buffer.concat(chunks).toString("utf8"), res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve, reject) => server.close((e) => (e ? reject(e) : resolve())));
});

const http = createHttpHandler({ maxResponseBytes: 2048 });

function isTaskError(type: string, retryable: boolean, extra: (e: TaskError) => boolean = () => true) {
  return (e: unknown) => {
    assert.ok(e instanceof TaskError, `expected a TaskError, got ${String(e)}`);
    assert.equal(e.type, type, e.message);
    assert.equal(e.retryable, retryable);
    return extra(e);
  };
}

describe("http handler", () => {
  it("sends an object body as JSON and parses a JSON response", async () => {
    const { ctx } = createTestContext();
    const out = await http(
      { method: "post", url: `${base}/echo`, headers: { authorization: "Bearer t" }, body: { n: 1, s: "ü" } },
      ctx,
    );
    assert.equal(out.status, 200);
    assert.equal(out.headers["x-echo"], "yes");
    assert.deepEqual(out.body, {
      method: "POST",
      contentType: "application/json",
      auth: "Bearer t",
      body: '{"n":1,"s":"ü"}',
    });
  });

  it("sends a string body as is and keeps a content-type the user set", async () => {
    const { ctx } = createTestContext();
    const out = await http(
      { method: "PUT", url: `${base}/echo`, headers: { "Content-Type": "text/csv" }, body: "a,b" },
      ctx,
    );
    assert.deepEqual(out.body, { method: "PUT", contentType: "text/csv", auth: null, body: "a,b" });
    const plain = await http({ method: "PUT", url: `${base}/echo`, body: "raw" }, ctx);
    assert.equal((plain.body as { contentType: string }).contentType, "text/plain;charset=UTF-8");
  });

  it("returns a non-JSON body as text", async () => {
    const { ctx } = createTestContext();
    const out = await http({ url: `${base}/text` }, ctx);
    assert.deepEqual([out.status, out.body], [200, "héllo"]);
  });

  it("fails terminally on a 404, with the response in the details", async () => {
    const { ctx } = createTestContext();
    await assert.rejects(
      Promise.resolve(http({ url: `${base}/missing?token=secret` }, ctx)),
      isTaskError("HTTP_404", false, (e) => {
        assert.match(e.message, /^GET http:\/\/127\.0\.0\.1:\d+\/missing returned 404/);
        assert.doesNotMatch(e.message, /secret/);
        assert.deepEqual((e.details as { status: number; body: string }).body, '{"error":"no such thing"}');
        return true;
      }),
    );
  });

  it("fails retryably on a 503 and honours Retry-After, pausing the step's rate limit keys until then", async () => {
    const { ctx } = createTestContext();
    const before = Date.now();
    await assert.rejects(
      Promise.resolve(http({ url: `${base}/unavailable` }, ctx)),
      isTaskError(
        "HTTP_503",
        true,
        (e) =>
          e.retryAfterMs === 7000 &&
          e.pauseKeyUntil !== undefined &&
          e.pauseKeyUntil.getTime() >= before + 7000 &&
          e.pauseKeyUntil.getTime() <= Date.now() + 7000,
      ),
    );
  });

  it("times out retryably", async () => {
    const { ctx } = createTestContext();
    await assert.rejects(
      Promise.resolve(http({ url: `${base}/hang`, timeout: "100ms" }, ctx)),
      isTaskError("TIMEOUT", true),
    );
  });

  it("is cancelled by ctx.signal while waiting for the response", async () => {
    const { ctx, controller } = createTestContext();
    const before = hangingRequests;
    const request = Promise.resolve(http({ url: `${base}/hang` }, ctx));
    await waitFor(() => hangingRequests > before, "the request to reach the server");
    controller.abort();
    await assert.rejects(request, isTaskError("CANCELLED", false));
  });

  it("refuses a response body over the size cap", async () => {
    const { ctx } = createTestContext();
    await assert.rejects(
      Promise.resolve(http({ url: `${base}/big` }, ctx)),
      isTaskError("RESPONSE_TOO_LARGE", false),
    );
  });

  it("refuses a 2xx body that is not the JSON it claims", async () => {
    const { ctx } = createTestContext();
    await assert.rejects(
      Promise.resolve(http({ url: `${base}/bad-json` }, ctx)),
      isTaskError("INVALID_RESPONSE", false),
    );
  });

  it("reports a refused connection as a retryable NETWORK_ERROR", async () => {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const { ctx } = createTestContext();
    await assert.rejects(
      Promise.resolve(http({ url: `http://127.0.0.1:${port}/` }, ctx)),
      isTaskError("NETWORK_ERROR", true, (e) => /ECONNREFUSED/.test(e.message)),
    );
  });

  it("refuses bad input naming the field", async () => {
    const { ctx } = createTestContext();
    const cases: [unknown, RegExp][] = [
      [{}, /^url: is required/],
      [{ url: "ftp://example.com/" }, /^url: only http: and https:/],
      [{ url: "/relative" }, /^url: "\/relative" is not an absolute URL/],
      [{ url: "http://u:p@example.com/" }, /^url: credentials/],
      [{ url: base, method: "GET", body: { a: 1 } }, /^body: not allowed with GET/],
      [{ url: base, method: "BAD METHOD" }, /^method: /],
      [{ url: base, headers: { a: 1 } }, /^headers\.a: expected a string/],
      [{ url: base, headers: { "bad header": "x" } }, /^headers: /],
      [{ url: base, timeout: "later" }, /^timeout: invalid duration/],
      [{ url: base, timeout: "0s" }, /^timeout: must be greater than zero/],
      [{ url: base, retries: 3 }, /^retries: unknown field/],
    ];
    for (const [input, message] of cases) {
      await assert.rejects(
        Promise.resolve(http(input, ctx)),
        isTaskError("INVALID_INPUT", false, (e) => message.test(e.message)),
      );
    }
  });
});

describe("http handler: requests fetch cannot make", () => {
  it("refuses headers fetch cannot send as terminal INVALID_INPUT naming them, when the input is read", async () => {
    const { ctx } = createTestContext();
    const cases: [Record<string, string>, RegExp][] = [
      [{ "Keep-Alive": "timeout=5" }, /^headers\.Keep-Alive: cannot be set: /],
      [{ "transfer-encoding": "chunked" }, /^headers\.transfer-encoding: cannot be set: /],
      [{ upgrade: "websocket" }, /^headers\.upgrade: cannot be set: protocol upgrades/],
      [{ Expect: "100-continue" }, /^headers\.Expect: cannot be set: .*Expect \(100-continue\)/],
      [{ "content-length": "4" }, /^headers\.content-length: "4" is not the body's length \(3 bytes\)/],
      [
        { Connection: "upgrade" },
        /^headers\.Connection: "upgrade" cannot be sent: .*"close" or "keep-alive"/,
      ],
    ];
    for (const [headers, message] of cases) {
      await assert.rejects(
        Promise.resolve(http({ url: `${base}/echo`, method: "POST", headers, body: "abc" }, ctx)),
        isTaskError("INVALID_INPUT", false, (e) => message.test(e.message)),
      );
    }
    // The Connection values fetch sends are taken.
    const ok = await http({ url: `${base}/text`, headers: { Connection: "close" } }, ctx);
    assert.equal(ok.status, 200);
    // A Content-Length that is the body's (headers copied from curl) is sent as fetch makes it.
    const sized = await http(
      { url: `${base}/echo`, method: "POST", headers: { "Content-Length": "3" }, body: "abc" },
      ctx,
    );
    assert.equal(sized.status, 200);
  });

  it("fails terminally when fetch refuses the request as given (undici UND_ERR_INVALID_ARG, UND_ERR_NOT_SUPPORTED)", async (t) => {
    const { ctx } = createTestContext();
    for (const code of ["UND_ERR_INVALID_ARG", "UND_ERR_NOT_SUPPORTED"]) {
      const refused = Object.assign(new Error("invalid something header"), { code });
      t.mock.method(globalThis, "fetch", () =>
        Promise.reject(new TypeError("fetch failed", { cause: refused })),
      );
      await assert.rejects(
        Promise.resolve(http({ url: `${base}/text` }, ctx)),
        isTaskError("INVALID_INPUT", false, (e) =>
          new RegExp(`^GET ${base}/text cannot be sent: ${code}: invalid something header$`).test(e.message),
        ),
      );
      t.mock.restoreAll();
    }
  });
});

describe("parseRetryAfter", () => {
  it("reads seconds and HTTP dates", () => {
    assert.equal(parseRetryAfter("120"), 120_000);
    const now = Date.parse("2025-01-01T00:00:00Z");
    assert.equal(parseRetryAfter("Wed, 01 Jan 2025 00:00:30 GMT", now), 30_000);
    assert.equal(parseRetryAfter("soon"), undefined);
    assert.equal(parseRetryAfter(undefined), undefined);
  });

  it("takes a delay past 30 days as 30 days (a key's pause must stay a valid Date)", () => {
    assert.equal(parseRetryAfter("99999999999999999"), MAX_RETRY_AFTER_MS);
    const now = Date.parse("2025-01-01T00:00:00Z");
    assert.equal(parseRetryAfter("Fri, 01 Jan 2100 00:00:00 GMT", now), MAX_RETRY_AFTER_MS);
  });
});
