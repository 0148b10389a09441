import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code } from "@nexusflow/common";
import { idempotencyConflict, idempotencyScope, requestHash } from "./idempotency.js";

describe("requestHash", () => {
  it("is equal for the same input and labels whatever the key order", () => {
    const a = requestHash({ x: 1, y: { b: [1, { d: 2, c: 3 }], a: null } }, { team: "a", env: "b" });
    const b = requestHash({ y: { a: null, b: [1, { c: 3, d: 2 }] }, x: 1 }, { env: "b", team: "a" });
    assert.equal(a, b);
    assert.match(a, /^[0-9a-f]{64}$/);
  });

  it("differs when the input, an array's order or the labels differ", () => {
    const base = requestHash({ x: [1, 2] }, { l: "1" });
    assert.notEqual(requestHash({ x: [2, 1] }, { l: "1" }), base);
    assert.notEqual(requestHash({ x: [1, 2], y: 0 }, { l: "1" }), base);
    assert.notEqual(requestHash({ x: [1, 2] }, { l: "2" }), base);
    assert.notEqual(requestHash({ x: [1, 2] }, {}), base);
    assert.notEqual(requestHash({ x: ["1", 2] }, { l: "1" }), base);
  });

  it("treats a missing input as null", () => {
    assert.equal(requestHash(undefined, {}), requestHash(null, {}));
    assert.notEqual(requestHash({}, {}), requestHash(null, {}));
  });
});

describe("idempotency scope and conflict", () => {
  it("scopes keys by workflow without collisions between name and key", () => {
    assert.notEqual(idempotencyScope("a", "b/c"), idempotencyScope("a/b", "c"));
    assert.notEqual(idempotencyScope("ab", "c"), idempotencyScope("a", "bc"));
  });

  it("is ALREADY_EXISTS naming the run in the message and the details", () => {
    const e = idempotencyConflict("wf", "k1", "0b7a0c8e-2d55-4c3b-9d1e-0c5b3c0f1a2b");
    assert.equal(e.code, Code.ALREADY_EXISTS);
    assert.match(e.message, /0b7a0c8e-2d55-4c3b-9d1e-0c5b3c0f1a2b/);
    assert.equal(e.errorInfo?.metadata["run_id"], "0b7a0c8e-2d55-4c3b-9d1e-0c5b3c0f1a2b");
    assert.equal(e.resourceInfo?.resourceName, "0b7a0c8e-2d55-4c3b-9d1e-0c5b3c0f1a2b");
  });
});
