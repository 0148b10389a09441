import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backoffDelay } from "./backoff.js";

const bounds = { initialDelayMs: 100, maxDelayMs: 5_000 };

describe("backoffDelay", () => {
  it("doubles the bound per attempt up to the cap", () => {
    const top = (attempt: number): number => backoffDelay(attempt, bounds, () => 0.999_999);
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 50].map(top), [99, 199, 399, 799, 1599, 3199, 4999, 4999]);
  });

  it("is uniform in [0, bound] (full jitter)", () => {
    assert.equal(
      backoffDelay(3, bounds, () => 0),
      0,
    );
    assert.equal(
      backoffDelay(3, bounds, () => 0.5),
      200,
    );
  });
});
