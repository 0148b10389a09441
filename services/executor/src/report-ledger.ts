/**
 * The reports of one executor until the scheduler has them: what it reports on a lease (Started,
 * Completed, Failed, Release) is sent on the attached session, or queued while there is none. The
 * ones the scheduler acknowledges (Completed, Failed, Release: see `isAcknowledgedReport`) are kept
 * after sending until a cumulative `Acked` covers them; a session that ends first hands them back,
 * and they go out again, first, on the next one. No I/O here: sending is a callback.
 */
import { create } from "@bufbuild/protobuf";
import { isAcknowledgedReport } from "@nexusflow/common";
import { type LeaseKey, LeaseKeySchema, type SessionRequest } from "@nexusflow/gen";
import { Changes } from "./changes.js";
import { leaseKeyId } from "./task-attempt.js";

/** A report about one lease. */
export type Report = Extract<
  SessionRequest["message"],
  { case: "started" | "completed" | "failed" | "release" }
>;

/**
 * A report with what routing needs: its lease's run (empty when unknown) and the link (session
 * to one scheduler replica) its lease came on.
 */
export interface LedgerEntry {
  readonly report: Report;
  readonly runId: string;
  readonly origin: string;
  /** When its lease came (monotonic ms): a replica map asked for before that is older than it. */
  readonly leasedAt?: number | undefined;
}

/** Writes a message on the attached session; false when the session can take nothing more. */
export type SendReport = (report: Report) => boolean;

/** What an `Acked` did. */
export type AckResult =
  /** It covered reports that were waiting: they are forgotten. */
  | "acked"
  /** It covered nothing new (a repeat, or an older count). */
  | "stale"
  /** It covered more reports than were sent on this session: a protocol error, ignored. */
  | "ahead";

/** What sending one entry did: refused (it stays queued), sent and kept until acknowledged, or sent and done. */
type Sent = "refused" | "kept" | "done";

/** The lease a report is about. */
export function reportKey(report: Report): LeaseKey | undefined {
  return report.value.key;
}

/** Reports not yet in the scheduler's hands, in the order they were made. */
export class ReportLedger {
  /** Not on the current session: made while detached, or sent on a session that ended unacknowledged. */
  #queued: LedgerEntry[] = [];
  /** Sent on the current session and not acknowledged yet, oldest first. */
  #sent: LedgerEntry[] = [];
  /** How many of the current session's acknowledged reports its `Acked` has covered. */
  #ackedThrough = 0;
  /**
   * How many entries (queued or sent) each lease has here, by {@link leaseKeyId}: {@link holds} is
   * asked for every lease that comes, and must not scan thousands of reports awaiting an `Acked`.
   * Kept in step with `#queued` and `#sent` wherever an entry enters or leaves them.
   */
  readonly #held = new Map<string, number>();
  readonly #changes = new Changes();

  /** Reports the scheduler may not have: queued, or sent and not acknowledged. */
  get size(): number {
    return this.#queued.length + this.#sent.length;
  }

  /** Queued reports, waiting for a session. */
  get queued(): number {
    return this.#queued.length;
  }

  /** Sent on the current session and not acknowledged. */
  get unacknowledged(): number {
    return this.#sent.length;
  }

  /** The current session's `Acked` count so far. */
  get ackedThrough(): number {
    return this.#ackedThrough;
  }

  /** Sends `report` with `send` (undefined: no attached session), or queues it if it cannot go now. */
  record(report: Report, send: SendReport | undefined, runId = "", origin = "", leasedAt?: number): void {
    this.put({ report, runId, origin, leasedAt }, send);
  }

  /** {@link ReportLedger.record} of an entry (one moved from another ledger). */
  put(entry: LedgerEntry, send: SendReport | undefined): void {
    const sent = send === undefined ? "refused" : this.#send(entry, send);
    if (sent === "done") return;
    this.#count(entry, 1);
    if (sent === "refused") {
      this.#queued.push(entry);
      this.#changes.notify();
    }
  }

