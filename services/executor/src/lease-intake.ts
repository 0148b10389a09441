/**
 * The executor's lease intake: what becomes of each lease a session brings, and the slot
 * accounting that goes with it. A lease spends a credit of the session it came on. One without a
 * key is ignored; one whose task runs here already, or whose report waits for the scheduler's
 * acknowledgement, is a duplicate, ignored (its task must not run twice); one that comes while the
 * executor drains, or beyond its slots, is released; any other starts its task, whose reports are
 * routed from the session it came on. When an attempt ends, its slot is freed once. No session I/O
 * here: Releases go through {@link ReplicaRouting}, Started and Credit through the turn's batch.
 */
import { create } from "@bufbuild/protobuf";
import type { Logger } from "@nexusflow/common";
import { type Lease, type LeaseKey, ReleaseSchema } from "@nexusflow/gen";
import type { Link } from "./replica-links.js";
import type { ReplicaRouting } from "./replica-routing.js";
import { type RunningTasks, describeKey } from "./running-tasks.js";
import type { TaskAttempt } from "./task-attempt.js";
import type { TurnBatch } from "./turn-batch.js";

/** What became of a lease. */
export type LeaseOutcome =
  /** Not taken and not answered: a lease without a key, or one this executor holds already. */
  | { readonly t: "ignored"; readonly why: "no key" | "duplicate" }
  /** Given back to the scheduler with a Release carrying `reason`. */
  | { readonly t: "released"; readonly reason: string }
  /** Its task runs. */
  | { readonly t: "started"; readonly attempt: TaskAttempt };

/** What the intake needs from the executor. */
export interface LeaseIntakeOptions {
  readonly logger: Logger;
  /** Most tasks running at once (the executor's slots). */
  readonly slots: number;
  /** The running attempts. */
  readonly tasks: Pick<RunningTasks, "size" | "get" | "start">;
  /** The sessions' reports (duplicates, Releases) and the routes of running attempts. */
  readonly routing: Pick<ReplicaRouting, "reporting" | "report" | "routes">;
  /** Collects the Started of attempts begun and the slots freed, for the end of the turn. */
  readonly turn: Pick<TurnBatch, "started" | "slotFreed">;
  /** Why the executor takes no new task (draining: the reason it stops), or undefined when it does. */
  readonly refusing: () => string | undefined;
  /** Whether a slot freed now is granted at once (else the next AttachAck grants every free slot). */
  readonly takesWork: () => boolean;
}

function hasKey(lease: Lease): lease is Lease & { key: LeaseKey } {
  return lease.key !== undefined;
}

/** See the module comment. */
export class LeaseIntake {
  readonly #options: LeaseIntakeOptions;

  constructor(options: LeaseIntakeOptions) {
    this.#options = options;
  }

  /** A lease came on `link`'s session: spends one of its credits, then is started, released or ignored. */
  take(link: Link, lease: Lease): LeaseOutcome {
    const { logger, slots, tasks, routing } = this.#options;
    // The scheduler spent one credit of this session on it: its replica has work (not idle).
    if (link.credit > 0) link.credit--;
    const leasedAt = performance.now();
    link.lastLeaseAt = leasedAt;
    if (!hasKey(lease)) {
      logger.warn(
        { task_type: lease.taskType, run_id: lease.runId },
        "protocol: lease without a key ignored",
      );
      return { t: "ignored", why: "no key" };
    }
    const key = lease.key;
    // Running, or ended with its report not acknowledged yet: the lease is still this executor's,
    // and its task must not run twice.
    if (tasks.get(key) !== undefined || routing.reporting(key)) {
      logger.warn(describeKey(key), "protocol: duplicate lease ignored");
      return { t: "ignored", why: "duplicate" };
    }
    const stopping = this.#options.refusing();
    let reason: string | undefined;
    if (stopping !== undefined) reason = `executor draining (${stopping})`;
    else if (tasks.size >= slots) {
      logger.warn({ ...describeKey(key), slots }, "protocol: lease beyond the credit granted; releasing it");
      reason = "no free slot";
    }
    if (reason !== undefined) {
      routing.report(
        { case: "release", value: create(ReleaseSchema, { key, reason }) },
        lease.runId,
        link,
        leasedAt,
      );
      return { t: "released", reason };
    }
    const attempt = tasks.start(lease);
    routing.routes.set(attempt.id, {
      runId: lease.runId,
      origin: link,
      key,
      sentTo: link,
      notFoundSince: undefined,
      leasedAt,
    });
    link.running++;
    this.#options.turn.started(attempt);
    return { t: "started", attempt };
  }

  /** The slot of an ended attempt is free again (once: its route says it was not yet). */
  free(attempt: TaskAttempt): void {
    const { routing, takesWork, turn } = this.#options;
    const route = routing.routes.get(attempt.id);
    if (route === undefined) return;
    routing.routes.delete(attempt.id);
    route.origin.running--;
    // While disconnected nothing is sent: the next AttachAck grants every free slot.
    if (takesWork()) turn.slotFreed();
  }
}
