import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { clock, formatChildLine, parseLogLine } from "./log-format.js";
import { createStyle } from "./style.js";

const plain = createStyle(false);

describe("formatChildLine", () => {
  it("turns a pino line into time, level, source, message and fields", () => {
    const time = Date.UTC(2026, 10, 26, 10, 0, 1, 234);
    const line = JSON.stringify({
      level: 30,
      time,
      pid: 1,
      hostname: "h",
      service: "scheduler",
      name: "scheduler",
      msg: "run started",
      runId: "r-1",
      note: "two words",
      n: 3,
      types: ["a", "b"],
    });
    assert.equal(
      formatChildLine("scheduler", line, "stdout", plain),
      `${clock(new Date(time))} INFO  [scheduler] run started runId=r-1 note="two words" n=3 types=["a","b"]`,
    );
  });

  it("shows an error's type and message, and its stack at level error and above", () => {
    const err = { type: "Error", message: "boom", stack: "Error: boom\n    at f (x.ts:1:1)" };
    const warn = formatChildLine(
      "gateway",
      JSON.stringify({ level: 40, time: 0, msg: "careful", err }),
      "stdout",
      plain,
    );
    assert.match(warn, /WARN {2}\[gateway\] careful err="Error: boom"$/);
    const error = formatChildLine(
      "gateway",
      JSON.stringify({ level: 50, time: 0, msg: "failed", err }),
      "stdout",
      plain,
    );
    assert.deepEqual(error.split("\n").slice(1), ["    at f (x.ts:1:1)"]);
  });

  it("passes other text through behind the source tag", () => {
    assert.equal(formatChildLine("executor-1", "plain text {", "stderr", plain), "[executor-1] plain text {");
    assert.equal(parseLogLine("[1, 2]"), undefined);
    assert.equal(parseLogLine("{not json"), undefined);
  });
});
