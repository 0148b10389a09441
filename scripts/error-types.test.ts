import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { TASK_ERROR_TYPES } from "@nexusflow/common/task-error-types";
import {
  README_HEADING,
  expectedReadmeRows,
  producedErrorTypes,
  readmeErrorTypes,
  unknownErrorTypes,
} from "./error-types.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

describe("the error vocabulary (TaskErrorType)", () => {
  const found = producedErrorTypes(ROOT);

  it("covers every error type the scheduler and the executor produce", () => {
    const unknown = unknownErrorTypes(found);
    if (unknown.length > 0)
      assert.fail(
        `error types not in TaskErrorType (common/src/task-error-types.ts); add them there, with a doc comment, and to the README's table:\n${unknown.join("\n")}`,
      );
  });

  it("has no type that nothing produces", () => {
    const produced = new Set(found.map((f) => f.type));
    assert.deepEqual(
      TASK_ERROR_TYPES.filter((t) => !produced.has(t)),
      [],
      "types in TaskErrorType that no source under services/scheduler/src or services/executor/src produces",
    );
  });

  it(`is the table under "${README_HEADING}" in README.md, row for row`, () => {
    const rows = readmeErrorTypes(readFileSync(join(ROOT, "README.md"), "utf8"));
    assert.ok(rows !== undefined, `README.md has no table under a heading "${README_HEADING}"`);
    const expected = expectedReadmeRows();
    assert.deepEqual(
      {
        missing: expected.filter((t) => !rows.includes(t)),
        notInVocabulary: rows.filter((t) => !expected.includes(t)),
      },
      { missing: [], notInVocabulary: [] },
    );
  });

  describe("the scan", () => {
    const dir = mkdtempSync(join(tmpdir(), "nf-error-types-"));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const write = (path: string, text: string): void => {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), text);
    };

    it("finds every way an error is made, with its line, and follows consts and imports", () => {
      write("src/model.ts", 'export const GONE = "GONE_AWAY";\nexport const OK = TaskErrorType.TIMEOUT;\n');
      write(
        "src/a.ts",
        [
          'import { TaskErrorType } from "@nexusflow/common/task-error-types";', // 1
          'import { GONE, OK } from "./model.js";',
          'throw TaskError.terminal("BOGUS_TERMINAL", "m");',
          "throw TaskError.retryable(TaskErrorType.NOT_A_TYPE, 'm');",
          'throw new TaskError("BOGUS_NEW", "m", true);', // 5
          'failAttempt(core, task, { type: "BOGUS_INFO", message: "m", retryable: true }, 0, at);',
          "const error = {",
          '  type: first?.error?.type ?? "BOGUS_FALLBACK",',
          '  message: "m",',
          "};", // 10
          'const kind = big ? "BOGUS_THEN" : TaskErrorType.EXIT_CODE;',
          "throw TaskError.terminal(kind, 'm');",
          "const report = { type: wrap(e?.type || GONE), message: '' };",
          "const fine = { type: OK, message: '' };",
          'interface StepError { readonly type: "BOGUS_A" | typeof TaskErrorType.CANCELLED; readonly message: string }', // 15
          "const dynamic = { type: error.type, message: error.message };",
          "const http = TaskError.retryable(httpStatusErrorType(status), 'm');",
          'const events = { type: "runCompleted", event };',
          'type NotAnError = { type: "SOMETHING"; code: string };',
          'const named = { type: "Error", message: "thrown" };', // 20
          "",
        ].join("\n"),
      );
      write("src/a.test.ts", 'TaskError.terminal("IN_A_TEST", "m");\n');
      write(
        "src/contract.ts",
        'import { it } from "node:test";\nconst e = { type: "IN_A_SUITE", message: "" };\n',
      );
      const found = producedErrorTypes(dir, ["src"]);
      assert.deepEqual(
        found.map((f) => `${f.line}: ${f.type}`),
        [
          "3: BOGUS_TERMINAL",
          "4: TaskErrorType.NOT_A_TYPE",
          "5: BOGUS_NEW",
          "6: BOGUS_INFO",
          "8: BOGUS_FALLBACK",
          "12: BOGUS_THEN",
          "12: EXIT_CODE",
          "13: GONE_AWAY",
          "14: TIMEOUT",
          "15: BOGUS_A",
          "15: CANCELLED",
          "20: Error",
        ],
      );
      assert.deepEqual(unknownErrorTypes(found), [
        "src/a.ts:3: BOGUS_TERMINAL",
        "src/a.ts:4: TaskErrorType.NOT_A_TYPE",
        "src/a.ts:5: BOGUS_NEW",
        "src/a.ts:6: BOGUS_INFO",
        "src/a.ts:8: BOGUS_FALLBACK",
        "src/a.ts:12: BOGUS_THEN",
        "src/a.ts:13: GONE_AWAY",
        "src/a.ts:15: BOGUS_A",
      ]);
    });

    it("accepts HTTP_<status> and a template only as that family", () => {
      write("t/b.ts", 'TaskError.terminal("HTTP_404", "m");\nTaskError.terminal(`HTTP_${status}`, "m");\n');
      assert.deepEqual(unknownErrorTypes(producedErrorTypes(dir, ["t"])), ["t/b.ts:2: `HTTP_${status}`"]);
    });
  });

  describe("the README table", () => {
    const table = (rows: string[]): string =>
      [
        "## Failure is a normal path",
        "",
        README_HEADING,
        "",
        "What each type means.",
        "",
        "| Type | Produced by | When | Retried by default | details |",
        "| --- | --- | --- | --- | --- |",
        ...rows.map((r) => `| ${r} | scheduler | then | yes | - |`),
        "",
        "## Performance",
      ].join("\n");

    it("reads the first code span of each row, after prose", () => {
      assert.deepEqual(readmeErrorTypes(table(["`TIMEOUT`", "`HTTP_<status>` (e.g. `HTTP_503`)", "plain"])), [
        "TIMEOUT",
        "HTTP_<status>",
        "plain",
      ]);
    });

    it("is missing without the heading, or without a table under it", () => {
      assert.equal(
        readmeErrorTypes("## Failure is a normal path\n\n| Type |\n| --- |\n| `X` |\n"),
        undefined,
      );
      assert.equal(
        readmeErrorTypes(`${README_HEADING}\n\nNo table.\n\n## Next\n\n| a |\n| - |\n| b |\n`),
        undefined,
      );
    });
  });
});
