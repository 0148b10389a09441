/**
 * The web UI's built files (ui/, `vite build`) under `/ui/`, from one folder and nothing outside it.
 *
 * - `GET|HEAD /ui/<file>`: the file, with its content type, `x-content-type-options: nosniff`,
 *   an ETag (size and modification time; `if-none-match` answers 304), and caching by name: files
 *   under `/ui/assets/` are named by their content hash and may be kept for a year (`immutable`);
 *   everything else (index.html) is revalidated on each use (`no-cache`) so that a new build is
 *   picked up at once.
 * - Any other path under `/ui/` without a file extension is a client route of the single-page app
 *   (`/ui/runs/abc`): it gets index.html. A missing asset or file with an extension is a 404.
 * - `/ui` redirects to `/ui/`; methods other than GET and HEAD are 405.
 * - Traversal: the path is percent-decoded once, and refused (400) with a NUL, a backslash, or a
 *   `.` / `..` segment (also when encoded, `%2e%2e`); dot files are not served; the resolved file
 *   must lie inside the folder, checked again on its real path so that a symbolic link cannot lead
 *   out of it.
 * - The folder not built (no index.html): 503 with a line saying how to build it.
 *
 * Static files need no token (they hold no data); every API call the UI makes carries one.
 */
import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import type * as http from "node:http";
import { extname, resolve, sep } from "node:path";
import { pipeline } from "node:stream/promises";
import type { Logger } from "@nexusflow/common";

/** The URL prefix the UI is served under (its Vite `base`). */
export const UI_PREFIX = "/ui/";

/** Content types by file extension; anything else is application/octet-stream. */
const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".ico": "image/x-icon",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
  ".wasm": "application/wasm",
};

/** Hashed assets (Vite's `assetsDir`): safe to keep for good. */
const IMMUTABLE = "public, max-age=31536000, immutable";
/** Everything else: cached, but revalidated on each use. */
const REVALIDATE = "no-cache";

/**
 * What the UI's pages may do: scripts, styles and calls to this origin only; nothing may frame it.
 * (Preact sets inline styles through the CSSOM, which `style-src 'self'` allows.)
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** The http response (the gateway passes its http2 compatibility responses as this: same members). */
type Response = http.ServerResponse;
type Request = Pick<http.IncomingMessage, "method" | "url" | "headers">;

/** Options of {@link createStaticFiles}. */
export interface StaticFilesOptions {
  /** The folder of the built UI (with index.html). */
  root: string;
  /** Where read errors are logged. */
  log: Logger;
}

/**
 * Serves `/ui/*` from `options.root`. The returned function answers and returns true for a path
 * under `/ui` (or `/ui` itself), and returns false, touching nothing, for any other path.
 */
export function createStaticFiles(options: StaticFilesOptions): (req: Request, res: Response) => boolean {
  const root = resolve(options.root);
  let realRoot: Promise<string> | undefined;
  const rootReal = (): Promise<string> => (realRoot ??= realpath(root).catch(() => root));
  return (req, res) => {
    const rawPath = (req.url ?? "/").split("?")[0] ?? "/";
    if (rawPath !== "/ui" && !rawPath.startsWith(UI_PREFIX)) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      sendText(res, 405, "only GET and HEAD are served under /ui/", { allow: "GET, HEAD" });
      return true;
    }
    if (rawPath === "/ui") {
      const query = req.url?.slice(rawPath.length) ?? "";
      res.writeHead(308, { location: `${UI_PREFIX}${query}`, "content-length": 0 });
      res.end();
      return true;
    }
    serve(root, rootReal, rawPath.slice(UI_PREFIX.length), req, res).catch((e: unknown) => {
      options.log.warn({ err: e, path: rawPath }, "cannot serve a UI file");
      if (!res.headersSent) sendText(res, 500, "cannot read the file");
      else res.destroy();
    });
    return true;
  };
}

/** The relative path under the root, or why it is refused. */
export function safeRelativePath(encoded: string): { path: string } | { refused: string } {
  let decoded: string;
  try {
    decoded = decodeURIComponent(encoded);
  } catch {
    return { refused: "malformed percent-encoding in the path" };
  }
  if (decoded.includes("\0") || decoded.includes("\\")) return { refused: "invalid character in the path" };
  const segments = decoded.split("/");
  if (segments.some((s) => s === "." || s === ".."))
    return { refused: "the path may not contain . or .. segments" };
  return { path: segments.filter((s) => s !== "").join("/") };
}

async function serve(
  root: string,
  rootReal: () => Promise<string>,
  encoded: string,
  req: Request,
  res: Response,
): Promise<void> {
  const safe = safeRelativePath(encoded);
  if ("refused" in safe) {
    sendText(res, 400, safe.refused);
    return;
  }
  const index = resolve(root, "index.html");
  const indexStat = await fileStat(index);
  if (indexStat === undefined) {
    sendText(
      res,
      503,
      "the web UI is not built: run `npm run build -w ui` (npm start builds it when it is missing)",
    );
    return;
  }
  const rel = safe.path;
  const hidden = rel.split("/").some((s) => s.startsWith("."));
  const file = resolve(root, rel);
  if (rel !== "" && !hidden && file.startsWith(root + sep)) {
    const found = await fileStat(file);
    if (found !== undefined) {
      const real = await realpath(file);
      if (!real.startsWith((await rootReal()) + sep)) {
        sendText(res, 404, "not found");
        return;
      }
      const cache = rel.startsWith("assets/") ? IMMUTABLE : REVALIDATE;
      await sendFile(req, res, real, found, cache);
      return;
    }
  }
  // A file that is not there, as opposed to a page of the app.
  if (hidden || rel.startsWith("assets/") || extname(rel) !== "") {
    sendText(res, 404, "not found");
    return;
  }
  await sendFile(req, res, index, indexStat, REVALIDATE);
}

interface FileStat {
  size: number;
  mtimeMs: number;
}

/** The file's size and time when it is a regular file, else undefined. */
async function fileStat(path: string): Promise<FileStat | undefined> {
  try {
    const s = await stat(path);
    return s.isFile() ? { size: s.size, mtimeMs: s.mtimeMs } : undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR" || code === "ENAMETOOLONG") return undefined;
    throw e;
  }
}

async function sendFile(
  req: Request,
  res: Response,
  path: string,
  file: FileStat,
  cacheControl: string,
): Promise<void> {
  const etag = `W/"${file.size.toString(16)}-${Math.floor(file.mtimeMs).toString(16)}"`;
  const type = CONTENT_TYPES[extname(path).toLowerCase()] ?? "application/octet-stream";
  const headers: http.OutgoingHttpHeaders = {
    "content-type": type,
    "cache-control": cacheControl,
    etag,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    ...(type.startsWith("text/html") ? { "content-security-policy": CONTENT_SECURITY_POLICY } : {}),
  };
  const match = req.headers["if-none-match"];
  if (match !== undefined && match.split(",").some((t) => t.trim() === etag || t.trim() === "*")) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  res.writeHead(200, { ...headers, "content-length": file.size });
  if (req.method === "HEAD") {
    res.end();
    return;
  }
  await pipeline(createReadStream(path), res);
}

function sendText(res: Response, status: number, text: string, extra: http.OutgoingHttpHeaders = {}): void {
  const body = `${text}\n`;
  res.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(body),
    "x-content-type-options": "nosniff",
    ...extra,
  });
  res.end(body);
}
