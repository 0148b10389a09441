/**
 * The executor process's metrics, read from the {@link Executor} at scrape time (nothing on the
 * task path): whether it is attached, its slots and the tasks it runs. Its gRPC calls to the
 * scheduler are measured by the client interceptor of @nexusflow/common/metrics, given to the
 * Executor's channel options by main.ts. Task outcomes and durations are the scheduler's metrics.
 */
import { Gauge, type Registry } from "@nexusflow/common/metrics";
import type { Executor } from "./executor.js";

/** Registers the executor's gauges on `registry`. */
export function registerExecutorMetrics(registry: Registry, executor: Executor, slots: number): void {
  new Gauge({
    name: "nexusflow_executor_attached",
    help: "1 while the executor has a session with the scheduler, else 0.",
    registers: [registry],
    collect() {
      this.set(executor.state === "ATTACHED" ? 1 : 0);
    },
  });
  new Gauge({
    name: "nexusflow_executor_slots",
    help: "Tasks the executor runs at once (EXECUTOR_SLOTS, its credit).",
    registers: [registry],
    collect() {
      this.set(slots);
    },
  });
  new Gauge({
    name: "nexusflow_executor_running_tasks",
    help: "Tasks the executor is running now.",
    registers: [registry],
    collect() {
      this.set(executor.runningTasks);
    },
  });
}
