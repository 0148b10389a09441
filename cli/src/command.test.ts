/** Usage errors of the operator commands: one line each, saying what to type instead. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { COMMON_OPTIONS, UsageError, parse, positionals } from "./command.js";
import { readJson } from "./runs-command.js";

/** The message of the UsageError that `fn` throws. */
function usageMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof UsageError, `a UsageError, got ${String(e)}`);
    return e.message;
  }
  assert.fail("no error");
}

const OPTIONS = {
  ...COMMON_OPTIONS,
  limit: { type: "string" },
  input: { type: "string", short: "i" },
} as const;

function parseUsage(args: string[]): string {
  return usageMessage(() => parse({ args, allowPositionals: true, options: OPTIONS }));
}

describe("usage errors of the operator commands", () => {
  it("are one line for every kind of bad option", () => {
    for (const args of [["--limit", "-3"], ["-i", "-1"], ["--input"], ["-i"], ["--bogus"], ["-x"]]) {
      const message = parseUsage(args);
      assert.doesNotMatch(message, /\n/, `${JSON.stringify(args)}: ${message}`);
    }
  });

  it("say how to give a value that starts with a dash", () => {
    assert.equal(
      parseUsage(["--limit", "-3"]),
      '--limit: a value that starts with "-" must be written --limit=-3',
    );
    assert.equal(
      parseUsage(["-i", "-1"]),
      '--input: a value that starts with "-" must be written --input=-1',
    );
    // Written that way, the value reaches the command, which checks it.
    assert.equal(parse({ args: ["--limit=-3"], options: OPTIONS }).values.limit, "-3");
  });

  it("name a missing value and an unknown option plainly", () => {
    assert.equal(parseUsage(["--input"]), "--input needs a value");
    assert.equal(parseUsage(["-i"]), "--input needs a value");
    assert.equal(
      parseUsage(["--bogus"]),
      'unknown option --bogus (an argument that starts with "-" goes after --)',
    );
  });

  it("say that a command takes no arguments when it takes none", () => {
    assert.equal(
      usageMessage(() => positionals(["extra"], [], "cluster")),
      'cluster: takes no arguments, got ["extra"]',
    );
    assert.deepEqual(positionals([], [], "cluster"), []);
    assert.equal(
      usageMessage(() => positionals([], ["run-id"], "runs get")),
      "runs get: expected <run-id>",
    );
  });

  it("refuse JSON the API cannot hold (nested past 100 levels) as a usage error naming the flag", async () => {
    const deep = `${"[".repeat(150)}${"]".repeat(150)}`;
    await assert.rejects(
      readJson(deep, "--payload"),
      (e: unknown) => e instanceof UsageError && /^--payload cannot be sent: .*depth/.test(e.message),
    );
    assert.deepEqual(await readJson('{"a":[[1]]}', "--input"), { a: [[1]] });
    await assert.rejects(
      readJson("{nope", "--input"),
      (e: unknown) => e instanceof UsageError && /^--input is not JSON/.test(e.message),
    );
  });
});
