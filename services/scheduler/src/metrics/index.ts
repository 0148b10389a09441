/**
 * The scheduler's metrics: run and task counters and histograms from committed lifecycle events
 * (lifecycle-metrics.ts), held tasks by gate and key from their task_held events
 * (hold-metrics.ts), live gauges read at scrape time (live-metrics.ts), and gRPC server durations
 * (the interceptor of @nexusflow/common/metrics, installed by scheduler.ts).
 */
import type { Registry } from "@nexusflow/common/metrics";
import type pg from "pg";
import type { Engine } from "../engine/engine.js";
import type { OutboxRelay } from "../events/relay.js";
import type { CommitObservation } from "../persistence/batch-writer.js";
import { HoldMetrics } from "./hold-metrics.js";
import { LifecycleMetrics } from "./lifecycle-metrics.js";
import { engineLiveState, registerLiveMetrics } from "./live-metrics.js";

export { LifecycleMetrics, type ActiveRunReader } from "./lifecycle-metrics.js";
export { HoldMetrics, heldKeyStats, OTHER_KEYS, type HeldKeyStat, type HeldTask } from "./hold-metrics.js";
export { engineLiveState, registerLiveMetrics, type LiveSession, type LiveState } from "./live-metrics.js";

/** The group-commit writer, as far as metrics observe it (BatchWriter). */
export interface ObservableWriter {
  observe(observer: (commit: CommitObservation) => void): void;
}

/** Registers every scheduler metric on `registry` and starts observing the writer's commits. */
export function registerSchedulerMetrics(
  registry: Registry,
  engine: Engine,
  writer: ObservableWriter,
  options: { pool?: pg.Pool | undefined; relay?: OutboxRelay | undefined } = {},
): void {
  const lifecycle = new LifecycleMetrics(registry, (runId) => engine.activeRun(runId));
  writer.observe((commit) => lifecycle.observe(commit));
  const holds = new HoldMetrics(registry);
  writer.observe((commit) => holds.observe(commit));
  registerLiveMetrics(registry, engineLiveState(engine), options);
}
