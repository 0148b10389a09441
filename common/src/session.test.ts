/** Batch bounds and framing of the executor session (session.ts). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  CompletedSchema,
  type Lease,
  LeaseSchema,
  ReportSchema,
  SessionRequestSchema,
  SessionResponseSchema,
  StartedSchema,
} from "@nexusflow/gen";
import {
  ELEMENT_FOLDERS_VERSION,
  MIN_SESSION_PROTOCOL_VERSION,
  SESSION_PROTOCOL_VERSION,
  acknowledgedReports,
  encodeBatch,
  refusedVersionRange,
  splitBatches,
  versionRefusal,
  type EncodedItem,
} from "./session.js";

const lease = (i: number, pad = 0): EncodedItem => ({
  single: SessionResponseSchema.field.lease.number,
  item: 0,
  bytes: toBinary(
    LeaseSchema,
    create(LeaseSchema, {
      key: { taskRunId: `t${i}`, attempt: 1, fencingToken: BigInt(i) },
      stepId: "x".repeat(pad),
    }),
  ),
});

describe("session batches", () => {
  it("splits items in order by count", () => {
    const items = Array.from({ length: 7 }, (_, i) => lease(i));
    const batches = splitBatches(items, { maxItems: 3, maxBytes: 1 << 20 });
    assert.deepEqual(
      batches.map((b) => b.length),
      [3, 3, 1],
    );
    assert.deepEqual(batches.flat(), items, "every item once, in order");
  });

  it("splits by bytes, framing included, and sends an item larger than the bound alone", () => {
    const items = [lease(0, 400), lease(1, 400), lease(2, 5000), lease(3, 10), lease(4, 10)];
    const maxBytes = 1000;
    const batches = splitBatches(items, { maxItems: 100, maxBytes });
    assert.deepEqual(
      batches.map((b) => b.length),
      [2, 1, 2],
    );
    for (const batch of batches) {
      const frame = encodeBatch(batch, SessionResponseSchema.field.leases.number);
      if (batch.length > 1) assert.ok(frame.byteLength <= maxBytes, `${frame.byteLength} bytes`);
    }
    assert.deepEqual(splitBatches([], { maxItems: 1, maxBytes: 1 }), []);
  });

  it("frames one lease as a Lease and several as a LeaseBatch, decoded as if encoded whole", () => {
    const one = fromBinary(
      SessionResponseSchema,
      encodeBatch([lease(1)], SessionResponseSchema.field.leases.number),
    );
    assert.equal(one.message.case, "lease");
    assert.equal(one.message.value?.key?.taskRunId, "t1");
    const many = fromBinary(
      SessionResponseSchema,
      encodeBatch([lease(1), lease(2), lease(3)], SessionResponseSchema.field.leases.number),
    );
    assert.equal(many.message.case, "leases");
    assert.deepEqual(
      many.message.value?.leases.map((l) => l.key?.taskRunId),
      ["t1", "t2", "t3"],
    );
  });

  it("encodes byte for byte what toBinary encodes for the whole message, at every length boundary", () => {
    // Every length of an item, an entry and a batch from just below to just above each change of
    // a varint's width (127/128, 16383/16384), and one far above.
    const pads = [
      ...Array.from({ length: 48 }, (_, i) => 90 + i),
      ...Array.from({ length: 48 }, (_, i) => 16_330 + i),
      200_000,
    ];
    const asLease = (l: EncodedItem): Lease => fromBinary(LeaseSchema, l.bytes);
    for (const pad of pads)
      for (const items of [[lease(1, pad)], [lease(0), lease(1, pad)], [lease(1, pad), lease(2, pad)]]) {
        const expected = toBinary(
          SessionResponseSchema,
          create(SessionResponseSchema, {
            message:
              items.length === 1
                ? { case: "lease", value: asLease(items[0] as EncodedItem) }
                : { case: "leases", value: { leases: items.map(asLease) } },
          }),
        );
        assert.deepEqual(
          encodeBatch(items, SessionResponseSchema.field.leases.number),
          expected,
          `${items.length} leases, pad ${pad}`,
        );
      }
    const completed = (pad: number): EncodedItem => ({
      single: SessionRequestSchema.field.completed.number,
      item: ReportSchema.field.completed.number,
      bytes: toBinary(
        CompletedSchema,
        create(CompletedSchema, { key: { taskRunId: "c" }, outputRef: { key: "r".repeat(pad) } }),
      ),
    });
    for (const pad of pads) {
      const reports = [completed(0), completed(pad)];
      const expected = toBinary(
        SessionRequestSchema,
        create(SessionRequestSchema, {
          message: {
            case: "reports",
            value: {
              items: reports.map((r) => ({
                report: { case: "completed" as const, value: fromBinary(CompletedSchema, r.bytes) },
              })),
            },
          },
        }),
      );
      assert.deepEqual(
        encodeBatch(reports, SessionRequestSchema.field.reports.number),
        expected,
        `reports, pad ${pad}`,
      );
    }
  });

  it("frames reports as their single message or as Reports items, and counts them as Acked does", () => {
    const completed: EncodedItem = {
      single: SessionRequestSchema.field.completed.number,
      item: ReportSchema.field.completed.number,
      bytes: toBinary(CompletedSchema, create(CompletedSchema, { key: { taskRunId: "c" } })),
    };
    const started: EncodedItem = {
      single: SessionRequestSchema.field.started.number,
      item: ReportSchema.field.started.number,
      bytes: toBinary(StartedSchema, create(StartedSchema, { key: { taskRunId: "s" } })),
    };
    const alone = fromBinary(
      SessionRequestSchema,
      encodeBatch([started], SessionRequestSchema.field.reports.number),
    );
    assert.equal(alone.message.case, "started");
    assert.equal(acknowledgedReports(alone.message), 0);
    const batch = fromBinary(
      SessionRequestSchema,
      encodeBatch([started, completed, completed], SessionRequestSchema.field.reports.number),
    );
    assert.equal(batch.message.case, "reports");
    assert.deepEqual(
      batch.message.value?.items.map((i) => [i.report.case, i.report.value?.key?.taskRunId]),
      [
        ["started", "s"],
        ["completed", "c"],
        ["completed", "c"],
      ],
    );
    assert.equal(acknowledgedReports(batch.message), 2);
  });
});

describe("session protocol version refusals", () => {
  it("names the versions the scheduler speaks, in the text schedulers have sent since version 2", () => {
    // A version 2 scheduler's refusal, word for word: executors parse it.
    const older =
      "attach.protocol_version: the executor speaks session protocol version 3, this scheduler versions 1 to 2; " +
      "upgrade the scheduler or run an executor release that speaks one of those";
    assert.equal(versionRefusal(3, 1, 2), older);
    assert.deepEqual(refusedVersionRange(older), { min: 1, max: 2 });
    assert.deepEqual(refusedVersionRange(versionRefusal(99)), {
      min: MIN_SESSION_PROTOCOL_VERSION,
      max: SESSION_PROTOCOL_VERSION,
    });
  });

  it("tells a version refusal without the versions from any other refusal", () => {
    assert.deepEqual(refusedVersionRange("attach.protocol_version: not spoken here"), {});
    assert.deepEqual(refusedVersionRange("attach.protocol_version: this scheduler versions 3 to 1"), {});
    assert.equal(refusedVersionRange("the first message of a session must be attach"), undefined);
    assert.equal(refusedVersionRange("attach.executor_id: this scheduler versions 1 to 2"), undefined);
  });

  it("gives map elements their own folders from version 3", () => {
    assert.equal(ELEMENT_FOLDERS_VERSION, 3);
    assert.ok(SESSION_PROTOCOL_VERSION >= ELEMENT_FOLDERS_VERSION);
  });
});
