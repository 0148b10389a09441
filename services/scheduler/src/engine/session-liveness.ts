/**
 * Executor sessions kept honest, on the engine's liveness tick: an overdue task heartbeat fails its
 * attempt, a session silent past the session timeout is closed, every other one is pinged, and
 * about once per session timeout a session holding leases is asked to list the leases its
 * executor holds (Ping.list_held). The answer (Pong.held) expires the leases sent before that Ping
 * that it leaves out (core/sessions.ts listedHeld), so no lease stays on a live session whose
 * executor does not hold it.
 */
import type { Logger } from "@nexusflow/common";
import type { LeaseKey, SessionResponse } from "@nexusflow/gen";
import * as core from "../core/index.js";
import type { Core, Moment } from "../core/index.js";
import type { SessionHandle } from "./dispatcher.js";
import { pingMessage } from "./messages.js";

/** What {@link SessionLiveness} needs of the engine. */
export interface SessionLivenessHost {
  readonly core: Core;
  readonly log: Logger;
  readonly sessionTimeoutMs: number;
  /** The attached sessions. */
  sessions(): Iterable<SessionHandle>;
  moment(): Moment;
  /** The session's stream is over (Engine.detachSession). */
  detach(session: SessionHandle): void;
  /** Whether this replica may judge an executor's lease of the run (PartitionRuns.judges). */
  judges(runId: string): boolean;
  /** Hand out leases soon. */
  pump(): void;
  /** Applies one run's rules, a fault in them failing that run only (engine/faults.ts). */
  readonly confine: core.RunRules;
}

/** See the module comment. */
export class SessionLiveness {
  private nonce = 0n;

  constructor(private readonly host: SessionLivenessHost) {}

  /** One liveness tick over every session. */
  tick(): void {
    const { host } = this;
    const at = host.moment();
    this.nonce++;
    for (const s of host.sessions()) {
      // A fault in one run's rules fails that run; the tick goes on (it runs on a timer: a throw
      // out of it would end the process).
      for (const id of s.leases) {
        const task = host.core.tasks.get(id);
        host.confine(task === undefined ? undefined : host.core.runs.get(task.runId), () =>
          core.checkHeartbeat(host.core, id, at),
        );
      }
      if (core.isSilent(s.lastSeen, at.mono, host.sessionTimeoutMs)) {
        host.log.warn(
          { session_id: s.id, executor_id: s.executorId },
          "executor session silent too long; closing it",
        );
        s.close("no heartbeat within the session timeout");
        host.detach(s);
      } else {
        s.send(this.pingFor(s, at.mono));
      }
    }
  }

  /**
   * The Ping for `s`: about once per session timeout, while it holds leases, one that asks its
   * executor to list the leases it holds (answered in {@link SessionLiveness.onPong}).
   */
  private pingFor(s: SessionHandle, mono: number): SessionResponse {
    if (s.leases.size === 0 || mono - (s.heldAsk?.at ?? -Infinity) < this.host.sessionTimeoutMs)
      return pingMessage(this.nonce);
    const asked = core.leasesToList(this.host.core, s, s.unsent);
    if (asked.size === 0) return pingMessage(this.nonce);
    s.heldAsk = { nonce: this.nonce, asked, at: mono, answered: false };
    return pingMessage(this.nonce, true);
  }

  /**
   * A Pong: when it answers the session's last Ping that asked for the held leases and lists them
   * (`held`; an older executor leaves it unset), the leases sent before that Ping that the list
   * leaves out expire as lost. Returns how many did.
   */
  onPong(session: SessionHandle, nonce: bigint, held: readonly LeaseKey[] | undefined): number {
    const { host } = this;
    const ask = session.heldAsk;
    if (held === undefined || ask === undefined || ask.answered || ask.nonce !== nonce) return 0;
    ask.answered = true;
    const expired = core.listedHeld(
      host.core,
      session,
      ask.asked,
      held,
      host.moment(),
      (runId) => host.judges(runId),
      host.confine,
    );
    if (expired > 0) {
      host.log.warn(
        { session_id: session.id, executor_id: session.executorId, expired },
        "the executor does not hold leases this session gave it; they expired",
      );
      host.pump();
    }
    return expired;
  }
}
