import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { type Link, creditGrants, creditWithdrawals, newLink } from "./replica-links.js";

function link(id: string, credit: number, running: number): Link {
  const l = newLink(id, false, `${id}:1`, {} as grpc.Client, new AbortController());
  l.replicaId = id;
  l.credit = credit;
  l.running = running;
  return l;
}

const byId = (m: Map<Link, number>): Record<string, number> =>
  Object.fromEntries([...m].map(([l, n]) => [l.id, n]));

void describe("credit across the sessions to several replicas", () => {
  it("one session gets every free slot, as with a single scheduler", () => {
    const a = link("a", 3, 2);
    assert.deepEqual(byId(creditGrants([a], 5, 10, () => 16)), { a: 5 });
  });

  it("free slots go to the replicas furthest below their share, by partitions held", () => {
    const a = link("a", 0, 0);
    const b = link("b", 0, 0);
    const weights: Record<string, number> = { a: 12, b: 4 };
    assert.deepEqual(byId(creditGrants([a, b], 8, 8, (l) => weights[l.id] ?? 0)), { a: 6, b: 2 });
    // b already runs 2 and holds 1 credit: the one free slot goes to a.
    const c = link("a", 4, 0);
    const d = link("b", 1, 2);
    assert.deepEqual(byId(creditGrants([c, d], 1, 8, (l) => weights[l.id] ?? 0)), { a: 1 });
    // No weight known (no map yet): equal shares.
    assert.deepEqual(byId(creditGrants([link("a", 0, 0), link("b", 0, 0)], 4, 4, () => 0)), { a: 2, b: 2 });
  });

  it("unspent credit above a share is taken back only as far as another session lacks its share", () => {
    // A held every slot before B was reached; B holds half the partitions.
    const a = link("a", 8, 0);
    const b = link("b", 0, 0);
    assert.deepEqual(byId(creditWithdrawals([a, b], 0, 8, () => 8)), { a: 4 });
    // Running attempts are not taken back: A runs 6 and holds 2 credit; B lacks 4, gets at most 2.
    assert.deepEqual(byId(creditWithdrawals([link("a", 2, 6), link("b", 0, 0)], 0, 8, () => 8)), { a: 2 });
    // Free slots cover what B lacks: nothing is withdrawn.
    assert.deepEqual(byId(creditWithdrawals([link("a", 4, 0), link("b", 0, 0)], 4, 8, () => 8)), {});
    // One session: never.
    assert.deepEqual(byId(creditWithdrawals([link("a", 8, 0)], 0, 8, () => 8)), {});
  });
});
