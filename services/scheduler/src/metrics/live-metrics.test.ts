/**
 * The rate limit and fair-share gauges of the live metrics, read at scrape time from the engine's
 * buckets and fair-share trees.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Registry } from "@nexusflow/common/metrics";
import { registerLiveMetrics, type LiveState } from "./live-metrics.js";

/** A registry with the live metrics of an idle engine but for `state`. */
function liveRegistry(state: Partial<LiveState>): Registry {
  const registry = new Registry();
  const idle: LiveState = {
    activeRuns: () => 0,
    sessions: () => [],
    readyTypes: () => [],
    ready: () => [],
    writerHealthy: () => true,
  };
  registerLiveMetrics(registry, { ...idle, ...state }, {});
  return registry;
}

describe("live metrics: rate limits", () => {
  it("reports tasks waiting and keys paused per limit, as of each scrape", async () => {
    let stats = [
      { name: "partner", waiting: 3, paused: 1 },
      { name: "global", waiting: 0, paused: 0 },
    ];
    const registry = liveRegistry({ rateLimits: () => stats });
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

describe("live metrics: fair shares", () => {
  it("reports ready tasks and leases per type and tenant, as of each scrape", async () => {
    let stats: { type: string; tenant: string; ready: number; leased: number; oldest?: number | null }[] = [
      { type: "t", tenant: "acme", ready: 9000, leased: 8, oldest: Date.now() - 3_600_000 },
      { type: "t", tenant: "(other)", ready: 12, leased: 3, oldest: null },
    ];
    const registry = liveRegistry({ fairShares: () => stats });
    const text = await registry.metrics();
    assert.match(text, /nexusflow_scheduler_fair_share_ready_tasks\{task_type="t",tenant="acme"\} 9000/);
    assert.match(text, /nexusflow_scheduler_fair_share_leases\{task_type="t",tenant="acme"\} 8/);
    assert.match(text, /nexusflow_scheduler_fair_share_ready_tasks\{task_type="t",tenant="\(other\)"\} 12/);
    const age =
      /nexusflow_scheduler_fair_share_oldest_ready_age_seconds\{task_type="t",tenant="acme"\} (\S+)/.exec(
        text,
      );
    assert.ok(age !== null && Number(age[1]) >= 3600 && Number(age[1]) < 3700, age?.[0]);
    assert.match(
      text,
      /nexusflow_scheduler_fair_share_oldest_ready_age_seconds\{task_type="t",tenant="\(other\)"\} 0/,
    );
    stats = [{ type: "t", tenant: "beta", ready: 1, leased: 0 }];
    const again = await registry.metrics();
    assert.doesNotMatch(again, /tenant="acme"/, "a tenant no longer among the most is dropped");
    assert.match(again, /nexusflow_scheduler_fair_share_ready_tasks\{task_type="t",tenant="beta"\} 1/);
  });
});
