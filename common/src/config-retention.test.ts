import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, loadSchedulerConfig } from "./config.js";

const BASE = { AUTH_DISABLED: "true" };

function refuses(env: Record<string, string>, variable: string, pattern: RegExp): void {
  assert.throws(
    () => loadSchedulerConfig({ ...BASE, ...env }),
    (e: unknown) => e instanceof ConfigError && e.variable === variable && pattern.test(e.message),
  );
}

describe("scheduler retention configuration", () => {
  it("defaults to 30 days of runs checked every minute, no export, keys for 24 hours, events for 7 days", () => {
    assert.deepEqual(loadSchedulerConfig(BASE).retention, {
      runRetentionMs: 30 * 86_400_000,
      runRetentionIntervalMs: 60_000,
      exportBeforeDelete: false,
      idempotencyKeyRetentionMs: 86_400_000,
      eventRetentionMs: 7 * 86_400_000,
    });
  });

  it("reads durations, 0 to keep runs forever, retentions longer than 30 days, and the export switch", () => {
    const c = loadSchedulerConfig({
      ...BASE,
      RUN_RETENTION: "90d",
      RUN_RETENTION_INTERVAL: "30s",
      RUN_EXPORT_BEFORE_DELETE: "true",
      IDEMPOTENCY_KEY_RETENTION: "1h",
      EVENT_RETENTION: "36h",
    }).retention;
    assert.deepEqual(c, {
      runRetentionMs: 90 * 86_400_000,
      runRetentionIntervalMs: 30_000,
      exportBeforeDelete: true,
      idempotencyKeyRetentionMs: 3_600_000,
      eventRetentionMs: 36 * 3_600_000,
    });
    assert.equal(loadSchedulerConfig({ ...BASE, RUN_RETENTION: "0" }).retention.runRetentionMs, 0);
    assert.equal(loadSchedulerConfig({ ...BASE, EVENT_RETENTION: "0" }).retention.eventRetentionMs, 0);
  });

  it("names the variable of a bad value", () => {
    refuses({ RUN_RETENTION: "soon" }, "RUN_RETENTION", /invalid duration.*or 0 to turn it off/);
    refuses({ RUN_RETENTION: "4000d" }, "RUN_RETENTION", /maximum of 3650d/);
    refuses({ RUN_RETENTION_INTERVAL: "10ms" }, "RUN_RETENTION_INTERVAL", /at least 1s/);
    refuses({ EVENT_RETENTION: "a week" }, "EVENT_RETENTION", /invalid duration.*or 0 to turn it off/);
    refuses({ RUN_EXPORT_BEFORE_DELETE: "maybe" }, "RUN_EXPORT_BEFORE_DELETE", /true or false/);
    refuses({ IDEMPOTENCY_KEY_RETENTION: "0s" }, "IDEMPOTENCY_KEY_RETENTION", /longer than 0/);
    refuses({ IDEMPOTENCY_KEY_RETENTION: "40d" }, "IDEMPOTENCY_KEY_RETENTION", /maximum of 30d/);
    // A run's key goes with the run: a run kept shorter than its key would cut the key's life.
    refuses({ RUN_RETENTION: "1h" }, "RUN_RETENTION", /at least IDEMPOTENCY_KEY_RETENTION \(86400000 ms\)/);
    refuses({ RUN_RETENTION: "2d", IDEMPOTENCY_KEY_RETENTION: "3d" }, "RUN_RETENTION", /at least/);
    assert.equal(
      loadSchedulerConfig({ ...BASE, RUN_RETENTION: "1d", IDEMPOTENCY_KEY_RETENTION: "1d" }).retention
        .runRetentionMs,
      86_400_000,
    );
  });
});
