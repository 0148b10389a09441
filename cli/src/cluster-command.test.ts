/** `nexusflow cluster`'s formatting of partitions: ranges of one epoch. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { PartitionLeaseSchema } from "@nexusflow/gen";
import { formatPartitions } from "./cluster-command.js";

const lease = (partition: number, epoch: number) =>
  create(PartitionLeaseSchema, { partition, epoch: BigInt(epoch) });

describe("nexusflow cluster", () => {
  it("prints consecutive partitions of one epoch as a range, and none as a dash", () => {
    assert.equal(formatPartitions([]), "-");
    assert.equal(formatPartitions([lease(0, 1)]), "0 (1)");
    assert.equal(
      formatPartitions([lease(3, 2), lease(0, 1), lease(1, 1), lease(2, 1), lease(4, 2), lease(6, 2)]),
      "0-2 (1), 3-4 (2), 6 (2)",
    );
  });
});
