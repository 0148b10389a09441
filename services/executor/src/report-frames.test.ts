import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import { create, fromBinary } from "@bufbuild/protobuf";
import {
  CompletedSchema,
  HeartbeatSchema,
  ReleaseSchema,
  type SessionRequest,
  SessionRequestSchema,
  StartedSchema,
} from "@nexusflow/gen";
import { type BatchableMessage, ReportFrames } from "./report-frames.js";

const key = (id: string) => ({ taskRunId: id, attempt: 1, fencingToken: 1n });
const completed = (id: string): BatchableMessage => ({
  case: "completed",
  value: create(CompletedSchema, { key: key(id) }),
});
const started = (id: string): BatchableMessage => ({
  case: "started",
  value: create(StartedSchema, { key: key(id) }),
});

/** What was written, decoded: each message's case, and a Reports' items as `case:id`. */
function written(frames: Uint8Array[]): string[][] {
  return frames.map((bytes) => {
    const m: SessionRequest["message"] = fromBinary(SessionRequestSchema, bytes).message;
    if (m.case === "reports")
      return m.value.items.map((i) => `${i.report.case}:${i.report.value?.key?.taskRunId}`);
    return [`single ${m.case}:${(m.value as { key?: { taskRunId: string } }).key?.taskRunId}`];
  });
}

describe("ReportFrames", () => {
  it("writes a turn's reports at its end, in order, in one Reports message", async () => {
    const frames: Uint8Array[] = [];
    const batch = new ReportFrames((f) => frames.push(f));
    batch.add(started("a"));
    batch.add(completed("b"));
    batch.add({ case: "heartbeat", value: create(HeartbeatSchema, { key: key("a") }) });
    batch.add({ case: "release", value: create(ReleaseSchema, { key: key("c"), reason: "r" }) });
    assert.equal(frames.length, 0, "nothing before the end of the turn");
    assert.equal(batch.pending, 4);
    await nextTurn();
    assert.deepEqual(written(frames), [["started:a", "completed:b", "heartbeat:a", "release:c"]]);
    assert.equal(batch.pending, 0);
  });

  it("writes a lone report as the message it would be alone", async () => {
    const frames: Uint8Array[] = [];
    const batch = new ReportFrames((f) => frames.push(f));
    batch.add(completed("x"));
    await nextTurn();
    assert.deepEqual(written(frames), [["single completed:x"]]);
  });

  it("splits by count and by bytes", async () => {
    const frames: Uint8Array[] = [];
    const byCount = new ReportFrames((f) => frames.push(f), { maxItems: 2, maxBytes: 1 << 20 });
    for (const id of ["1", "2", "3", "4", "5"]) byCount.add(completed(id));
    await nextTurn();
    assert.deepEqual(written(frames), [
      ["completed:1", "completed:2"],
      ["completed:3", "completed:4"],
      ["single completed:5"],
    ]);
    frames.length = 0;
    const big = "x".repeat(600);
    const byBytes = new ReportFrames((f) => frames.push(f), { maxItems: 100, maxBytes: 1_000 });
    for (const id of ["a", "b", "c"]) byBytes.add(completed(`${id}${big}`));
    await nextTurn();
    assert.deepEqual(
      frames.map((f) => f.byteLength <= 1_000 + 20),
      [true, true, true],
    );
    assert.equal(frames.length, 3, "each 600-byte report alone under a 1,000-byte bound");
  });

  it("writes at once on flush(), and forgets on discard()", async () => {
    const frames: Uint8Array[] = [];
    const batch = new ReportFrames((f) => frames.push(f));
    batch.add(started("a"));
    batch.add(started("b"));
    batch.flush();
    assert.deepEqual(written(frames), [["started:a", "started:b"]]);
    batch.add(started("c"));
    batch.discard();
    await nextTurn();
    assert.equal(frames.length, 1, "the discarded report is not written");
  });
});
