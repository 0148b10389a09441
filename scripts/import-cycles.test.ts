import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { CHECKED_ROOTS, describeCycle, folderCycles, folderGraph, relativeImports } from "./import-cycles.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

describe("import cycles between folders", () => {
  it("the workspace has none", () => {
    const cycles = folderCycles(folderGraph(ROOT, CHECKED_ROOTS));
    if (cycles.length > 0)
      assert.fail(`folders that import each other:\n${cycles.map(describeCycle).join("\n")}`);
  });

  describe("the check", () => {
    const dir = mkdtempSync(join(tmpdir(), "nf-import-cycles-"));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const write = (path: string, text: string): void => {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), text);
    };

    it("reads every form of relative import, and no package import", () => {
      assert.deepEqual(
        relativeImports(
          [
            'import { a } from "./a.js";',
            "import type {\n  B,\n  C,\n} from '../b/c.js';",
            'export * from "./d/index.js";',
            'import "./side-effect.js";',
            'const e = await import("../e.js");',
            'import { f } from "@nexusflow/common";',
            'import pg from "pg";',
          ].join("\n"),
        ),
        ["./a.js", "../b/c.js", "./d/index.js", "./side-effect.js", "../e.js"],
      );
    });

    it("names a cycle with one import for each step of it, and leaves test files out", () => {
      write("src/engine/events.ts", 'import type { Row } from "../persistence/writer.js";\n');
      write("src/engine/engine.ts", 'import { Writer } from "../persistence/writer.js";\n');
      write("src/persistence/writer.ts", 'import { encode } from "../engine/events.js";\n');
      write("src/dag/dag.ts", "export const dag = 1;\n");
      write("src/dag/dag.test.ts", 'import "../engine/engine.js";\n');
      write("src/engine/uses-dag.ts", 'import { dag } from "../dag/dag.js";\n');
      const cycles = folderCycles(folderGraph(dir, ["src"]));
      assert.deepEqual(cycles, [
        {
          folders: ["src/engine", "src/persistence", "src/engine"],
          imports: [
            "src/engine/engine.ts imports src/persistence/writer.ts",
            "src/persistence/writer.ts imports src/engine/events.ts",
          ],
        },
      ]);
      assert.equal(
        describeCycle(cycles[0] as (typeof cycles)[number]),
        "src/engine -> src/persistence -> src/engine\n" +
          "  src/engine/engine.ts imports src/persistence/writer.ts\n" +
          "  src/persistence/writer.ts imports src/engine/events.ts",
      );
    });

    it("counts a folder and its sub-folder as two folders, and finds cycles through three", () => {
      write("tree/src/main.ts", 'import { h } from "./handlers/index.js";\n');
      write("tree/src/errors.ts", "export class E extends Error {}\n");
      write("tree/src/handlers/index.ts", 'import { E } from "../errors.js";\n');
      write("tree/a/a.ts", 'import "../b/b.js";\n');
      write("tree/b/b.ts", 'import "../c/c.js";\n');
      write("tree/c/c.ts", 'import "../a/a.js";\n');
      const cycles = folderCycles(folderGraph(dir, ["tree"]));
      assert.deepEqual(
        cycles.map((c) => c.folders),
        [
          ["tree/a", "tree/b", "tree/c", "tree/a"],
          ["tree/src", "tree/src/handlers", "tree/src"],
        ],
      );
    });
  });
});
