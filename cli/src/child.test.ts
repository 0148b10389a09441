import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ManagedChild } from "./child.js";
import { SERVICE_NODE_FLAGS } from "./dev.js";

describe("ManagedChild", () => {
  it("starts the service's Node with the service flags (a 64 MiB young generation)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "nf-child-"));
    try {
      const entry = join(dir, "main.ts");
      await writeFile(
        entry,
        `console.log(JSON.stringify({ flags: process.execArgv }));
`,
      );
      const lines: string[] = [];
      const child = new ManagedChild(
        { name: "probe", entry, env: process.env, cwd: process.cwd(), nodeFlags: SERVICE_NODE_FLAGS },
        (_name, line) => lines.push(line),
      );
      const exit = await child.exited;
      assert.equal(exit.code, 0);
      const report = lines
        .map((l) => JSON.parse(l) as { flags: string[] })
        .find((r) => Array.isArray(r.flags));
      assert.ok(report !== undefined, `no report in ${JSON.stringify(lines)}`);
      assert.ok(report.flags.includes("--max-semi-space-size=64"), JSON.stringify(report.flags));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
