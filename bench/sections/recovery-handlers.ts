/**
 * The handler of the recovery section, loaded by real executor processes (EXECUTOR_HANDLERS, under
 * tsx): `bench.hold` appends one JSON line to `input.marker` the moment an attempt starts (so the
 * bench sees where and when each task runs again), then holds its slot until it is cancelled.
 */
import { appendFileSync } from "node:fs";
import type { HandlerRegistry, TaskContext } from "@nexusflow/executor";

/** One line of the marker file. */
export interface HoldMarker {
  runId: string;
  attempt: number;
  pid: number;
  /** Wall-clock ms when the handler started. */
  at: number;
}

/** Registers `bench.hold`. */
export default function register(registry: HandlerRegistry): void {
  registry.register("bench.hold", (input: { marker: string }, ctx: TaskContext) => {
    const line: HoldMarker = { runId: ctx.runId, attempt: ctx.attempt, pid: process.pid, at: Date.now() };
    appendFileSync(input.marker, `${JSON.stringify(line)}\n`);
    return new Promise<never>((_, reject) => {
      ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason as Error), { once: true });
    });
  });
}
