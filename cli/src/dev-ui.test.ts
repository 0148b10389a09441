/**
 * `nexusflow dev` builds the web UI when ui/dist is missing or older than its sources (or the
 * generated client), and leaves a fresh build alone; a failed build is reported with the tool's
 * last words, not thrown. The build tool here is a stand-in script at node_modules/vite/bin/vite.js
 * of a temporary checkout that records its calls (the real Vite build runs in the gateway's
 * ui-browser and dist tests); the sign-in link keeps the token in the fragment only.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ensureUiBuilt, uiSignInLink, uiUrl } from "./dev-ui.js";

/** Writes index.html into --outDir or ./dist, and appends its arguments to calls.log. */
const FAKE_VITE = `
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
appendFileSync("calls.log", JSON.stringify(process.argv.slice(2)) + "\\n");
if (process.env.FAKE_VITE_FAIL === "1") { console.error("error: src/main.tsx: unexpected token"); process.exit(1); }
mkdirSync("dist", { recursive: true });
writeFileSync("dist/index.html", "<!doctype html>");
`;

describe("dev: the web UI build", () => {
  let root: string;
  const calls = async (): Promise<string[][]> =>
    (await readFile(join(root, "ui", "calls.log"), "utf8").catch(() => ""))
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l) as string[]);

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "nf-dev-ui-"));
    await mkdir(join(root, "ui", "src"), { recursive: true });
    await mkdir(join(root, "gen", "src"), { recursive: true });
    await mkdir(join(root, "node_modules", "vite", "bin"), { recursive: true });
    await writeFile(join(root, "node_modules", "vite", "bin", "vite.js"), FAKE_VITE);
    await writeFile(join(root, "ui", "src", "main.tsx"), "export {};");
    await writeFile(join(root, "ui", "index.html"), "<!doctype html>");
    await writeFile(join(root, "gen", "src", "x_pb.ts"), "export {};");
  });

  after(() => rm(root, { recursive: true, force: true }));

  it("builds when missing, not again while fresh, again when a source or the generated code is newer", async () => {
    const signal = new AbortController().signal;
    const first = await ensureUiBuilt(root, signal);
    assert.equal(first.state, "built");
    assert.deepEqual(await calls(), [["build", "--logLevel", "error"]]);
    assert.equal(await readFile(join(root, "ui", "dist", "index.html"), "utf8"), "<!doctype html>");

    assert.deepEqual(await ensureUiBuilt(root, signal), { state: "fresh" });
    assert.equal((await calls()).length, 1);

    const later = new Date(Date.now() + 60_000);
    await utimes(join(root, "ui", "src", "main.tsx"), later, later);
    assert.equal((await ensureUiBuilt(root, signal)).state, "built");
    assert.equal((await calls()).length, 2);

    const evenLater = new Date(Date.now() + 120_000);
    await utimes(join(root, "gen", "src", "x_pb.ts"), evenLater, evenLater);
    assert.equal((await ensureUiBuilt(root, signal)).state, "built");
    assert.equal((await calls()).length, 3);
  });

  it("reports a failed build with the tool's error, without throwing", async () => {
    await rm(join(root, "ui", "dist"), { recursive: true, force: true });
    process.env["FAKE_VITE_FAIL"] = "1";
    try {
      const result = await ensureUiBuilt(root, new AbortController().signal);
      assert.equal(result.state, "failed");
      assert.match(
        result.state === "failed" ? result.reason : "",
        /exited with 1: error: src\/main\.tsx: unexpected token/,
      );
    } finally {
      delete process.env["FAKE_VITE_FAIL"];
    }
  });

  it("links to /ui/ with the token in the fragment only", () => {
    assert.equal(uiUrl("http://127.0.0.1:8080"), "http://127.0.0.1:8080/ui/");
    const link = new URL(uiSignInLink("http://127.0.0.1:8080", "a.b+c/d=="));
    assert.equal(link.pathname, "/ui/");
    assert.equal(link.search, "");
    assert.equal(new URLSearchParams(link.hash.slice(1)).get("token"), "a.b+c/d==");
  });
});
