/**
 * The resolve hook of own-packages.ts, installed in this process: a module outside the repository
 * with no copy of `@nexusflow/common` gets the CLI's (the same module instance), one with a copy
 * of its own installed gets that one, and a package that is not ours still fails as before.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { ConfigError } from "@nexusflow/common";
import { shareOwnPackages } from "./own-packages.js";

describe("handler modules outside the repository resolve @nexusflow packages", () => {
  let work: string;

  const load = async (file: string): Promise<Record<string, unknown>> =>
    (await import(pathToFileURL(file).href)) as Record<string, unknown>;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "nf-own-packages-"));
    shareOwnPackages();
  });

  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("gives a module with no copy of its own the CLI's (the same instance to an ES module)", async () => {
    const dir = join(work, "bare");
    await mkdir(dir);
    // A CommonJS file (require) and an ES module (import), as tsx and Node load them.
    await writeFile(join(dir, "a.cjs"), `module.exports = require("@nexusflow/common");\n`);
    await writeFile(join(dir, "b.mjs"), `export { ConfigError } from "@nexusflow/common";\n`);
    await writeFile(join(dir, "c.mjs"), `export { parseDuration } from "@nexusflow/common/duration";\n`);
    // Under this test's `--import tsx`, tsx's require hook compiles what `require` gets apart
    // (the CLI registers only tsx's ESM loader): the same class, not the same instance.
    const required = (await load(join(dir, "a.cjs")))["ConfigError"] as typeof ConfigError;
    assert.equal(new required("X", "y").message, "X: y");
    assert.equal((await load(join(dir, "b.mjs")))["ConfigError"], ConfigError);
    const { parseDuration } = (await load(join(dir, "c.mjs"))) as { parseDuration: (s: string) => number };
    assert.equal(parseDuration("2s"), 2000);
  });

  it("leaves a copy the user installed in charge", async () => {
    const dir = join(work, "installed");
    const pkg = join(dir, "node_modules", "@nexusflow", "common");
    await mkdir(pkg, { recursive: true });
    await writeFile(
      join(pkg, "package.json"),
      JSON.stringify({ name: "@nexusflow/common", type: "module", exports: "./index.js" }),
    );
    await writeFile(join(pkg, "index.js"), `export const whose = "the user's";\n`);
    await writeFile(join(dir, "handlers.mjs"), `export { whose } from "@nexusflow/common";\n`);
    assert.equal((await load(join(dir, "handlers.mjs")))["whose"], "the user's");
  });

  it("does not resolve other packages", async () => {
    const dir = join(work, "other");
    await mkdir(dir);
    await writeFile(join(dir, "x.mjs"), `export * from "@nexusflow/scheduler";\n`);
    await writeFile(join(dir, "y.mjs"), `export * from "@nexusflow/common/no-such-subpath";\n`);
    await assert.rejects(load(join(dir, "x.mjs")), { code: "ERR_MODULE_NOT_FOUND" });
    await assert.rejects(load(join(dir, "y.mjs")), { code: "ERR_MODULE_NOT_FOUND" });
  });
});
