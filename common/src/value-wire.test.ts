import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
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
        written((w) => writeJsonAsValue(w, j)),
        toBinary(ValueSchema, jsonToValue(j)),
        JSON.stringify(j),
      );
  });

  it("fails for what has no JSON form exactly as jsonToValue does", () => {
    for (const j of [Number.NaN, { a: Infinity }, [1n], { d: new Date(0) }, undefined]) {
      const outcome = (f: () => unknown): unknown => {
        try {
          return f();
        } catch (e) {
          return e;
        }
      };
      assert.deepEqual(
        outcome(() => written((w) => writeJsonAsValue(w, j))),
        outcome(() => toBinary(ValueSchema, jsonToValue(j))),
      );
    }
  });
});