  /** Takes the queued entries `moves` picks out of the ledger (to send them elsewhere), in order. */
  take(moves: (entry: LedgerEntry) => boolean): LedgerEntry[] {
    const taken: LedgerEntry[] = [];
    const kept: LedgerEntry[] = [];
    for (const e of this.#queued) (moves(e) ? taken : kept).push(e);
    if (taken.length === 0) return taken;
    this.#queued = kept;
    for (const e of taken) this.#count(e, -1);
    this.#changes.notify();
    return taken;
  }

  /**
   * The latest report on `key`'s lease sent on the current session and not acknowledged yet (the
   * one a Rejected names), if any.
   */
  sentOn(key: LeaseKey): LedgerEntry | undefined {
    const id = leaseKeyId(key);
    for (let i = this.#sent.length - 1; i >= 0; i--) {
      const k = reportKey(this.#sent[i]!.report);
      if (k !== undefined && leaseKeyId(k) === id) return this.#sent[i];
    }
    return undefined;
  }

  /**
   * On a new attached session: sends the queued reports in order; any the session refuses stay
   * queued, in order. Returns how many were sent.
   */
  resend(send: SendReport): number {
    const queued = this.#queued;
    this.#queued = [];
    let sent = 0;
    for (const entry of queued) {
      const result = this.#send(entry, send);
      if (result === "refused") break;
      if (result === "done") this.#count(entry, -1);
      sent++;
    }
    if (sent < queued.length) this.#queued = [...queued.slice(sent), ...this.#queued];
    // A Started that went out is done with: the ledger may be empty now.
    if (sent > 0) this.#changes.notify();
    return sent;
  }

  /** `Acked`: the scheduler committed the current session's first `through` acknowledged reports. */
  ack(through: number): AckResult {
    const n = through - this.#ackedThrough;
    if (n <= 0) return "stale";
    if (n > this.#sent.length) return "ahead";
    for (const entry of this.#sent.splice(0, n)) this.#count(entry, -1);
    this.#ackedThrough = through;
    this.#changes.notify();
    return "acked";
  }

  /** The session ended: what it did not acknowledge goes out again first, on the next one. */
  detach(): void {
    if (this.#sent.length > 0) this.#queued = [...this.#sent, ...this.#queued];
    this.#sent = [];
    this.#ackedThrough = 0;
    this.#changes.notify();
  }

  /**
   * The scheduler revoked a lease (it has its result already, or gave it away): its queued reports
   * are dropped. Returns whether there were any.
   */
  revoke(key: LeaseKey): boolean {
    const id = leaseKeyId(key);
    const before = this.#queued.length;
    this.#queued = this.#queued.filter((entry) => {
      const k = reportKey(entry.report);
      if (k === undefined || leaseKeyId(k) !== id) return true;
      this.#count(entry, -1);
      return false;
    });
    if (this.#queued.length === before) return false;
    this.#changes.notify();
    return true;
  }

  /**
   * Leases whose reports are not acknowledged yet (finished, the result not delivered; or given
   * back by a Release not delivered): every lease with a report here, each once, in the order first
   * reported, with its run (LeaseKey.run_id) when known. A released lease is listed too: the
   * scheduler expires a lease an executor does not list (LEASE_EXPIRED, a failed attempt), while
   * the Release sent again after the list gives it back free, as the executor meant.
   */
  heldLeases(): LeaseKey[] {
    const held = new Map<string, LeaseKey>();
    for (const { report, runId } of [...this.#sent, ...this.#queued]) {
      const key = reportKey(report);
      if (key !== undefined) held.set(leaseKeyId(key), create(LeaseKeySchema, { ...key, runId }));
    }
    return [...held.values()];
  }

  /**
   * Whether a report on `key`'s lease is here (queued, or sent and not acknowledged). Asked for
   * every lease that comes: one look-up, however many reports wait.
   */
  holds(key: LeaseKey): boolean {
    return this.#held.has(leaseKeyId(key));
  }

  /** Resolves true once every report is acknowledged, false if `signal` aborts first. */
  whenEmpty(signal: AbortSignal): Promise<boolean> {
    return this.#changes.until(() => this.size === 0, signal);
  }

  /** Sends `entry`; one the scheduler acknowledges is kept in `#sent` (the caller counts it). */
  #send(entry: LedgerEntry, send: SendReport): Sent {
    if (!send(entry.report)) return "refused";
    if (!isAcknowledgedReport(entry.report)) return "done";
    this.#sent.push(entry);
    return "kept";
  }

  /** `entry` entered the ledger (1) or left it (-1): see `#held`. */
  #count(entry: LedgerEntry, by: 1 | -1): void {
    const key = reportKey(entry.report);
    if (key === undefined) return;
    const id = leaseKeyId(key);
    const n = (this.#held.get(id) ?? 0) + by;
    if (n > 0) this.#held.set(id, n);
    else this.#held.delete(id);
  }
}
