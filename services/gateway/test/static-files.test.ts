/**
 * The gateway serves the web UI's built files under /ui/ (static-files.ts), over HTTP/1.1 and h2c,
 * with authentication on (static files need no token, API calls still do): content types, caching
 * by name (hashed assets immutable, index.html revalidated, ETag and 304), index.html for client
 * routes, 404 for missing files, 405 for other methods, a redirect from /ui, and nothing outside
 * the folder: `..` raw or percent-encoded, backslashes, NUL, dot files and a symbolic link that
 * leads out are all refused. Without a build, /ui/ says how to make one.
 */
import assert from "node:assert/strict";
import * as http from "node:http";
import * as http2 from "node:http2";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createRouterTransport } from "@connectrpc/connect";
import { createTokenVerifier } from "@nexusflow/common";
import { type Gateway, createGateway } from "../src/server.js";
import { safeRelativePath } from "../src/static-files.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request with the path sent exactly as given (no URL normalisation). */
function get(
  url: string,
  path: string,
  method = "GET",
  headers: http.OutgoingHttpHeaders = {},
): Promise<Reply> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, path, method, headers, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

const INDEX =
  '<!doctype html><html><head><script type="module" src="/ui/assets/app-1a2b3c.js"></script></head></html>';
const APP = "console.log('app');";

