/**
 * The executor's lifecycle as one union whose states carry their own data (as connect-node's
 * `http2-session-manager.ts` does): the session, the drain reason, the pending `start()` exist
 * only in the states that have them. The functions here are the rules, without I/O: what follows
 * what. The executor enters the states and carries out the effects.
 *
 *   idle -> connecting <-> attached
 *   connecting | attached -> draining -> closing -> stopped (and idle -> stopped)
 */
import type * as grpc from "@grpc/grpc-js";
import type { SchedulerSession } from "./scheduler-session.js";

/**
 * Lifecycle states as the executor shows them. CONNECTING: opening (or reopening) the session;
 * ATTACHED: the scheduler acknowledged it and may lease tasks; DRAINING: `stop()` was called, no
 * new tasks are taken (the session may still be reconnecting to deliver reports); STOPPED: closed
 * for good.
 */
export type ExecutorState = "IDLE" | "CONNECTING" | "ATTACHED" | "DRAINING" | "STOPPED";

/** What a started executor holds until it stops. */
export interface Run {
  readonly client: grpc.Client;
  /** Aborted when the executor closes: cuts a reconnect backoff short. */
  readonly closing: AbortController;
  /** The connect loop; settles once the last session ended. */
  loop: Promise<void>;
  /** Sessions opened so far (they are numbered from 1, for logs). */
  sessions: number;
}

/** The pending `start()`. */
export interface StartWaiter {
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

/** Not started. */
export interface Idle {
  readonly t: "idle";
}

/** Opening a session or waiting to (backoff); `session` is one waiting for its AttachAck. */
export interface Connecting<S = SchedulerSession> {
  readonly t: "connecting";
  readonly run: Run;
  readonly session: S | undefined;
  /** `start()`, until the first AttachAck; undefined once the executor has attached. */
  readonly start: StartWaiter | undefined;
}

/** The scheduler acknowledged `session` and may lease tasks. */
export interface Attached<S = SchedulerSession> {
  readonly t: "attached";
  readonly run: Run;
  readonly session: S;
}

/** `stop()` was called: no new tasks; the session may still reconnect to deliver reports. */
export interface Draining<S = SchedulerSession> {
  readonly t: "draining";
  readonly run: Run;
  readonly session: S | undefined;
  /** Sent in Drain and in the Release of leases that still arrive. */
  readonly reason: string;
  readonly attachedBefore: boolean;
}

/** Drained: the session is being closed and is not reopened. */
export interface Closing<S = SchedulerSession> {
  readonly t: "closing";
  readonly run: Run;
  readonly session: S | undefined;
  /** As in {@link Draining}. */
  readonly reason: string;
}

/** Closed for good. */
export interface Stopped {
  readonly t: "stopped";
}

/** The executor's state. */
export type State<S = SchedulerSession> =
  Idle | Connecting<S> | Attached<S> | Draining<S> | Closing<S> | Stopped;

/** The state as the executor shows it. */
export function publicState(state: State<unknown>): ExecutorState {
  switch (state.t) {
    case "idle":
      return "IDLE";
    case "connecting":
      return "CONNECTING";
    case "attached":
      return "ATTACHED";
    case "draining":
    case "closing":
      return "DRAINING";
    case "stopped":
      return "STOPPED";
  }
}

/** The current session, if any. */
export function sessionOf<S>(state: State<S>): S | undefined {
  return state.t === "idle" || state.t === "stopped" ? undefined : state.session;
}

/** Whether sessions are (re)opened: started and not closing. */
export function reconnects(state: State<unknown>): boolean {
  return state.t === "connecting" || state.t === "attached" || state.t === "draining";
}

/** Whether leases are taken and credit granted: started and not draining. */
export function takesWork(state: State<unknown>): boolean {
  return state.t === "connecting" || state.t === "attached";
}

/** The reason `stop()` was given, once it was (draining or closing): leases that come are released with it. */
export function stopReason(state: State<unknown>): string | undefined {
  return state.t === "draining" || state.t === "closing" ? state.reason : undefined;
}

/** Whether a session was ever attached (a refusal is then no longer fatal). */
export function attachedBefore(state: State<unknown>): boolean {
  switch (state.t) {
    case "connecting":
      return state.start === undefined;
    case "draining":
      return state.attachedBefore;
    case "attached":
      return true;
    default:
      return false;
  }
}

/** A session was opened. */
export function opened<S>(state: State<S>, session: S): State<S> {
  return state.t === "connecting" || state.t === "draining" ? { ...state, session } : state;
}

/** The current session was attached (AttachAck). */
export function attached<S>(state: State<S>): State<S> {
  switch (state.t) {
    case "connecting":
      return state.session === undefined ? state : { t: "attached", run: state.run, session: state.session };
    case "draining":
      return { ...state, attachedBefore: true };
    default:
      return state;
  }
}

/** The current session ended. */
export function sessionEnded<S>(state: State<S>): State<S> {
  switch (state.t) {
    case "attached":
      return { t: "connecting", run: state.run, session: undefined, start: undefined };
    case "connecting":
    case "draining":
    case "closing":
      return { ...state, session: undefined };
    default:
      return state;
  }
}

/** `stop()` was called on a started executor. */
export function draining<S>(state: State<S>, reason: string): State<S> {
  if (state.t !== "connecting" && state.t !== "attached") return state;
  return {
    t: "draining",
    run: state.run,
    session: state.session,
    reason,
    attachedBefore: attachedBefore(state),
  };
}

/** Drained: close the session for good. */
export function closing<S>(state: State<S>): State<S> {
  return state.t === "draining"
    ? { t: "closing", run: state.run, session: state.session, reason: state.reason }
    : state;
}
