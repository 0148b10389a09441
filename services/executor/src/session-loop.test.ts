import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { createLogger } from "@nexusflow/common";
import type { SessionEnd } from "./scheduler-session.js";
import { type SessionLoopOptions, runSessionLoop } from "./session-loop.js";

const refused = (code: grpc.status): SessionEnd => ({ attached: false, code, details: "no" });
const lost: SessionEnd = { attached: true, code: grpc.status.UNAVAILABLE, details: "gone" };

/** A loop whose sessions end as `ends` says, one after the other; it is wanted until they run out. */
function loop(ends: SessionEnd[], options: Partial<SessionLoopOptions> = {}) {
  const opened: string[] = [];
  let left = [...ends];
  const run = runSessionLoop({
    reconnect: { initialDelayMs: 1, maxDelayMs: 1 },
    logger: createLogger("test", "silent"),
    signal: new AbortController().signal,
    wanted: () => left.length > 0,
    attachedBefore: () => false,
    metadata: () => {
      const metadata = new grpc.Metadata();
      metadata.set("session", String(opened.length + 1));
      return metadata;
    },
    openSession: (metadata) => {
      opened.push(String(metadata.get("session")[0]));
      const [end, ...rest] = left;
      assert.ok(end);
      if (rest.length === 0)
        left = []; // the executor closes as the last session ends
      else left = rest;
      return Promise.resolve(end);
    },
    ...options,
  });
  return { run, opened };
}

describe("runSessionLoop", () => {
  it("opens one session after the other, each with metadata made for it, while sessions are wanted", async () => {
    const { run, opened } = loop([lost, refused(grpc.status.UNAVAILABLE), lost]);
    assert.equal(await run, undefined);
    assert.deepEqual(opened, ["1", "2", "3"]);
  });

  it("ends with the session the scheduler refused for good before the first attach", async () => {
    const { run, opened } = loop([
      refused(grpc.status.UNAVAILABLE),
      refused(grpc.status.UNAUTHENTICATED),
      lost,
    ]);
    assert.deepEqual(await run, refused(grpc.status.UNAUTHENTICATED));
    assert.deepEqual(opened, ["1", "2"]);
  });

  it("retries a fatal code once the executor has attached", async () => {
    const { run, opened } = loop([refused(grpc.status.PERMISSION_DENIED), lost], {
      attachedBefore: () => true,
    });
    assert.equal(await run, undefined);
    assert.deepEqual(opened, ["1", "2"]);
  });

  it("counts a metadata provider that throws as a session that could not attach, and tries again", async () => {
    let calls = 0;
    const { run, opened } = loop([lost], {
      metadata: () => {
        if (++calls === 1) throw new Error("the token file is not there yet");
        return new grpc.Metadata();
      },
    });
    assert.equal(await run, undefined);
    assert.equal(calls, 2);
    assert.equal(opened.length, 1);
  });
});
