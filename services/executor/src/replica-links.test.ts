import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import {
  IDLE_AFTER_MS,
  type Link,
  creditGrants,
  creditShares,
  creditWithdrawals,
  idleFloor,
  isIdle,
  newLink,
} from "./replica-links.js";

function link(id: string, credit: number, running: number): Link {
  const l = newLink(id, false, `${id}:1`, {} as grpc.Client, new AbortController());
  l.replicaId = id;
  l.credit = credit;
  l.running = running;
  return l;
}

const byId = (m: Map<Link, number>): Record<string, number> =>
  Object.fromEntries([...m].map(([l, n]) => [l.id, n]));

/** Grants of `free` of `slots` to `live`, shared by `weightOf` (no link idle). */
const grants = (live: Link[], free: number, slots: number, weightOf: (l: Link) => number) =>
  creditGrants(live, free, creditShares(live, slots, weightOf));
/** Withdrawals, shared by `weightOf` (no link idle). */
const withdrawals = (live: Link[], free: number, slots: number, weightOf: (l: Link) => number) =>
  creditWithdrawals(live, free, creditShares(live, slots, weightOf));

void describe("credit across the sessions to several replicas", () => {
  it("one session gets every free slot, as with a single scheduler", () => {
    const a = link("a", 3, 2);
    assert.deepEqual(byId(grants([a], 5, 10, () => 16)), { a: 5 });
  });

  it("free slots go to the replicas furthest below their share, by partitions held", () => {
    const a = link("a", 0, 0);
    const b = link("b", 0, 0);
    const weights: Record<string, number> = { a: 12, b: 4 };
    assert.deepEqual(byId(grants([a, b], 8, 8, (l) => weights[l.id] ?? 0)), { a: 6, b: 2 });
    // b already runs 2 and holds 1 credit: the one free slot goes to a.
    const c = link("a", 4, 0);
    const d = link("b", 1, 2);
    assert.deepEqual(byId(grants([c, d], 1, 8, (l) => weights[l.id] ?? 0)), { a: 1 });
    // No weight known (no map yet): equal shares.
    assert.deepEqual(byId(grants([link("a", 0, 0), link("b", 0, 0)], 4, 4, () => 0)), { a: 2, b: 2 });
  });

  it("unspent credit above a share is taken back only as far as another session lacks its share", () => {
    // A held every slot before B was reached; B holds half the partitions.
    const a = link("a", 8, 0);
    const b = link("b", 0, 0);
    assert.deepEqual(byId(withdrawals([a, b], 0, 8, () => 8)), { a: 4 });
    // Running attempts are not taken back: A runs 6 and holds 2 credit; B lacks 4, gets at most 2.
    assert.deepEqual(byId(withdrawals([link("a", 2, 6), link("b", 0, 0)], 0, 8, () => 8)), { a: 2 });
    // Free slots cover what B lacks: nothing is withdrawn.
    assert.deepEqual(byId(withdrawals([link("a", 4, 0), link("b", 0, 0)], 4, 8, () => 8)), {});
    // One session: never.
    assert.deepEqual(byId(withdrawals([link("a", 8, 0)], 0, 8, () => 8)), {});
  });

  it("counts a link idle once it held credit for IDLE_AFTER_MS with no lease", () => {
    const a = link("a", 2, 0);
    a.lastLeaseAt = 1_000;
    assert.equal(isIdle(a, 1_000 + IDLE_AFTER_MS - 1), false);
    assert.equal(isIdle(a, 1_000 + IDLE_AFTER_MS), true);
    // No credit held: every grant was spent, the replica has work.
    a.credit = 0;
    assert.equal(isIdle(a, 1_000 + 10 * IDLE_AFTER_MS), false);
  });

  it("gives an idle replica's share, but its floor, to the replicas with work", () => {
    const [a, b, c] = [link("a", 0, 0), link("b", 0, 0), link("c", 0, 0)];
    const weights: Record<string, number> = { a: 8, b: 4, c: 4 };
    const weightOf = (l: Link) => weights[l.id] ?? 0;
    // 64 slots: a 32, b 16, c 16 by partitions. a idle: it keeps 4, its other 28 go to b and c.
    assert.equal(idleFloor(64), 4);
    assert.deepEqual(
      creditShares([a, b, c], 64, weightOf, (l) => l === a),
      [4, 30, 30],
    );
    // Two idle: the one with work gets everything but their floors.
    assert.deepEqual(
      creditShares([a, b, c], 64, weightOf, (l) => l !== b),
      [4, 56, 4],
    );
    // Every one idle, or none: the shares by partitions.
    assert.deepEqual(
      creditShares([a, b, c], 64, weightOf, () => true),
      [32, 16, 16],
    );
    assert.deepEqual(creditShares([a, b, c], 64, weightOf), [32, 16, 16]);
    // An idle replica whose share is below the floor keeps it; the floor is at least one slot.
    assert.deepEqual(
      creditShares(
        [a, b],
        8,
        (l) => (l === a ? 1 : 15),
        (l) => l === a,
      ),
      [0.5, 7.5],
    );
    assert.equal(idleFloor(8), 1);
  });

  it("takes an idle replica's unspent credit back for a replica with work, leaving its floor", () => {
    // a holds 32 unspent and is idle; b runs 16 and lacks the rest of its share (28 more).
    const a = link("a", 32, 0);
    const b = link("b", 0, 16);
    const shares = creditShares(
      [a, b],
      64,
      () => 8,
      (l) => l === a,
    );
    assert.deepEqual(shares, [4, 60]);
    assert.deepEqual(byId(creditWithdrawals([a, b], 16, shares)), { a: 28 });
    // Then every free slot goes to b.
    a.credit = 4;
    assert.deepEqual(byId(creditGrants([a, b], 44, shares)), { b: 44 });
  });
});
