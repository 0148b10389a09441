/**
 * One Session stream to the scheduler, from open to status. Its state is one union: opening (the
 * Attach is written, the AttachAck must come within the attach timeout), attached (a heartbeat
 * goes out whenever nothing else was written for an interval), closing (the executor half-closed
 * or cancelled it: nothing more is written) and ended (the status arrived). What the messages
 * mean is the executor's business: they go to a callback.
 *
 * Reports (Started, Heartbeat, Completed, Failed, Release) given to {@link SchedulerSession.report}
 * go out at the end of the event-loop turn, several in one Reports message, when the scheduler
 * speaks protocol version 2 (AttachAck.protocol_version); one that does not gets each at once,
 * alone. Any other message written flushes them first, so the scheduler sees everything in the
 * order it was made.
 *
 * A scheduler that does not speak the version an Attach names ends the session with
 * FAILED_PRECONDITION naming the versions it speaks: {@link fallbackVersion} says which to attach
 * with next.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  ELEMENT_FOLDERS_VERSION,
  type Logger,
  MIN_SESSION_PROTOCOL_VERSION,
  refusedVersionRange,
} from "@nexusflow/common";
import {
  ExecutorService,
  HeartbeatSchema,
  type Lease,
  type SessionRequest,
  SessionRequestSchema,
  type SessionResponse,
} from "@nexusflow/gen";
import { Changes, within } from "./changes.js";
import { type BatchableMessage, ReportFrames } from "./report-frames.js";

/** A message the executor sends on the session. */
export type RequestMessage = SessionRequest["message"];

/** The Session stream as grpc-js gives it; it writes a SessionRequest, or one already encoded. */
export type SessionCall = grpc.ClientDuplexStream<SessionRequest | Uint8Array, SessionResponse>;

/** How a session ended. */
export interface SessionEnd {
  /** Whether the scheduler had acknowledged it (AttachAck). */
  readonly attached: boolean;
  readonly code: grpc.status;
  readonly details: string;
}

/**
 * The session protocol version to attach with after a session that offered `offered` ended as
 * `end`, or undefined to attach with none other. A scheduler that does not speak `offered` refuses
 * the Attach, before its AttachAck, with FAILED_PRECONDITION and "attach.protocol_version: ...,
 * this scheduler versions {min} to {max}; ...": then the highest it speaks, when that is lower
 * than `offered` and not below what this executor speaks; for such a refusal without the range,
 * the version below `offered`.
 */
export function fallbackVersion(end: SessionEnd, offered: number): number | undefined {
  if (end.attached || end.code !== grpc.status.FAILED_PRECONDITION) return undefined;
  const range = refusedVersionRange(end.details);
  if (range === undefined) return undefined;
  const next = range.max ?? offered - 1;
  if (next >= offered || next < MIN_SESSION_PROTOCOL_VERSION || next < (range.min ?? next)) return undefined;
  return next;
}

const SESSION = ExecutorService.method.session;
const SESSION_PATH = `/${ExecutorService.typeName}/${SESSION.name}`;

/** Opens the Session stream on `client`, (de)serializing with the method's own message types. */
export function openSessionCall(client: grpc.Client, metadata: grpc.Metadata): SessionCall {
  return client.makeBidiStreamRequest(
    SESSION_PATH,
    (request: SessionRequest | Uint8Array) => {
      const bytes = request instanceof Uint8Array ? request : toBinary(SESSION.input, request);
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    },
    (bytes: Buffer) => fromBinary(SESSION.output, bytes),
    metadata,
  );
}

/** What a session needs from the executor. */
export interface SchedulerSessionOptions {
  /** Sessions of one executor are numbered from 1, for logs. */
  readonly number: number;
  /** How long the AttachAck may take; the stream is cancelled after that. */
  readonly attachTimeoutMs: number;
  readonly logger: Logger;
  /** A message from the scheduler; if it throws, the session is cancelled (and reopened). */
  readonly onMessage: (response: SessionResponse) => void;
  /** The stream ended; called once, before {@link SchedulerSession.ended} resolves. */
  readonly onEnd: (end: SessionEnd) => void;
}

type SessionState =
  | { readonly t: "opening"; readonly attachTimer: NodeJS.Timeout }
  | {
      readonly t: "attached";
      readonly id: string;
      /** Reports of the turn, when the scheduler takes them in Reports messages (version 2). */
      readonly frames: ReportFrames | undefined;
      readonly heartbeat: NodeJS.Timeout;
      /** Something was written since the last heartbeat tick (then no heartbeat is needed). */
      wroteSinceTick: boolean;
    }
  /** `id` is set when the session had been attached. */
  | { readonly t: "closing"; readonly id: string | undefined }
  | { readonly t: "ended"; readonly end: SessionEnd };

/** One Session stream. Create it on an open call, then write the Attach. */
export class SchedulerSession {
  /** See {@link SchedulerSessionOptions.number}. */
  readonly number: number;
  /** Resolves with how the session ended; never rejects. */
  readonly ended: Promise<SessionEnd>;
  readonly #call: SessionCall;
  readonly #options: SchedulerSessionOptions;
  readonly #changes = new Changes();
  #state: SessionState;
  /** See {@link SchedulerSession.protocolVersion}. */
  #protocolVersion: number | undefined;

