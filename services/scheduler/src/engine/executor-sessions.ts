/**
 * The executors' sessions as the engine keeps them: one attaching (the leases it no longer holds
 * expire, an earlier session of the same executor is replaced), its credit and drain, and its end
 * (its leases wait for a reconnect until the session timeout). The rules are core/sessions.ts';
 * this is the shell around them, as engine.ts is around the rest. Executor reports (started,
 * completed...) are the engine's.
 */
import type { Logger } from "@nexusflow/common";
import type { LeaseKey } from "@nexusflow/gen";
import * as core from "../core/index.js";
import type { Core, Moment, Rejection } from "../core/index.js";
import type { Dispatcher, SessionHandle } from "./dispatcher.js";
import type { Confine } from "./faults.js";
import type { UnservedTypes } from "./pending.js";

/** Most credit one Credit message may add. */
const MAX_CREDIT_STEP = 100_000;
/** Most credit a session may hold. */
const MAX_CREDIT = 1_000_000;

/** What {@link ExecutorSessions} reads and calls of the engine. */
export interface ExecutorSessionsHost {
  readonly core: Core;
  readonly dispatcher: Dispatcher;
  readonly unserved: Pick<UnservedTypes, "attached">;
  readonly log: Logger;
  readonly confined: Confine;
  /** Whether this replica judges the run's reports (it holds the run's partition). */
  judges(runId: string): boolean;
  moment(): Moment;
  /** Runs a lease pass soon. */
  pump(): void;
  /** Whether the engine is stopping or stopped (its sessions closed by it). */
  stopping(): boolean;
}

/** The attached sessions' lifecycle (see the module comment). */
export class ExecutorSessions {
  constructor(private readonly host: ExecutorSessionsHost) {}

  /**
   * Registers an attached session (its executor id already authorised); returns the held leases
   * that are no longer valid. The executor's other leases expire now (core/sessions.ts attached).
   */
  attach(session: SessionHandle, held: readonly LeaseKey[]): LeaseKey[] {
    const { dispatcher } = this.host;
    // Leases of this executor id that it does not list expire now (it no longer holds them); a
    // fault in a lease's rules fails its run, and the other leases are handled (faults.ts).
    const { revoked, expired, reclaimed } = core.attached(
      this.host.core,
      session,
      held,
      this.host.moment(),
      (runId) => this.host.judges(runId),
      this.host.confined,
    );
    // A re-attached executor replaces its earlier sessions, even ones whose connection never
    // reported closing (half-open TCP): they must not take new leases.
    for (const other of [...dispatcher.sessions.values()]) {
      if (other.executorId === session.executorId && other.id !== session.id) {
        other.close("superseded by a new session of the same executor");
        this.detach(other);
      }
    }
    dispatcher.sessions.set(session.id, session);
    this.host.log.info(
      {
        session_id: session.id,
        executor_id: session.executorId,
        types: [...session.types],
        reclaimed,
        expired,
      },
      "executor attached",
    );
    this.host.unserved.attached(session.executorId, session.types, (type) => dispatcher.waiting(type).length);
    this.host.pump();
    return revoked;
  }

  /** Credit report. */
  credit(session: SessionHandle, n: number): Rejection | null {
    if (!Number.isInteger(n) || n <= 0 || n > MAX_CREDIT_STEP) {
      return {
        code: "INVALID_ARGUMENT",
        message: `credit must be between 1 and ${MAX_CREDIT_STEP}, got ${n}`,
      };
    }
    if (session.credit + n > MAX_CREDIT)
      return { code: "RESOURCE_EXHAUSTED", message: `credit above ${MAX_CREDIT}` };
    session.credit += n;
    this.host.pump();
    return null;
  }

  /** Drain report: no more leases on this session; returns the leases it still holds. */
  drain(session: SessionHandle): number {
    session.draining = true;
    // The next pass records that the types it alone ran now wait for it to finish draining.
    this.host.pump();
    return session.leases.size;
  }

  /**
   * The session's stream ended: its leases wait for a reconnect until the executor has been
   * silent for the session timeout, then expire.
   */
  detach(session: SessionHandle): void {
    const { dispatcher } = this.host;
    if (dispatcher.sessions.get(session.id) !== session) return;
    dispatcher.sessions.delete(session.id);
    // Stopping (stop() closes every session): the leases stay as stored, and the next start gives
    // them their grace; a grace timer set now would outlive the engine.
    if (this.host.stopping()) return;
    // A fault in a lease's rules fails its run, and the other leases wait all the same (faults.ts).
    core.sessionLost(this.host.core, session, performance.now() - session.lastSeen, this.host.confined);
    // The next pass records whether the types it ran are now without an executor.
    this.host.pump();
    this.host.log.info({ session_id: session.id, executor_id: session.executorId }, "executor session ended");
  }
}
