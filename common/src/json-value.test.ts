import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { nulCharacterPath, replaceNulCharacters } from "./json-value.js";

describe("nulCharacterPath", () => {
  it("finds the first string, value or key, holding U+0000, as a path", () => {
    assert.equal(nulCharacterPath({ a: [1, "ok", { b: "x\u0000y" }] }, "input"), "input.a[2].b");
    assert.equal(nulCharacterPath({ ["k\u0000"]: 1 }, "output"), "output.k\u0000");
    assert.equal(nulCharacterPath("\u0000", "reason"), "reason");
  });

  it("passes values without one, whatever their shape", () => {
    for (const v of [null, 0, true, "", "text \\u0000 escaped", [], {}, { a: [{ b: "c" }] }])
      assert.equal(nulCharacterPath(v, "input"), undefined);
  });
});

describe("replaceNulCharacters", () => {
  it("replaces U+0000 with U+FFFD in strings and keys, leaving everything else as it was", () => {
    assert.deepEqual(replaceNulCharacters({ ["k\u0000"]: ["a\u0000b", 1, null, { c: "\u0000" }] }), {
      ["k\ufffd"]: ["a\ufffdb", 1, null, { c: "\ufffd" }],
    });
    assert.equal(replaceNulCharacters("plain"), "plain");
  });
});
