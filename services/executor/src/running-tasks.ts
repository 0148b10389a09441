/**
 * The attempts running on this executor, by lease: starts each with its handler, aborts them (a
 * Cancel, a lease the scheduler revoked or no longer honours, the drain timeout) and tells when
 * each one ends. No session I/O: the executor hears of each end through a callback and decides
 * what to report.
 */
import { type Logger, runLogger } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import type { Lease, LeaseKey } from "@nexusflow/gen";
import { Changes, within } from "./changes.js";
import type { HandlerRegistration } from "./handlers/index.js";
import { type AttemptOutcome, TaskAttempt, type TaskAttemptDeps, leaseKeyId } from "./task-attempt.js";
import { TaskError, type TaskFailure, toTaskFailure } from "./handlers/task-error.js";

/** A lease key as log fields. */
export function describeKey(key: LeaseKey | undefined): Record<string, unknown> {
  return key === undefined
    ? {}
    : { task_run_id: key.taskRunId, attempt: key.attempt, fencing_token: String(key.fencingToken) };
}

/** What the table needs from the executor. */
export interface RunningTasksOptions {
  /** The executor's logger; each attempt logs through a child bound to its identity. */
  readonly logger: Logger;
  /** What every attempt gets, but its logger. */
  readonly attempts: Omit<TaskAttemptDeps, "logger">;
  /** The handler of a task type. */
  readonly handlerFor: (taskType: string) => HandlerRegistration;
  /**
   * An attempt ended; it has left the table already. Silenced attempts end here too. Should it
   * throw, it is called once more with the attempt failed, to report that and free its slot.
   */
  readonly onDone: (attempt: TaskAttempt, outcome: AttemptOutcome) => void;
}

interface RunningTask {
  readonly attempt: TaskAttempt;
  readonly done: Promise<void>;
}

/** The running attempts, keyed by lease. */
export class RunningTasks {
  readonly #options: RunningTasksOptions;
  readonly #tasks = new Map<string, RunningTask>();
  readonly #changes = new Changes();

  constructor(options: RunningTasksOptions) {
    this.#options = options;
  }

  /** How many attempts run. */
  get size(): number {
    return this.#tasks.size;
  }

  /** The attempt running on `key`'s lease, if any. */
  get(key: LeaseKey): TaskAttempt | undefined {
    return this.#tasks.get(leaseKeyId(key))?.attempt;
  }

  /** Whether `attempt` still runs and its outcome is to be reported. */
  reportable(attempt: TaskAttempt): boolean {
    return this.#tasks.get(attempt.id)?.attempt === attempt && !attempt.silenced;
  }

