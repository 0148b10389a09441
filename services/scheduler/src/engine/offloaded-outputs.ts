/**
 * Reads a step's offloaded output back so templates, conditions and the output mapping see it;
 * until then the step counts as active and its dependents wait. A store that is unavailable is
 * retried with backoff; an output that is gone or corrupt fails the step (OUTPUT_UNAVAILABLE).
 * The value is kept in memory only: PostgreSQL keeps the claim check, and recovery reads it again.
 * The rules applied once a read is back run from a promise's callback, where a throw would be an
 * unhandled rejection (the end of the process): a fault in them fails the step's run instead.
 */
import type { Logger } from "@nexusflow/common";
import { isArtifactError } from "@nexusflow/common/artifacts";
import type { TaskState } from "../model/run-state.js";

/** What reading outputs back needs of the engine. */
export interface OutputReaderOptions {
  log: Logger;
  /** Reads an output reference; undefined when there is no artifact store. */
  resolve: ((ref: unknown) => Promise<unknown>) | undefined;
  /** Whether the engine still runs (RUNNING or RECOVERING), and whether it is stopping. */
  live(): boolean;
  stopping(): boolean;
  /** Calls `fn` after `ms` unless the engine stopped. */
  after(ms: number, fn: () => void): void;
  /** The output was read (core reports.ts outputResolved). */
  resolved(task: TaskState, value: unknown): void;
  /** The output cannot be read (core reports.ts outputUnavailable). */
  unavailable(task: TaskState, reason: string): void;
  /** Applies `fn`, rules of the task's run, a fault (a throw) confined to that run (faults.ts). */
  confine(task: TaskState, fn: () => void): void;
}

/** Reads offloaded outputs back (see the module comment). */
export class OutputReader {
  constructor(private readonly options: OutputReaderOptions) {}

  /** Reads the task's offloaded output back. */
  read(task: TaskState, attempt = 1): void {
    const o = this.options;
    if (o.resolve === undefined) {
      o.log.warn(
        { task_run_id: task.id },
        "an offloaded output cannot be read: no artifact store; using null",
      );
      task.resolvedOutput = null;
      return;
    }
    o.resolve(task.outputRef).then(
      (value) => {
        if (o.live()) o.confine(task, () => o.resolved(task, value));
        else task.resolvedOutput = value ?? null;
      },
      (e: unknown) => {
        if (o.stopping()) return;
        if (isArtifactError(e, "UNAVAILABLE")) {
          const wait = Math.min(30_000, 250 * 2 ** Math.min(attempt, 7));
          o.log.warn(
            { err: e, task_run_id: task.id, retry_in_ms: wait },
            "cannot read an offloaded output yet",
          );
          o.after(wait, () => this.read(task, attempt + 1));
          return;
        }
        const reason = e instanceof Error ? e.message : String(e);
        if (o.live()) o.confine(task, () => o.unavailable(task, reason));
      },
    );
  }
}
