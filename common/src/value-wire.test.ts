import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { ListValueSchema, StructSchema, ValueSchema } from "@bufbuild/protobuf/wkt";
import { jsonToValue } from "./json-value.js";
import { writeJsonAsValue, writeValue } from "./value-wire.js";

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