  /** The leases of the running attempts. */
  keys(): LeaseKey[] {
    return [...this.#tasks.values()].map(({ attempt }) => attempt.key);
  }

  /** Starts an attempt on `lease` (whose key is not running yet) with its type's handler. */
  start(lease: Lease & { key: LeaseKey }): TaskAttempt {
    const { logger: parent, attempts, handlerFor, onDone } = this.#options;
    // Built on first use: most attempts log nothing at the configured level.
    let child: Logger | undefined;
    const logger = (): Logger =>
      (child ??= runLogger(parent, {
        run_id: lease.runId,
        workflow: lease.workflowName,
        task: lease.stepId,
        task_run_id: lease.key.taskRunId,
        attempt: lease.key.attempt,
        task_type: lease.taskType,
      }));
    const attempt = new TaskAttempt(lease, { ...attempts, logger });
    if (parent.isLevelEnabled("debug")) logger().debug("task started");
    const { handler, heartbeat } = handlerFor(lease.taskType);
    const done = attempt
      .run(handler, { autoHeartbeat: heartbeat === "auto" })
      .then((outcome) => {
        this.#tasks.delete(attempt.id);
        try {
          onDone(attempt, outcome);
        } catch (e) {
          // Not expected. Only logged, the attempt would be lost: never reported (run again once
          // its lease expires) and its slot never free again. Reported failed instead.
          logger().error({ err: e }, "could not report a finished task; reporting it failed");
          onDone(attempt, { status: "failed", failure: unreportable(e), logs: outcome.logs });
        }
      })
      .catch((e: unknown) => {
        logger().error({ err: e }, "failed to report a finished task");
        this.#tasks.delete(attempt.id);
      })
      .finally(() => this.#changes.notify());
    this.#tasks.set(attempt.id, { attempt, done });
    return attempt;
  }

  /** The scheduler cancelled the task on `key`'s lease: abort it, to report CANCELLED. */
  cancel(key: LeaseKey | undefined, reason: string): void {
    const attempt = key === undefined ? undefined : this.get(key);
    const fields = { ...describeKey(key), reason };
    if (attempt === undefined) {
      this.#options.logger.debug(fields, "cancel for a task not running here");
      return;
    }
    this.#options.logger.info(fields, "the scheduler cancelled a task");
    attempt.abort(
      TaskError.terminal(
        TaskErrorType.CANCELLED,
        `cancelled by the scheduler: ${reason || "no reason given"}`,
      ),
    );
  }

  /**
   * The scheduler revoked `key`'s lease on re-attach (it gave the task to another executor): abort
   * its attempt, never to report it. Returns whether one was running.
   */
  revoke(key: LeaseKey): boolean {
    const attempt = this.get(key);
    if (attempt === undefined) return false;
    this.#options.logger.warn(describeKey(key), "the scheduler revoked a held lease; aborting its task");
    attempt.silence();
    attempt.abort(
      TaskError.terminal(TaskErrorType.LEASE_REVOKED, "the scheduler no longer recognises this lease"),
    );
    return true;
  }

  /**
   * The scheduler rejected a report on `key`'s lease because the lease is gone (stale token,
   * already finished, unknown): the work is not this executor's any more. Aborts its attempt, never
   * to report it.
   */
  lose(key: LeaseKey, why: { readonly code: string; readonly message: string }): void {
    const attempt = this.get(key);
    if (attempt === undefined) return;
    const fields = { ...describeKey(key), code: why.code, reason: why.message };
    this.#options.logger.warn(fields, "aborting a task whose lease the scheduler no longer honours");
    attempt.silence();
    attempt.abort(
      TaskError.terminal(
        TaskErrorType.LEASE_LOST,
        `the scheduler rejected a report: ${why.code}: ${why.message}`,
      ),
    );
  }

  /**
   * Aborts every attempt with `reason`; one whose handler ignores its signal for `graceMs` is
   * settled as failed with it. Resolves once every attempt has ended (and was handed to `onDone`).
   */
  async abortAll(reason: TaskError, graceMs: number): Promise<void> {
    for (const { attempt } of this.#tasks.values()) attempt.abort(reason);
    if (!(await within(graceMs, (signal) => this.whenEmpty(signal)))) {
      for (const { attempt } of this.#tasks.values()) {
        this.#options.logger.warn(
          { ...describeKey(attempt.key), task_type: attempt.lease.taskType },
          "the task's handler ignores its abort signal; reporting it failed",
        );
        attempt.forceSettle(toTaskFailure(reason));
      }
    }
    await Promise.all([...this.#tasks.values()].map((t) => t.done));
  }

  /** Resolves true once no attempt runs, false if `signal` aborts first. */
  whenEmpty(signal: AbortSignal): Promise<boolean> {
    return this.#changes.until(() => this.#tasks.size === 0, signal);
  }
}

/**
 * The failure reported for an attempt whose outcome could not be reported (`onDone` threw): an
 * executor fault, retryable like any unexpected error.
 */
function unreportable(e: unknown): TaskFailure {
  const why = e instanceof Error ? e.message : String(e);
  return toTaskFailure(
    new Error(`the executor could not report how the attempt ended: ${why}`, { cause: e }),
  );
}
