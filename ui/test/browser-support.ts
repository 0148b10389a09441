/**
 * What the UI's browser tests share: the UI built by Vite, served under /ui/ by a small HTTP server
 * that also answers the API with handlers the test gives (a fake gateway: Connect, as the UI calls
 * it), and Debian's Chromium (/usr/bin/chromium) driven by playwright-core, headless and kept off
 * the network. The fake API lets a test hand the page what a real stack would only give with
 * effort: hostile strings, huge values, a page token that never advances, a run that disappears.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { type IncomingMessage, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, extname, join, normalize } from "node:path";
import type { TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { type Browser, type Page, chromium } from "playwright-core";

/** The repository's root. */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

const CHROMIUM = "/usr/bin/chromium";

/** Flags that keep the browser to the loopback address and quiet (no updates, sync or lookups). */
const OFFLINE_FLAGS = [
  "--no-sandbox",
  "--disable-dev-shm-usage",
  "--disable-gpu",
  "--no-first-run",
  "--no-default-browser-check",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-default-apps",
  "--disable-domain-reliability",
  "--disable-sync",
  "--disable-extensions",
  "--disable-client-side-phishing-detection",
  "--disable-breakpad",
  "--metrics-recording-only",
  "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
  "--proxy-server=http://127.0.0.1:9",
  "--proxy-bypass-list=127.0.0.1",
];

/** Whether Chromium is here; under CI=true its absence fails the test instead of skipping it. */
export function chromiumOrSkip(t: TestContext): boolean {
  if (existsSync(CHROMIUM)) return true;
  const why = `${CHROMIUM} not found (Debian package chromium)`;
  if (process.env["CI"] === "true") throw new Error(`${why}: required under CI=true`);
  t.skip(why);
  return false;
}

/** Launches Chromium headless, off the network. */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: OFFLINE_FLAGS });
}

/** Builds ui/ with Vite into `out`. */
export function buildUi(out: string): void {
  const vite = spawnSync(
    process.execPath,
    [
      join(ROOT, "node_modules", "vite", "bin", "vite.js"),
      "build",
      "--outDir",
      out,
      "--emptyOutDir",
      "--bypass-lock",
      "--logLevel",
      "warn",
    ],
    { cwd: join(ROOT, "ui"), encoding: "utf8" },
  );
  assert.equal(vite.status, 0, `vite build failed:\n${vite.stdout}${vite.stderr}`);
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json",
};

/** A fake gateway: the built UI under /ui/ (index.html for every other path there) and `routes`. */
export interface FakeGateway {
  url: string;
  close: () => Promise<void>;
}

/** Starts a {@link FakeGateway} on a random loopback port, serving the UI built into `uiDir`. */
export async function startFakeGateway(
  uiDir: string,
  routes: (router: ConnectRouter) => void,
): Promise<FakeGateway> {
  const api = connectNodeAdapter({ routes, readMaxBytes: 64 * 1024 * 1024, writeMaxBytes: 64 * 1024 * 1024 });
  const serveUi = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const rel = normalize(path.slice("/ui/".length));
    const file =
      rel.startsWith("assets/") && !rel.includes("..") ? join(uiDir, rel) : join(uiDir, "index.html");
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  };
  const server = createServer((req, res) => {
    if ((req.url ?? "").startsWith("/ui")) void serveUi(req, res);
    else api(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** An unsigned JWT with `claims` (the UI reads claims for display only; the fake API checks none). */
export function fakeToken(claims: Record<string, unknown>): string {
  const part = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString("base64url");
  return `${part({ alg: "none", typ: "JWT" })}.${part(claims)}.c2ln`;
}

/** Console errors and uncaught page errors of a page, collected. */
export function watchErrors(page: Page, errors: string[]): void {
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(`console: ${msg.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
}

/** Polls `check` (in the test, against the page) until it gives a value; fails after `ms`. */
export async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
