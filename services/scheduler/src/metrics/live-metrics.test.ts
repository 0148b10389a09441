/** The rate limit gauges of the live metrics, read at scrape time from the engine's buckets. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Registry } from "@nexusflow/common/metrics";
import { registerLiveMetrics, type LiveState } from "./live-metrics.js";

describe("live metrics: rate limits", () => {
  it("reports tasks waiting and keys paused per limit, as of each scrape", async () => {
    let stats = [
      { name: "partner", waiting: 3, paused: 1 },
      { name: "global", waiting: 0, paused: 0 },
    ];
    const live: LiveState = {
      activeRuns: () => 0,
      sessions: () => [],
      readyTypes: () => [],
      ready: () => [],
      writerHealthy: () => true,
      rateLimits: () => stats,
    };
    const registry = new Registry();
    registerLiveMetrics(registry, live, {});
    const text = await registry.metrics();
    assert.match(text, /nexusflow_scheduler_rate_limit_waiting_tasks\{limit="partner"\} 3/);
    assert.match(text, /nexusflow_scheduler_rate_limit_paused_keys\{limit="partner"\} 1/);
    assert.match(text, /nexusflow_scheduler_rate_limit_waiting_tasks\{limit="global"\} 0/);
    stats = [{ name: "global", waiting: 2, paused: 0 }];
    const again = await registry.metrics();
    assert.doesNotMatch(again, /limit="partner"/, "a limit no bucket has any more is dropped");
    assert.match(again, /nexusflow_scheduler_rate_limit_waiting_tasks\{limit="global"\} 2/);
  });
});
