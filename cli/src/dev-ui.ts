/**
 * The web UI for `nexusflow dev`: built (ui/, `vite build` into ui/dist, which the gateway serves
 * under /ui/) when it is missing or older than its sources, so that `npm ci && npm start` on a
 * fresh clone gives a working /ui/; and the link that opens it with a dev token.
 *
 * The link carries the token in the URL fragment (`/ui/#token=...`): a fragment is never sent to
 * a server (no access log sees it), and the app moves it into the tab's sessionStorage and
 * removes it from the address bar and the history entry as it starts, so it does not linger in
 * the browser's history or a bookmark. It stays only in this terminal, like the rest of the dev
 * stack's credentials.
 */
import { spawn } from "node:child_process";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";

/** What {@link ensureUiBuilt} did. */
export type UiBuild =
  { state: "fresh" } | { state: "built"; ms: number } | { state: "failed"; reason: string };

/** The newest modification time under `path` (a file or a folder, recursively), or 0. */
async function newest(path: string): Promise<number> {
  let s;
  try {
    s = await stat(path);
  } catch {
    return 0;
  }
  if (!s.isDirectory()) return s.mtimeMs;
  const entries = await readdir(path);
  const times = await Promise.all(
    entries.filter((e) => e !== "node_modules").map((e) => newest(join(path, e))),
  );
  return Math.max(s.mtimeMs, ...times);
}

/**
 * Builds ui/ into ui/dist when its index.html is missing or older than the UI's sources or the
 * generated client it uses. A failed build is reported, not thrown: the stack runs without a UI
 * (the gateway then answers /ui/ with how to build it).
 */
export async function ensureUiBuilt(root: string, signal: AbortSignal): Promise<UiBuild> {
  const ui = join(root, "ui");
  const built = await newest(join(ui, "dist", "index.html"));
  const sources = Math.max(
    ...(await Promise.all(
      ["src", "index.html", "vite.config.ts", "package.json", "tsconfig.json"]
        .map((p) => join(ui, p))
        .concat([join(root, "gen", "src"), join(root, "gen", "index.ts")])
        .map(newest),
    )),
  );
  if (built > 0 && built >= sources) return { state: "fresh" };
  const started = performance.now();
  const vite = join(root, "node_modules", "vite", "bin", "vite.js");
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [vite, "build", "--logLevel", "error"], {
      cwd: ui,
      stdio: ["ignore", "ignore", "pipe"],
      signal,
    });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    child.on("error", (e) => resolve({ state: "failed", reason: e.message }));
    child.on("close", (code, sig) => {
      if (code === 0) resolve({ state: "built", ms: Math.round(performance.now() - started) });
      else
        resolve({
          state: "failed",
          reason: `vite build exited with ${code ?? sig}${stderr.trim() === "" ? "" : `: ${stderr.trim().split("\n").slice(-3).join(" ")}`}`,
        });
    });
  });
}

/** The UI's address on a gateway. */
export function uiUrl(gatewayUrl: string): string {
  return `${gatewayUrl}/ui/`;
}

/** A link that opens the UI signed in with `token` (kept by the page, then removed from the URL). */
export function uiSignInLink(gatewayUrl: string, token: string): string {
  return `${uiUrl(gatewayUrl)}#token=${encodeURIComponent(token)}`;
}
