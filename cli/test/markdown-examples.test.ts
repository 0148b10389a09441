/** The Markdown side of the documentation test: which blocks run, and what their comments say. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ExampleSyntaxError, extractExamples, withAddresses } from "./markdown-examples.js";

describe("extractExamples", () => {
  it("takes shell, TypeScript and JSON blocks with the comments right above them", () => {
    const md = [
      "# Title",
      "<!-- example: expect: /ok/i -->",
      "<!-- example: exit: 1 -->",
      "```sh",
      "echo OK",
      "```",
      "",
      "```",
      "a folder tree, never run",
      "```",
      "- in a list:",
      "  <!-- example: background: /listening/ -->",
      "  ```ts",
      "  await start();",
      "  ```",
      "<!-- example: definition -->",
      "~~~json",
      "{}",
      "~~~",
    ].join("\n");
    const [sh, ts, json, ...rest] = extractExamples("X.md", md);
    assert.equal(rest.length, 0);
    assert.deepEqual([sh?.kind, sh?.line, sh?.code, sh?.exit], ["shell", 4, "echo OK", 1]);
    assert.equal(sh?.expect[0]?.test("ok"), true);
    assert.deepEqual(
      [ts?.kind, ts?.code, String(ts?.background)],
      ["typescript", "await start();", "/listening/"],
    );
    assert.deepEqual([json?.kind, json?.definition], ["json", true]);
  });

  it("forgets comments that prose separates from a block", () => {
    const [sh] = extractExamples("X.md", "<!-- example: skip: later -->\nSome text.\n```sh\ntrue\n```\n");
    assert.equal(sh?.skip, undefined);
  });

  it("names the file and line of a directive it cannot read", () => {
    const bad = (md: string, message: RegExp): void =>
      assert.throws(
        () => extractExamples("X.md", md),
        (e) => e instanceof ExampleSyntaxError && message.test(e.message),
      );
    bad("<!-- example: skip -->\n```sh\ntrue\n```\n", /X\.md:2: skip needs a reason/);
    bad("<!-- example: expect: ok -->\n```sh\ntrue\n```\n", /X\.md:2: expected \/regex\//);
    bad("<!-- example: wait -->\n```sh\ntrue\n```\n", /unknown directive "wait"/);
    bad("<!-- example: exit: -1 -->\n```sh\ntrue\n```\n", /exit needs a status/);
    bad("<!-- example: definition -->\n```text\nx\n```\n", /directives on a block that never runs/);
    bad("```sh\ntrue\n", /X\.md:1: code block is never closed/);
  });
});

describe("withAddresses", () => {
  it("points the documented default addresses at the test stack", () => {
    const map = { gateway: "127.0.0.1:41000", scheduler: "127.0.0.1:41001" };
    assert.equal(
      withAddresses("curl localhost:8080/v1 http://127.0.0.1:8080/x 127.0.0.1:50051 1:80800", map),
      "curl 127.0.0.1:41000/v1 http://127.0.0.1:41000/x 127.0.0.1:41001 1:80800",
    );
  });
});
