import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { seededRandom } from "@nexusflow/common/testing";
import { isDagError } from "./errors.js";
import {
  DEFAULT_BACKOFF_COEFFICIENT,
  DEFAULT_INITIAL_INTERVAL_MS,
  DEFAULT_JITTER,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_RETRY_POLICY,
  isRetryableError,
  resolveRetryPolicy,
  retryDelayMs,
} from "./retry.js";

describe("retry policies", () => {
  it("has documented defaults", () => {
    assert.equal(DEFAULT_MAX_ATTEMPTS, 3);
    assert.equal(DEFAULT_INITIAL_INTERVAL_MS, 1000);
    assert.equal(DEFAULT_BACKOFF_COEFFICIENT, 2);
    assert.equal(DEFAULT_JITTER, "full");
    assert.deepEqual(resolveRetryPolicy(), DEFAULT_RETRY_POLICY);
    assert.equal(DEFAULT_RETRY_POLICY.maxIntervalMs, 100_000);
  });

  it("merges layers field by field, later layers winning", () => {
    const policy = resolveRetryPolicy(
      { initialInterval: "500ms", maxAttempts: 10, nonRetryableErrors: ["A"] },
      { maxAttempts: 4, jitter: "equal", nonRetryableErrors: ["B"] },
    );
    assert.deepEqual(policy, {
      maxAttempts: 4,
      initialIntervalMs: 500,
      backoffCoefficient: 2,
      maxIntervalMs: 50_000,
      jitter: "equal",
      nonRetryableErrors: ["B"],
    });
    assert.equal(isRetryableError(policy, "B"), false);
    assert.equal(isRetryableError(policy, "A"), true);
    assert.equal(isRetryableError(policy, undefined), true);
  });
});

describe("retryDelayMs", () => {
  const exact = resolveRetryPolicy({
    jitter: "none",
    maxAttempts: 10,
    initialInterval: "1s",
    backoffCoefficient: 3,
    maxInterval: "20s",
  });

  it("grows exponentially and is capped by maxInterval", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((attempt) => retryDelayMs(exact, attempt)),
      [1000, 3000, 9000, 20_000, 20_000],
    );
  });

  it("returns null once the attempts are used up", () => {
    assert.equal(retryDelayMs(exact, 9), 20_000);
    assert.equal(retryDelayMs(exact, 10), null);
    assert.equal(
      retryDelayMs(DEFAULT_RETRY_POLICY, 2, () => 0.5),
      1000,
    );
    assert.equal(retryDelayMs(DEFAULT_RETRY_POLICY, 3), null);
    assert.equal(retryDelayMs(resolveRetryPolicy({ maxAttempts: 1 }), 1), null);
  });

  it("draws full jitter from [0, delay] and equal jitter from [delay/2, delay]", () => {
    const full = resolveRetryPolicy({ maxAttempts: 100, initialInterval: "100ms", maxInterval: "10s" });
    const equal = resolveRetryPolicy({
      maxAttempts: 100,
      initialInterval: "100ms",
      maxInterval: "10s",
      jitter: "equal",
    });
    const random = seededRandom(42);
    for (let attempt = 1; attempt < 100; attempt++) {
      const cap = Math.min(100 * 2 ** (attempt - 1), 10_000);
      const f = retryDelayMs(full, attempt, random) as number;
      const e = retryDelayMs(equal, attempt, random) as number;
      assert.ok(f >= 0 && f <= cap, `full ${f} outside [0, ${cap}]`);
      assert.ok(e >= cap / 2 && e <= cap, `equal ${e} outside [${cap / 2}, ${cap}]`);
      assert.ok(Number.isInteger(f) && Number.isInteger(e));
    }
    assert.equal(
      retryDelayMs(full, 3, () => 0),
      0,
    );
    assert.equal(
      retryDelayMs(full, 3, () => 0.999999),
      400,
    );
    assert.equal(
      retryDelayMs(equal, 3, () => 0),
      200,
    );
  });

  it("is reproducible with a seeded random source", () => {
    const delays = (seed: number): (number | null)[] => {
      const random = seededRandom(seed);
      return [1, 2, 3, 4].map((attempt) =>
        retryDelayMs(resolveRetryPolicy({ maxAttempts: 5 }), attempt, random),
      );
    };
    assert.deepEqual(delays(7), delays(7));
    assert.notDeepEqual(delays(7), delays(8));
  });

  it("never leaves the documented range even with a broken random source", () => {
    const policy = resolveRetryPolicy({ maxAttempts: 5 });
    assert.equal(
      retryDelayMs(policy, 1, () => 7),
      1000,
    );
    assert.equal(
      retryDelayMs(policy, 1, () => -3),
      0,
    );
  });

  it("survives huge coefficients and attempt numbers", () => {
    const steep = resolveRetryPolicy({
      maxAttempts: 100,
      backoffCoefficient: 100,
      jitter: "none",
      maxInterval: "1h",
    });
    assert.equal(retryDelayMs(steep, 99), 3_600_000);
  });

  it("rejects attempt numbers below 1", () => {
    for (const attempt of [0, -1, 1.5, Number.NaN]) {
      assert.throws(
        () => retryDelayMs(DEFAULT_RETRY_POLICY, attempt),
        (e: unknown) => isDagError(e, "INVALID_ARGUMENT"),
      );
    }
  });
});
