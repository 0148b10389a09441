/** One command's help, cut from the CLI's usage (usage.ts), and the arguments that ask for it. */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { runNexusflow } from "./testing.js";
import { COMMANDS, OPERATOR_USAGE, USAGE, commandUsage, wantsHelp } from "./usage.js";

describe("a command's help", () => {
  it("has every line of the usage that names the command, and nothing of another", () => {
    const entries = (text: string): string[] => text.split("\n").filter((l) => /^ {2}\S/.test(l));
    const all = entries(USAGE).filter((l) => !l.startsWith("  --") && !l.startsWith("  help "));
    const covered = new Set<string>();
    for (const command of COMMANDS) {
      const usage = commandUsage(command);
      assert.ok(usage !== undefined, command);
      for (const line of entries(usage).filter((l) => !l.startsWith("  --"))) {
        assert.equal(line.slice(2).split(" ", 1)[0], command, `${command}: ${line}`);
        covered.add(line);
      }
    }
    // Every command in the usage is one of COMMANDS: none is left without its help.
    assert.deepEqual(
      all.filter((l) => !covered.has(l)),
      [],
    );
  });

  it("exists for every command the CLI dispatches (main.ts), so that its --help is never 'unknown command'", async () => {
    // COMMANDS is read from the usage text: what could be missing is a dispatched command that the
    // usage does not describe.
    const main = await readFile(fileURLToPath(new URL("./main.ts", import.meta.url)), "utf8");
    const dispatched = [...main.matchAll(/^ {2}case "([a-z]+)":/gm)].map((m) => m[1] as string);
    assert.ok(dispatched.includes("runs") && dispatched.length >= 12, dispatched.join(","));
    assert.deepEqual(
      dispatched.filter((c) => c !== "help" && commandUsage(c) === undefined),
      [],
    );
  });

  it("keeps each entry's lines below it, and the common options for gateway commands", () => {
    const runs = commandUsage("runs") ?? "";
    assert.match(runs, /^ {2}runs rerun .*\n {30,}a new run from STEP/m);
    assert.match(runs, /^ {2}runs why .*\n {30,}why a step is not running/m);
    assert.match(runs, /Common options:\n {2}--address URL/);
    assert.doesNotMatch(runs, /schedules|Environment/);
    const events = commandUsage("events") ?? "";
    assert.match(events, /events tail .*\n {11}Print lifecycle events/);
    assert.match(events, /events publish/);
    const dev = commandUsage("dev") ?? "";
    assert.match(dev, /--schedulers N/);
    assert.doesNotMatch(dev, /Common options|executor \[/);
    assert.ok(USAGE.includes(OPERATOR_USAGE));
  });

  it("is asked for by --help or -h before --, and by nothing else", () => {
    assert.equal(wantsHelp(["list", "--help"]), true);
    assert.equal(wantsHelp(["-h"]), true);
    assert.equal(wantsHelp(["start", "wf", "--input", '{"a":"-h"}']), false);
    assert.equal(wantsHelp(["start", "wf", "--", "--help"]), false);
    assert.equal(wantsHelp([]), false);
    assert.equal(commandUsage("help"), undefined);
    assert.equal(commandUsage("bogus"), undefined);
  });

  it("prints from the command line, exit 0; an unknown command is a usage error", async () => {
    const runsUsage = commandUsage("runs");
    for (const args of [
      ["runs", "list", "--help"],
      ["runs", "-h"],
      ["help", "runs"],
      ["--help", "runs"],
    ]) {
      const r = await runNexusflow(args);
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stdout, runsUsage, args.join(" "));
    }
    const all = await runNexusflow(["help", "help"]);
    assert.equal(all.code, 0);
    assert.equal(all.stdout, USAGE);
    // A usage error names the command's help.
    const missing = await runNexusflow(["runs", "get"]);
    assert.equal(missing.code, 2);
    assert.equal(
      missing.stderr,
      'nexusflow: runs get: expected <run-id>\nRun "nexusflow help runs" for usage.\n',
    );
    for (const args of [
      ["bogus", "--help"],
      ["help", "bogus"],
    ]) {
      const r = await runNexusflow(args);
      assert.equal(r.code, 2, args.join(" "));
      assert.match(r.stderr, /unknown command "bogus"/);
      assert.equal(r.stdout, "");
    }
  });
});
