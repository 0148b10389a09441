/**
 * Helpers for tests: waiting on a condition, a seeded random generator, and tests that need
 * external services (Kafka, S3). Locally a missing service skips the
 * test with a reason; under CI=true it fails, so a broken harness can never pass silently.
 */
import type { TestContext } from "node:test";

/** Environment variables that name the external test services. */
export type ServiceVariable = "KAFKA_BROKERS" | "S3_ENDPOINT";

/**
 * Returns the value of `variable`, or skips the test (locally) / throws (under CI=true) when it is
 * unset. Call it first thing in a test: `const brokers = requireService(t, "KAFKA_BROKERS")`.
 */
export function requireService(t: TestContext, variable: ServiceVariable): string | undefined {
  const value = process.env[variable];
  if (value !== undefined && value !== "") return value;
  const message = `${variable} is not set: start the test services with 'scripts/test-services.sh up'`;
  if (process.env["CI"] === "true") throw new Error(`${message} (required under CI=true)`);
  t.skip(message);
  return undefined;
}

/**
 * Waits until `probe` returns something other than undefined or false (and returns it), polling
 * every 25 ms; a probe that throws is tried again. Fails naming `what` (and the last error) after
 * `timeoutMs`. Tests wait on conditions with this, never on a fixed delay.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ""}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * A seeded pseudo-random generator (mulberry32) returning numbers in [0, 1): randomized tests draw
 * from it so that a failure names a seed that replays it.
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
