/** sharedView: one read for the calls in flight and within the maximum age; a failed read is not kept. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ClusterView } from "../cluster/cluster-view.js";
import { sharedView } from "./replica-service.js";

function view(n: number): ClusterView {
  return { partitionCount: n, replicas: [], unowned: [], readAt: new Date() };
}

describe("sharedView", () => {
  it("shares one read among concurrent calls and reuses it within the age, then reads again", async () => {
    let reads = 0;
    let now = 0;
    const realNow = performance.now.bind(performance);
    performance.now = () => now;
    try {
      const get = sharedView(() => Promise.resolve(view(++reads)), 250);
      const [a, b] = await Promise.all([get(), get()]);
      assert.equal(reads, 1);
      assert.equal(a, b);
      now = 249;
      assert.equal((await get()).partitionCount, 1);
      now = 250;
      assert.equal((await get()).partitionCount, 2);
      assert.equal(reads, 2);
    } finally {
      performance.now = realNow;
    }
  });

  it("does not keep a failed read", async () => {
    let fail = true;
    const get = sharedView(
      () => (fail ? Promise.reject(new Error("down")) : Promise.resolve(view(16))),
      60_000,
    );
    await assert.rejects(get(), /down/);
    fail = false;
    assert.equal((await get()).partitionCount, 16);
  });
});
