import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { ListValueSchema, StructSchema, ValueSchema } from "@bufbuild/protobuf/wkt";
import { jsonToValue } from "./json-value.js";
import { KeptWriter, writeJsonAsValue, writeValue } from "./value-wire.js";

const json: unknown[] = [
  null,
  0,
  -0,
  1e308,
  -2.5,
  "",
  "é😀\u0000",
  true,
  false,
  [],
  {},
  { a: [1, "b", null, true, { c: {} }, []], "": 0, 1: "x", z: { y: [[null]] } },
  Object.assign(Object.create(null) as object, { k: "v" }),
];

const written = (write: (w: BinaryWriter) => void): Uint8Array => {
  const w = new BinaryWriter();
  write(w);
  return w.finish();
};

describe("google.protobuf.Value written by hand", () => {
  it("writes a Value message as toBinary does, every kind and zero values too", () => {
    const values = [
      ...json.map((j) => jsonToValue(j)),
      create(ValueSchema, {}),
      create(ValueSchema, { kind: { case: "numberValue", value: Number.NaN } }),
      create(ValueSchema, { kind: { case: "numberValue", value: -Infinity } }),
    ];
    for (const v of values)
      assert.deepEqual(
        written((w) => writeValue(w, v)),
        toBinary(ValueSchema, v),
      );
  });

  it("writes JSON as toBinary writes jsonToValue of it", () => {
    for (const j of json)
      assert.deepEqual(
        written((w) => assert.equal(writeJsonAsValue(w, j), true)),
        toBinary(ValueSchema, jsonToValue(j)),
        JSON.stringify(j),
      );
  });

  it("leaves to the generic path what is not plain JSON, or nested deeply", () => {
    let deep: unknown = 1;
    for (let i = 0; i < 40; i++) deep = i % 2 === 0 ? { d: deep } : [deep];
    // eslint-disable-next-line no-sparse-arrays
    const holed = [, 1];
    for (const j of [
      Number.NaN,
      { a: Infinity },
      [1n],
      { d: new Date(0) },
      undefined,
      { a: undefined },
      holed,
      deep,
    ])
      assert.equal(writeJsonAsValue(new BinaryWriter(), j), false);
  });

  it("knows every field of Value, Struct and ListValue (teach value-wire.ts a new one)", () => {
    for (const [schema, numbers] of [
      [ValueSchema, [1, 2, 3, 4, 5, 6]],
      [StructSchema, [1]],
      [ListValueSchema, [1]],
    ] as const)
      assert.deepEqual(
        schema.fields.map((f) => f.number),
        [...numbers],
        schema.typeName,
      );
  });

  it("keeps a Value's unknown fields, as toBinary does", () => {
    const v = jsonToValue({ a: [1] });
    v.$unknown = [{ no: 99, wireType: 0, data: new Uint8Array([1]) }];
    const inner = jsonToValue({ a: [1] });
    if (inner.kind.case === "structValue") inner.kind.value.$unknown = v.$unknown;
    for (const x of [v, inner])
      assert.deepEqual(
        written((w) => writeValue(w, x)),
        toBinary(ValueSchema, x),
      );
  });
});

describe("KeptWriter", () => {
  const text = (w: BinaryWriter, s: string): boolean => {
    w.tag(1, WireType.LengthDelimited).string(s);
    return true;
  };
  const alone = (s: string): Uint8Array =>
    new BinaryWriter().tag(1, WireType.LengthDelimited).string(s).finish();

  it("returns each message's own bytes, after a larger one, a refused one and one that threw", () => {
    const kept = new KeptWriter();
    const first = kept.encode(text, "a", undefined, undefined);
    assert.deepEqual(first, alone("a"));
    assert.deepEqual(kept.encode(text, "x".repeat(5000), undefined, undefined), alone("x".repeat(5000)));
    assert.deepEqual(kept.encode(text, "b", undefined, undefined), alone("b"));
    assert.deepEqual(first, alone("a"), "an earlier result is not written over");
    const refused = (w: BinaryWriter): boolean => {
      w.tag(2, WireType.LengthDelimited).fork().string("half");
      return false;
    };
    assert.equal(kept.encode(refused, undefined, undefined, undefined), undefined);
    assert.deepEqual(kept.encode(text, "c", undefined, undefined), alone("c"));
    const throws = (w: BinaryWriter): boolean => {
      w.tag(3, WireType.LengthDelimited).fork().string("half");
      throw new Error("boom");
    };
    assert.throws(() => kept.encode(throws, undefined, undefined, undefined), /boom/);
    assert.deepEqual(kept.encode(text, "d", undefined, undefined), alone("d"));
  });
});
