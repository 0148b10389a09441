/** Started and Completed encoded by hand (report-encoding.ts) against toBinary. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Message, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import { type Timestamp, TimestampSchema, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { jsonToValue } from "@nexusflow/common";
import {
  type ArtifactRef,
  ArtifactRefSchema,
  type Completed,
  CompletedSchema,
  type LeaseKey,
  LeaseKeySchema,
  type LogRef,
  LogRefSchema,
  StartedSchema,
} from "@nexusflow/gen";
import { encodeCompleted, encodeStarted } from "./report-encoding.js";

const keys = [
  create(LeaseKeySchema),
  create(LeaseKeySchema, {
    taskRunId: "7f1c9a52-3c1e-4e53-9d0b-1c2d3e4f5a6b",
    attempt: 3,
    fencingToken: 2n ** 40n + 7n,
    runId: "0d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a",
  }),
  create(LeaseKeySchema, { taskRunId: "t", attempt: -1, fencingToken: -5n }),
  undefined,
];
const outputs = [
  undefined,
  jsonToValue(null),
  jsonToValue({ ok: true, n: -0.5, s: "é😀", list: [1, "two", null, { deep: [[]] }], "": {} }),
  jsonToValue("x".repeat(20_000)),
];
const outputRefs = [
  undefined,
  create(ArtifactRefSchema),
  create(ArtifactRefSchema, {
    key: "runs/r/s/attempt-1/output.json",
    name: "output.json",
    size: 3n * 2n ** 32n,
    contentType: "application/json",
    sha256: "ab".repeat(32),
    createTime: create(TimestampSchema, { seconds: 1_796_563_213n, nanos: 943_000_000 }),
  }),
  create(ArtifactRefSchema, { key: "k", createTime: create(TimestampSchema) }),
];
const logs = [
  undefined,
  create(LogRefSchema),
  create(LogRefSchema, { key: "runs/r/s/attempt-1/logs.jsonl", size: 1234n, lines: 2n ** 33n }),
];

describe("reports encoded by hand", () => {
  it("is toBinary's encoding of Started, for every kind of key", () => {
    for (const key of keys) {
      const m = create(StartedSchema, key === undefined ? {} : { key });
      assert.deepEqual(encodeStarted(m), toBinary(StartedSchema, m), JSON.stringify(key, String));
    }
  });

  it("is toBinary's encoding of Completed, for every field set or not, one after another", () => {
    let previous: { bytes: Uint8Array; copy: Uint8Array } | undefined;
    for (const key of keys)
      for (const output of outputs)
        for (const outputRef of outputRefs)
          for (const log of logs) {
            const m: Completed = create(CompletedSchema);
            if (key !== undefined) m.key = key;
            if (output !== undefined) m.output = output;
            if (outputRef !== undefined) m.outputRef = outputRef;
            if (log !== undefined) m.logs = log;
            const bytes = encodeCompleted(m);
            assert.deepEqual(bytes, toBinary(CompletedSchema, m));
            // What an earlier call returned is its own: the next report does not write over it.
            if (previous !== undefined) assert.deepEqual(previous.bytes, previous.copy);
            previous = { bytes, copy: bytes.slice() };
          }
  });

  it("keeps unknown fields, as toBinary does, wherever they are", () => {
    /** `message` decoded from its bytes and an unknown field 100 (a newer peer's). */
    const withUnknown = <T extends Message>(schema: GenMessage<T>, message: T): T => {
      const decoded = fromBinary(schema, new Uint8Array([...toBinary(schema, message), 0xa0, 0x06, 0x01]));
      assert.ok(decoded.$unknown !== undefined);
      return decoded;
    };
    const key = keys[1] as LeaseKey;
    const ref = outputRefs[2] as ArtifactRef;
    const log = logs[2] as LogRef;
    const full = (): Completed =>
      create(CompletedSchema, { key, output: outputs[2], outputRef: ref, logs: log });
    const cases: Completed[] = [
      withUnknown(CompletedSchema, full()),
      { ...full(), key: withUnknown(LeaseKeySchema, key) },
      { ...full(), output: withUnknown(ValueSchema, outputs[2] as Value) },
      { ...full(), outputRef: withUnknown(ArtifactRefSchema, ref) },
      {
        ...full(),
        outputRef: { ...ref, createTime: withUnknown(TimestampSchema, ref.createTime as Timestamp) },
      },
      { ...full(), logs: withUnknown(LogRefSchema, log) },
    ];
    for (const [i, m] of cases.entries())
      assert.deepEqual(encodeCompleted(m), toBinary(CompletedSchema, m), `case ${i}`);
    for (const m of [
      withUnknown(StartedSchema, create(StartedSchema, { key })),
      create(StartedSchema, { key: withUnknown(LeaseKeySchema, key) }),
    ])
      assert.deepEqual(encodeStarted(m), toBinary(StartedSchema, m));
  });

  it("knows every field of the messages it writes (teach report-encoding.ts a new one)", () => {
    const numbers = (s: { fields: readonly { number: number }[] }): number[] => s.fields.map((f) => f.number);
    assert.deepEqual(numbers(StartedSchema), [1]);
    assert.deepEqual(numbers(CompletedSchema), [1, 2, 3, 4]);
    assert.deepEqual(numbers(LeaseKeySchema), [1, 2, 3, 4]);
    assert.deepEqual(numbers(ArtifactRefSchema), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(numbers(LogRefSchema), [1, 2, 3]);
    assert.deepEqual(numbers(TimestampSchema), [1, 2]);
  });
});
