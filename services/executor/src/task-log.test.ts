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

  it("works through methods taken off it, as a handler may (`const { info } = ctx.log`)", () => {
    const { log, lines } = open();
    const { info, warn, error, write, end } = log;
    write("stdout", "x");
    info("i");
    warn("w", { a: 1 });
    error("e");
    end();
    info("after end");
    assert.deepEqual(lines(), [
      ["log", "info", "i"],
      ["log", "warn", "w"],
      ["log", "error", "e"],
      ["stdout", "", "x"],
    ]);
    assert.equal(log.info, info, "one function per method and attempt");
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

  it("keeps at most 1 MiB of lines per attempt by default (its fields counted), then counts the rest", () => {
    const sink = new MemoryLogSink();
    const log = createTaskLog(
      sink.open({ runId: "r", stepId: "s", taskRunId: "t", attempt: 3, taskType: "x" }),
      3,
    );
    log.info("é", { k: "v" }); // 2 bytes of text, 9 of fields
    // 16 lines of 64 Ki characters take 1 MiB: the 16th passes it with the first line's 11 bytes.
    for (let i = 0; i < 20; i++) log.write("stdout", `${String(i % 10).repeat(MAX_LINE_CHARS)}\n`);
    log.info("small, but after lines that were dropped");
    const kept = sink.get("t", 3);
    assert.equal(kept?.lines.length, 16);
    assert.equal(kept?.bytes, 11 + 15 * MAX_LINE_CHARS);
    assert.equal(kept?.dropped, 6);
    const tight = new MemoryLogSink({ maxBytesPerAttempt: 10 });
    const small = tight.open({ runId: "r", stepId: "s", taskRunId: "t", attempt: 1, taskType: "x" });
    for (const text of ["0123456789", "x", ""])
      small.append({ time: new Date(), stream: "log", level: "info", text, attempt: 1 });
    assert.deepEqual(
      tight.get("t", 1)?.lines.map((l) => l.text),
      ["0123456789"],
    );
    assert.equal(tight.get("t", 1)?.dropped, 2);
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