  constructor(call: SessionCall, options: SchedulerSessionOptions) {
    this.number = options.number;
    this.#call = call;
    this.#options = options;
    this.#state = {
      t: "opening",
      attachTimer: setTimeout(() => {
        if (this.#state.t !== "opening") return;
        options.logger.warn(
          { attach_timeout_ms: options.attachTimeoutMs },
          "no AttachAck in time; reopening the session",
        );
        call.cancel();
      }, options.attachTimeoutMs),
    };
    this.ended = new Promise((resolve) => {
      call.on("status", (status: grpc.StatusObject) => {
        const end = { attached: this.id !== undefined, code: status.code, details: status.details };
        this.#enter({ t: "ended", end });
        options.onEnd(end);
        resolve(end);
      });
    });
    call.on("data", (response: SessionResponse) => {
      if (this.#state.t === "ended") return;
      try {
        options.onMessage(response);
      } catch (e) {
        options.logger.error(
          { err: e },
          "failed to handle a message from the scheduler; reopening the session",
        );
        call.cancel();
      }
    });
    // The status event says everything; without this listener an error would be thrown.
    call.on("error", () => {});
  }

  /** The session id from the AttachAck, once attached (also while closing). */
  get id(): string | undefined {
    const s = this.#state;
    return s.t === "attached" || s.t === "closing" ? s.id : undefined;
  }

  /**
   * The protocol version of the session once attached (the AttachAck's; 1 for a scheduler older
   * than versions, whose AttachAck says 0), also while closing; undefined before.
   */
  get protocolVersion(): number | undefined {
    return this.#protocolVersion;
  }

  /** Attached and not closing: leases may come, and reports and credit may go. */
  get live(): boolean {
    return this.#state.t === "attached";
  }

  /**
   * Writes `message` unless the session is closing or ended, after the reports waiting for the end
   * of the turn; returns whether it was written.
   */
  write(message: RequestMessage): boolean {
    const s = this.#state;
    if (s.t === "closing" || s.t === "ended") return false;
    if (s.t === "attached") {
      s.frames?.flush();
      s.wroteSinceTick = true;
    }
    this.#call.write(create(SessionRequestSchema, { message }));
    return true;
  }

  /**
   * Sends a report: at the end of the turn, with the turn's others, when the scheduler takes
   * Reports; at once otherwise. Returns false (and sends nothing) unless attached and not closing.
   */
  report(message: BatchableMessage): boolean {
    const s = this.#state;
    if (s.t !== "attached") return false;
    if (s.frames === undefined) return this.write(message);
    s.frames.add(message);
    return true;
  }

  /**
   * The AttachAck arrived: the session is attached as `id`, speaks `protocolVersion` (the
   * AttachAck's: 0 from a scheduler older than versions) and heartbeats every
   * `heartbeatIntervalMs` when idle. Returns false (and changes nothing) unless it was opening.
   */
  attach(id: string, heartbeatIntervalMs: number, protocolVersion: number): boolean {
    if (this.#state.t !== "opening") return false;
    const heartbeat = setInterval(() => {
      const s = this.#state;
      if (s.t !== "attached") return;
      if (!s.wroteSinceTick) this.write({ case: "heartbeat", value: create(HeartbeatSchema) });
      s.wroteSinceTick = false;
    }, heartbeatIntervalMs);
    const frames =
      protocolVersion >= 2
        ? new ReportFrames((frame) => {
            const s = this.#state;
            if (s.t !== "attached") return;
            s.wroteSinceTick = true;
            this.#call.write(frame);
          })
        : undefined;
    // The Attach itself was the last write.
    this.#protocolVersion = Math.max(protocolVersion, MIN_SESSION_PROTOCOL_VERSION);
    this.#enter({ t: "attached", id, frames, heartbeat, wroteSinceTick: true });
    return true;
  }

  /**
   * Closes the session: an attached one is half-closed, so what was written is delivered, and the
   * scheduler ends it; one that does not end within `timeoutMs` (or was not attached) is
   * cancelled. Resolves once it ended, or `timeoutMs` after cancelling.
   */
  async close(timeoutMs: number): Promise<void> {
    const s = this.#state;
    if (s.t === "ended" || s.t === "closing") return;
    // What the turn reported goes before the half-close.
    if (s.t === "attached") s.frames?.flush();
    this.#enter({ t: "closing", id: this.id });
    if (s.t === "attached") {
      this.#call.end();
      if (await this.#whenEnded(timeoutMs)) return;
      this.#options.logger.debug("the scheduler did not end the session after half-close; cancelling it");
    }
    this.#call.cancel();
    await this.#whenEnded(timeoutMs);
  }

  /** Cancels the stream at once. */
  cancel(): void {
    this.#call.cancel();
  }

  #whenEnded(timeoutMs: number): Promise<boolean> {
    return within(timeoutMs, (signal) => this.#changes.until(() => this.#state.t === "ended", signal));
  }

  /** The one place the session's state changes: the timers of the state left are cleared. */
  #enter(next: SessionState): void {
    const previous = this.#state;
    if (previous.t === "opening") clearTimeout(previous.attachTimer);
    else if (previous.t === "attached") {
      clearInterval(previous.heartbeat);
      // Not written: on an ended session the report ledger sends them again on the next.
      previous.frames?.discard();
    }
    this.#state = next;
    this.#changes.notify();
  }
}

/**
 * The lease as the session's protocol version means it. Below version 3
 * ({@link ELEMENT_FOLDERS_VERSION}) the scheduler wants each element of a map step to store in the
 * step's attempt folder, as executors did before element folders (it checks a report's keys
 * against that folder): the element index is left out, so the attempt stores there.
 */
export function spokenLease(lease: Lease, session: SchedulerSession): Lease {
  if (
    lease.elementIndex !== undefined &&
    (session.protocolVersion ?? MIN_SESSION_PROTOCOL_VERSION) < ELEMENT_FOLDERS_VERSION
  )
    lease.elementIndex = undefined;
  return lease;
}
