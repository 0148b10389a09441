import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ListReplicasResponseSchema } from "@nexusflow/gen";
import { ownerOfRun, partitionOfRun, replicaMapOf } from "./replica-map.js";

void describe("the replica map", () => {
  it("computes a run's partition as the scheduler does (last 8 hex digits mod P)", () => {
    assert.equal(partitionOfRun("0190c3b2-7a1e-7cc1-9f00-00000000000f", 16), 15);
    assert.equal(partitionOfRun("0190c3b2-7a1e-7cc1-9f00-0000ffffffff", 16), 0xffffffff % 16);
    assert.equal(partitionOfRun("0190c3b2-7a1e-7cc1-9f00-000000000011", 16), 1);
    assert.equal(partitionOfRun("not-a-uuid", 16), undefined);
    assert.equal(partitionOfRun("0190c3b2-7a1e-7cc1-9f00-00000000000f", 0), undefined);
  });

  it("keeps live replicas with an address (one holding no partition too), and the owner of each partition", () => {
    const map = replicaMapOf(
      create(ListReplicasResponseSchema, {
        partitionCount: 4,
        replicas: [
          { replicaId: "a", address: "a:1", live: true, partitions: [{ partition: 0 }, { partition: 1 }] },
          { replicaId: "b", address: "b:1", live: true, partitions: [{ partition: 2 }] },
          { replicaId: "silent", address: "s:1", live: false, partitions: [{ partition: 3 }] },
          { replicaId: "idle", address: "i:1", live: true, partitions: [] },
        ],
      }),
    );
    // The idle one gets a session, ready to lease partitions that move to it.
    assert.deepEqual([...map.replicas.keys()], ["a", "b", "idle"]);
    assert.equal(map.replicas.get("a")?.partitions, 2);
    assert.equal(map.replicas.get("idle")?.partitions, 0);
    assert.deepEqual(map.owners, ["a", "a", "b", undefined]);
    assert.equal(ownerOfRun(map, "0190c3b2-7a1e-7cc1-9f00-000000000006"), "b");
    assert.equal(ownerOfRun(map, "0190c3b2-7a1e-7cc1-9f00-000000000007"), undefined);
  });
});
