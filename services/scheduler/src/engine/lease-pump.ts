/**
 * Passes over the ready queues: queued tasks go to sessions with credit (core leasing.ts), and each
 * lease is sent once its grant is committed, if it still stands (a session of protocol version 2
 * gets the leases of one pass in LeaseBatch frames, a single one as a Lease: never waiting for
 * more); then why the tasks left wait is recorded (TaskRun.pending_reason) and the runs' watchers
 * are woken when that changed.
 */
import type { Logger } from "@nexusflow/common";
import * as core from "../core/index.js";
import type { Core } from "../core/index.js";
import { isPartitionFencedError } from "../cluster/partitioning.js";
import type { EngineStore } from "../persistence/engine-store.js";
import { TERMINAL_RUN_STATUSES, type RunState, type TaskState } from "../model/run-state.js";
import type { Dispatcher, SessionHandle } from "./dispatcher.js";
import { encodeLease, leaseFrames, leaseMessage, leaseValue } from "./messages.js";
import type { UnservedTypes } from "./pending.js";
import type { Watchers } from "./watchers.js";
import type { Confine } from "./faults.js";

/** What the lease pump works with. */
export interface LeasePumpOptions {
  log: Logger;
  dispatcher: Dispatcher;
  store: EngineStore;
  unserved: UnservedTypes;
  watchers: Watchers;
  core(): Core;
  /** Whether the engine is RUNNING (no leases otherwise). */
  running(): boolean;
  /** The trace context the lease carries to the executor (its attempt's span), if any. */
  traceContext(task: TaskState, run: RunState | undefined): Readonly<Record<string, string>> | undefined;
  /** Applies rules to a run, a fault (a throw) confined to it (faults.ts). */
  confine: Confine;
}

/** A lease granted in a pass, sent once its grant is committed. */
interface Grant {
  readonly session: SessionHandle;
  readonly task: TaskState;
  readonly token: number;
}

/** A grant is no longer waiting to be written (sent, or never to be): the session's `unsent` forgets it. */
function sent({ session, task, token }: Grant): void {
  if (session.unsent?.get(task.id) === token) session.unsent.delete(task.id);
}

/** The lease pump (see the module comment). */
export class LeasePump {
  private scheduled = false;

  constructor(private readonly o: LeasePumpOptions) {}

  /** Runs a pass soon (once per event-loop turn however often asked). */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      // A fault outside any one run's rules (the dispatcher's pass) is logged, not left to end
      // the process; the next event schedules another pass.
      try {
        this.pump();
      } catch (e) {
        this.o.log.error({ err: e }, "a lease pass failed");
      }
    });
  }

  /** Hands queued tasks to sessions with credit; leases are sent once committed. */
  private pump(): void {
    if (!this.o.running()) return;
    const now = new Date();
    const pairs = this.o.dispatcher.take(undefined, now);
    if (pairs.length === 0) {
      this.recordHolds();
      return;
    }
    const granted: Grant[] = [];
    try {
      for (const { session, task } of pairs) {
        const run = this.o.core().runs.get(task.runId);
        // A task the pass took that an earlier grant's outcome ended (a fault failing its run, an
        // input refused failing the run fast) is not leased.
        const live = run !== undefined && task.status === "QUEUED" && !TERMINAL_RUN_STATUSES.has(run.status);
        const token = live
          ? this.o.confine(run, () => core.grantLease(this.o.core(), run, task, session, now))
          : undefined;
        if (token === undefined) {
          // Its run left memory or ended, or granting failed (the run failed with it): charged to
          // its fair share by the pass, never leased, so the share and the session get it back.
          session.credit++;
          core.releaseShare(task);
          continue;
        }
        // Not the executor's to list as held (Ping.list_held) until it is written to the stream.
        (session.unsent ??= new Map()).set(task.id, token);
        granted.push({ session, task, token });
      }
    } finally {
      // What was granted before a fault is sent all the same.
      this.sendWhenCommitted(granted);
    }
    this.recordHolds();
    // More may fit (credit left, or tasks queued meanwhile).
    this.schedule();
  }

  /**
   * Sends each grant once it is committed, if its lease still stands. A commit the fence refused
   * (partitions lost meanwhile) rejects every waiter, though the grants of runs in partitions still
   * held are committed by the writer's next try: the flush is awaited again for those, so that no
   * lease stays granted to a session that never received it (its task would wait for the
   * session's end, its slot lost). Grants whose runs left memory no longer stand: their slot goes
   * back to the session. Any other failure (the store closed: the engine stops) sends nothing.
   */
  private sendWhenCommitted(granted: readonly Grant[]): void {
    this.o.store.flush().then(
      () => this.send(granted),
      (e: unknown) => {
        if (!isPartitionFencedError(e)) {
          this.o.log.warn({ err: e }, "leases not sent: commit failed");
          for (const grant of granted) sent(grant);
          return;
        }
        const standing = granted.filter((grant) => {
          if (core.leaseStands(grant.task, grant.session.id, grant.token)) return true;
          sent(grant);
          this.giveBack(grant.session);
          return false;
        });
        if (standing.length > 0) this.sendWhenCommitted(standing);
      },
    );
  }

  /** A grant never sent: the executor will not return its slot, so its session gets it back here. */
  private giveBack(session: SessionHandle): void {
    if (this.o.dispatcher.sessions.get(session.id) === session) {
      session.credit++;
      this.schedule();
    }
  }

  /** Sends the committed grants whose lease still stands (see the module comment). */
  private send(granted: readonly Grant[]): void {
    const sentAt = Date.now();
    // Encoded leases for sessions that take batches (protocol version 2) of encoded frames, by
    // session, in grant order.
    let batched: Map<SessionHandle, Uint8Array[]> | undefined;
    for (const grant of granted) {
      const { session, task, token } = grant;
      sent(grant);
      if (!core.leaseStands(task, session.id, token)) {
        this.giveBack(session);
        continue;
      }
      const run = this.o.core().runs.get(task.runId);
      const traceContext = this.o.traceContext(task, run);
      // A session that cannot send encoded frames gets its leases one by one, never none.
      if ((session.protocolVersion ?? 1) < 2 || session.sendFrame === undefined)
        session.send(leaseMessage(leaseValue(run, task, traceContext)));
      else {
        batched ??= new Map();
        const lease = encodeLease(run, task, traceContext);
        const leases = batched.get(session);
        if (leases === undefined) batched.set(session, [lease]);
        else leases.push(lease);
      }
      core.armStartToClose(this.o.core(), task, sentAt);
    }
    // The same pass, the same turn: no lease waits for another to fill a batch.
    if (batched !== undefined)
      for (const [session, leases] of batched)
        for (const frame of leaseFrames(leases)) session.sendFrame?.(frame);
  }

  /**
   * After a pass: records why the ready tasks it left wait (TaskRun.pending_reason), logs task
   * types that no executor advertises, and wakes the WatchRun streams of runs whose queued tasks
   * now wait for another reason (no commit would, since nothing stored changed).
   */
  private recordHolds(): void {
    for (const { type, hold } of this.o.dispatcher.recordHolds(new Date())) {
      this.o.unserved.update(type, hold, () => this.o.dispatcher.waiting(type).length);
      if (this.o.watchers.size === 0) continue;
      for (const runId of new Set(this.o.dispatcher.waiting(type).map((t) => t.runId)))
        this.o.watchers.notify(runId);
    }
  }
}
