import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Logger } from "@nexusflow/common";
import { MemoryLogSink } from "./log-sink.js";
import { MAX_LINE_CHARS, createTaskLog } from "./task-log.js";

function open() {
  const sink = new MemoryLogSink({ maxLinesPerAttempt: 100 });
  const log = createTaskLog(
    sink.open({ runId: "r", stepId: "s", taskRunId: "t", attempt: 2, taskType: "x" }),
    2,
  );
  const lines = () => sink.get("t", 2)?.lines.map((l) => [l.stream, l.level, l.text]);
  return { log, lines, sink };
}

describe("createTaskLog", () => {
  it("splits written chunks into lines per stream and flushes the tail on end()", () => {
    const { log, lines } = open();
    log.write("stdout", "a\r\nb");
    log.write("stderr", "oops\n");
    log.write("stdout", "c\n\nd");
    log.info("hello", { n: 1 });
    log.end();
    log.write("stdout", "ignored after end\n");
    assert.deepEqual(lines(), [
      ["stdout", "", "a"],
      ["stderr", "", "oops"],
      ["stdout", "", "bc"],
      ["stdout", "", ""],
      ["log", "info", "hello"],
      ["stdout", "", "d"],
    ]);
  });

  it("cuts a line longer than MAX_LINE_CHARS", () => {
    const { log, lines } = open();
    log.write("stdout", "x".repeat(MAX_LINE_CHARS + 5));
    log.end();
    assert.deepEqual(
      lines()?.map(([, , text]) => text?.length),
      [MAX_LINE_CHARS, 5],
    );
  });

  it("keeps at most maxLinesPerAttempt lines and counts the rest", () => {
    const { log, sink } = open();
    for (let i = 0; i < 105; i++) log.warn(`line ${i}`);
    assert.equal(sink.get("t", 2)?.lines.length, 100);
    assert.equal(sink.get("t", 2)?.dropped, 5);
  });

  it("mirrors log lines to the executor's logger at debug, asking for it only when a line is written", () => {
    const sink = new MemoryLogSink({ maxLinesPerAttempt: 100 });
    const seen: unknown[] = [];
    let asked = 0;
    const mirror = (): Logger => {
      asked++;
      return { debug: (fields: unknown, text: string) => seen.push([fields, text]) } as unknown as Logger;
    };
    const log = createTaskLog(
      sink.open({ runId: "r", stepId: "s", taskRunId: "t", attempt: 1, taskType: "x" }),
      1,
      mirror,
    );
    assert.equal(asked, 0, "no logger is built for an attempt that logs nothing");
    log.info("charged", { amount: 3 });
    assert.equal(asked, 1);
    assert.deepEqual(seen, [[{ amount: 3, taskLevel: "info" }, "charged"]]);
  });
});
