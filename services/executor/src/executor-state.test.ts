import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  type Run,
  type State,
  type StartWaiter,
  attached,
  attachedBefore,
  closing,
  draining,
  opened,
  publicState,
  reconnects,
  sessionEnded,
  sessionOf,
  stopReason,
  takesWork,
} from "./executor-state.js";

/** Sessions are plain strings here: the rules do not look into them. */
type S = string;

const run: Run = {
  client: new grpc.Client("127.0.0.1:1", grpc.credentials.createInsecure()),
  closing: new AbortController(),
  loop: Promise.resolve(),
  sessions: 0,
};
const start: StartWaiter = { resolve: () => {}, reject: () => {} };
const connecting: State<S> = { t: "connecting", run, session: undefined, start };

describe("executor state", () => {
  after(() => run.client.close());

  it("connects, attaches, and after a lost session reconnects as one that attached before", () => {
    const opening = opened(connecting, "s1");
    assert.equal(sessionOf(opening), "s1");
    assert.deepEqual([publicState(opening), attachedBefore(opening)], ["CONNECTING", false]);

    const up = attached(opening);
    assert.equal(up.t, "attached");
    assert.deepEqual(
      [publicState(up), sessionOf(up), attachedBefore(up), takesWork(up)],
      ["ATTACHED", "s1", true, true],
    );
    assert.deepEqual([stopReason(opening), stopReason(up)], [undefined, undefined]);

    const lost = sessionEnded(up);
    assert.equal(lost.t, "connecting");
    assert.deepEqual([sessionOf(lost), attachedBefore(lost), reconnects(lost)], [undefined, true, true]);
    assert.equal(lost.t === "connecting" ? lost.start : "?", undefined, "start() was settled on attach");
  });

  it("a session that ends before its AttachAck leaves start() pending", () => {
    const failed = sessionEnded(opened(connecting, "s1"));
    assert.deepEqual(failed, connecting);
    assert.equal(attachedBefore(failed), false);
  });

  it("drains with its reason, keeps reconnecting to deliver reports, and remembers an attach", () => {
    const before = draining(opened(connecting, "s1"), "SIGTERM");
    assert.equal(before.t, "draining");
    assert.deepEqual(
      [publicState(before), sessionOf(before), attachedBefore(before), reconnects(before), takesWork(before)],
      ["DRAINING", "s1", false, true, false],
    );
    assert.equal(before.t === "draining" && before.reason, "SIGTERM");
    assert.equal(stopReason(before), "SIGTERM", "leases that come now are released with it");

    const reattached = attached(opened(sessionEnded(before), "s2"));
    assert.deepEqual(
      [reattached.t, sessionOf(reattached), attachedBefore(reattached)],
      ["draining", "s2", true],
    );
    assert.equal(draining(reattached, "again"), reattached, "stop() drains once");
  });

  it("closing keeps the session until it ends, then stops reconnecting; DRAINING is shown throughout", () => {
    const closed = closing(draining(attached(opened(connecting, "s1")), "stop"));
    assert.deepEqual(
      [closed.t, publicState(closed), sessionOf(closed), reconnects(closed), takesWork(closed)],
      ["closing", "DRAINING", "s1", false, false],
    );
    assert.equal(stopReason(closed), "stop");
    const ended = sessionEnded(closed);
    assert.deepEqual([ended.t, sessionOf(ended)], ["closing", undefined]);
    assert.equal(opened(ended, "s2"), ended, "no session is opened while closing");
  });

  it("idle and stopped hold nothing and ignore session events", () => {
    for (const state of [{ t: "idle" }, { t: "stopped" }] as const) {
      assert.equal(sessionOf(state), undefined);
      assert.equal(reconnects(state), false);
      assert.equal(stopReason(state), undefined);
      assert.equal(opened<S>(state, "s"), state);
      assert.equal(sessionEnded<S>(state), state);
      assert.equal(draining<S>(state, "stop"), state);
    }
    assert.deepEqual([publicState({ t: "idle" }), publicState({ t: "stopped" })], ["IDLE", "STOPPED"]);
  });
});