describe("gateway: the web UI's static files", () => {
  let dir: string;
  let keys: TestKeys;
  let gateway: Gateway;
  let url: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-ui-"));
    const ui = join(dir, "dist");
    await mkdir(join(ui, "assets"), { recursive: true });
    await writeFile(join(ui, "index.html"), INDEX);
    await writeFile(join(ui, "assets", "app-1a2b3c.js"), APP);
    await writeFile(join(ui, "assets", "style-9f8e.css"), "body{color:black}");
    await writeFile(join(ui, "assets", "logo.svg"), "<svg xmlns='http://www.w3.org/2000/svg'/>");
    await writeFile(join(ui, ".env"), "SECRET=1");
    await writeFile(join(dir, "secret.txt"), "outside the build");
    await symlink(join(dir, "secret.txt"), join(ui, "assets", "leak.txt"));
    keys = await createTestKeys();
    const verifier = await createTokenVerifier({
      publicKeyFiles: [keys.keys.ES256.pemFile],
      issuer: ISSUER,
      audience: AUDIENCE,
    });
    gateway = createGateway({
      schedulerAddress: "127.0.0.1:1",
      transport: createRouterTransport(() => {}),
      port: 0,
      verifier,
      uiDir: ui,
    });
    ({ url } = await gateway.listen());
  });

  after(async () => {
    await gateway.close();
    await keys.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("serves index.html at /ui/ without a token, revalidated on each use, with a CSP", async () => {
    const r = await get(url, "/ui/");
    assert.equal(r.status, 200);
    assert.equal(r.body, INDEX);
    assert.equal(r.headers["content-type"], "text/html; charset=utf-8");
    assert.equal(r.headers["cache-control"], "no-cache");
    assert.equal(r.headers["x-content-type-options"], "nosniff");
    const csp = String(r.headers["content-security-policy"]);
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
  });

  it("serves hashed assets with their content type, cached for good", async () => {
    const js = await get(url, "/ui/assets/app-1a2b3c.js");
    assert.equal(js.status, 200);
    assert.equal(js.body, APP);
    assert.equal(js.headers["content-type"], "text/javascript; charset=utf-8");
    assert.equal(js.headers["cache-control"], "public, max-age=31536000, immutable");
    assert.equal(js.headers["content-length"], String(Buffer.byteLength(APP)));
    assert.equal(
      (await get(url, "/ui/assets/style-9f8e.css")).headers["content-type"],
      "text/css; charset=utf-8",
    );
    assert.equal((await get(url, "/ui/assets/logo.svg")).headers["content-type"], "image/svg+xml");
    // A query string does not change the file.
    assert.equal((await get(url, "/ui/assets/app-1a2b3c.js?v=2")).body, APP);
  });

  it("answers a matching If-None-Match with 304 and HEAD with the headers only", async () => {
    const first = await get(url, "/ui/assets/app-1a2b3c.js");
    const etag = first.headers.etag;
    assert.ok(etag !== undefined);
    const again = await get(url, "/ui/assets/app-1a2b3c.js", "GET", { "if-none-match": etag });
    assert.equal(again.status, 304);
    assert.equal(again.body, "");
    const head = await get(url, "/ui/assets/app-1a2b3c.js", "HEAD");
    assert.equal(head.status, 200);
    assert.equal(head.body, "");
    assert.equal(head.headers["content-length"], String(Buffer.byteLength(APP)));
  });

  it("answers client routes with index.html, and missing files with 404", async () => {
    for (const route of ["/ui/runs", "/ui/runs/0190-abc", "/ui/workflows/trip-booking"]) {
      const r = await get(url, route);
      assert.equal(r.status, 200, route);
      assert.equal(r.body, INDEX, route);
      assert.equal(r.headers["cache-control"], "no-cache", route);
    }
    for (const missing of ["/ui/assets/app-000000.js", "/ui/favicon.ico", "/ui/runs/x.json"]) {
      const r = await get(url, missing);
      assert.equal(r.status, 404, missing);
      assert.notEqual(r.body, INDEX, missing);
    }
  });

  it("redirects /ui to /ui/ and refuses other methods", async () => {
    const r = await get(url, "/ui?x=1");
    assert.equal(r.status, 308);
    assert.equal(r.headers.location, "/ui/?x=1");
    const post = await get(url, "/ui/", "POST");
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, "GET, HEAD");
  });

  it("never serves anything outside the folder, nor dot files", async () => {
    for (const path of [
      "/ui/../secret.txt",
      "/ui/%2e%2e/secret.txt",
      "/ui/assets/%2E%2E/%2E%2E/secret.txt",
      "/ui/..%2fsecret.txt",
      "/ui/..%5csecret.txt",
      "/ui/assets/..\\..\\secret.txt",
      "/ui/%00index.html",
      "/ui/%E0%A4%A",
    ]) {
      const r = await get(url, path);
      assert.equal(r.status, 400, `${path}: ${r.status} ${r.body}`);
      assert.doesNotMatch(r.body, /outside the build/);
    }
    // A symbolic link inside that leads out, and a dot file.
    for (const path of ["/ui/assets/leak.txt", "/ui/.env", "/ui/%2eenv"]) {
      const r = await get(url, path);
      assert.equal(r.status, 404, path);
      assert.doesNotMatch(r.body, /outside the build|SECRET/);
    }
    assert.deepEqual(safeRelativePath("assets//app.js"), { path: "assets/app.js" });
    assert.ok("refused" in safeRelativePath("a/%2e/b"));
  });

  it("serves over h2c too, and API calls still need a token", async () => {
    const session = http2.connect(url);
    try {
      const body = await new Promise<{ status: number; type: string; text: string }>((resolve, reject) => {
        const stream = session.request({ ":path": "/ui/assets/app-1a2b3c.js" });
        let status = 0;
        let type = "";
        let text = "";
        stream.on("response", (h) => {
          status = Number(h[":status"]);
          type = String(h["content-type"]);
        });
        stream.setEncoding("utf8").on("data", (c: string) => (text += c));
        stream.on("end", () => resolve({ status, type, text }));
        stream.on("error", reject);
        stream.end();
      });
      assert.deepEqual(body, { status: 200, type: "text/javascript; charset=utf-8", text: APP });
    } finally {
      session.close();
    }
    const api = await fetch(`${url}/nexusflow.v1.WorkflowService/ListRuns`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(api.status, 401);
  });

  it("says how to build the UI when it is not built", async () => {
    const empty = createGateway({
      schedulerAddress: "127.0.0.1:1",
      transport: createRouterTransport(() => {}),
      port: 0,
      uiDir: join(dir, "no-such-build"),
    });
    const { url: emptyUrl } = await empty.listen();
    try {
      const r = await get(emptyUrl, "/ui/");
      assert.equal(r.status, 503);
      assert.match(r.body, /npm run build -w ui/);
      // Other paths are untouched.
      assert.equal((await get(emptyUrl, "/healthz")).status, 200);
    } finally {
      await empty.close();
    }
  });
});
