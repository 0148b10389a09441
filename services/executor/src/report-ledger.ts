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

/** An entry in the ledger, linked into the chain it waits in (queued, or sent). */
interface Node {
  readonly entry: LedgerEntry;
  /** {@link leaseKeyId} of its report's lease (undefined: a report without a key). */
  readonly id: string | undefined;
  /** Which chain it is in: `#queued` or `#sent`. */
  in: "queued" | "sent";
  /** When it was sent on the current session (a count): the latest of a lease is the one a Rejected names. */
  sentAt: number;
  prev: Node | undefined;
  next: Node | undefined;
}

/** Nodes in order: appended, taken from the front, or removed anywhere, each in constant time. */
class Chain {
  head: Node | undefined;
  tail: Node | undefined;
  length = 0;

  push(node: Node): void {
    node.prev = this.tail;
    node.next = undefined;
    if (this.tail === undefined) this.head = node;
    else this.tail.next = node;
    this.tail = node;
    this.length++;
  }

  remove(node: Node): void {
    if (node.prev === undefined) this.head = node.next;
    else node.prev.next = node.next;
    if (node.next === undefined) this.tail = node.prev;
    else node.next.prev = node.prev;
    node.prev = node.next = undefined;
    this.length--;
  }

  /** Puts every node of `front` before this chain's, in their order; `front` is left empty. */
  prepend(front: Chain): void {
    if (front.head === undefined || front.tail === undefined) return;
    if (this.head === undefined) this.tail = front.tail;
    else {
      front.tail.next = this.head;
      this.head.prev = front.tail;
    }
    this.head = front.head;
    this.length += front.length;
    front.head = front.tail = undefined;
    front.length = 0;
  }

  *[Symbol.iterator](): Generator<Node> {
    for (let node = this.head; node !== undefined;) {
      const next = node.next;
      yield node;
      node = next;
    }
  }
}

/** Reports not yet in the scheduler's hands, in the order they were made. */
export class ReportLedger {
  /** Not on the current session: made while detached, or sent on a session that ended unacknowledged. */
  readonly #queued = new Chain();
  /** Sent on the current session and not acknowledged yet, oldest first. */
  readonly #sent = new Chain();
  /** How many of the current session's acknowledged reports its `Acked` has covered. */
  #ackedThrough = 0;
  /** How many reports were kept after sending (numbers `Node.sentAt`). */
  #sends = 0;
  /**
   * The entries (queued or sent) of each lease, by {@link leaseKeyId}: {@link holds} is asked for
   * every lease that comes, {@link sentOn} for every Rejected and {@link revoke} for every lease an
   * AttachAck revokes, and none may scan thousands of reports awaiting an `Acked` (thousands of
   * rejections or revocations at once would hold the event loop for a quadratic time). Kept in
   * step with `#queued` and `#sent` wherever an entry enters or leaves them.
   */
  readonly #byLease = new Map<string, Set<Node>>();
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
    const key = reportKey(entry.report);
    const node: Node = {
      entry,
      id: key === undefined ? undefined : leaseKeyId(key),
      in: "queued",
      sentAt: 0,
      prev: undefined,
      next: undefined,
    };
    this.#index(node);
    if (sent === "kept") this.#keep(node);
    else {
      this.#queued.push(node);
      this.#changes.notify();
    }
  }

  /** Takes the queued entries `moves` picks out of the ledger (to send them elsewhere), in order. */
  take(moves: (entry: LedgerEntry) => boolean): LedgerEntry[] {
    const taken = [...this.#queued].filter((node) => moves(node.entry));
    if (taken.length === 0) return [];
    for (const node of taken) {
      this.#queued.remove(node);
      this.#unindex(node);
    }
    this.#changes.notify();
    return taken.map((node) => node.entry);
  }

  /**
   * The latest report on `key`'s lease sent on the current session and not acknowledged yet (the
   * one a Rejected names), if any. Looks at that lease's reports only.
   */
  sentOn(key: LeaseKey): LedgerEntry | undefined {
    let latest: Node | undefined;
    for (const node of this.#byLease.get(leaseKeyId(key)) ?? []) {
      if (node.in === "sent" && (latest === undefined || node.sentAt > latest.sentAt)) latest = node;
    }
    return latest?.entry;
  }

  /**
   * On a new attached session: sends the queued reports in order; any the session refuses stay
   * queued, in order. Returns how many were sent.
   */
  resend(send: SendReport): number {
    let sent = 0;
    // Those queued now: any queued meanwhile wait behind the ones refused.
    for (let left = this.#queued.length; left > 0; left--) {
      const node = this.#queued.head;
      if (node === undefined) break;
      const result = this.#send(node.entry, send);
      if (result === "refused") break;
      this.#queued.remove(node);
      if (result === "kept") this.#keep(node);
      else this.#unindex(node);
      sent++;
    }
    // A Started that went out is done with: the ledger may be empty now.
    if (sent > 0) this.#changes.notify();
    return sent;
  }

  /** `Acked`: the scheduler committed the current session's first `through` acknowledged reports. */
  ack(through: number): AckResult {
    const n = through - this.#ackedThrough;
    if (n <= 0) return "stale";
    if (n > this.#sent.length) return "ahead";
    for (let i = 0; i < n; i++) {
      const node = this.#sent.head;
      if (node === undefined) break;
      this.#sent.remove(node);
      this.#unindex(node);
    }
    this.#ackedThrough = through;
    this.#changes.notify();
    return "acked";
  }

  /** The session ended: what it did not acknowledge goes out again first, on the next one. */
  detach(): void {
    for (const node of this.#sent) node.in = "queued";
    this.#queued.prepend(this.#sent);
    this.#ackedThrough = 0;
    this.#changes.notify();
  }

  /**
   * The scheduler revoked a lease (it has its result already, or gave it away): its queued reports
   * are dropped. Returns whether there were any. Looks at that lease's reports only.
   */
  revoke(key: LeaseKey): boolean {
    const nodes = this.#byLease.get(leaseKeyId(key));
    if (nodes === undefined) return false;
    let dropped = false;
    for (const node of [...nodes]) {
      if (node.in !== "queued") continue;
      this.#queued.remove(node);
      this.#unindex(node);
      dropped = true;
    }
    if (dropped) this.#changes.notify();
    return dropped;
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
    for (const { entry } of [...this.#sent, ...this.#queued]) {
      const key = reportKey(entry.report);
      if (key !== undefined)
        held.set(leaseKeyId(key), create(LeaseKeySchema, { ...key, runId: entry.runId }));
    }
    return [...held.values()];
  }

  /**
   * Whether a report on `key`'s lease is here (queued, or sent and not acknowledged). Asked for
   * every lease that comes: one look-up, however many reports wait.
   */
  holds(key: LeaseKey): boolean {
    return this.#byLease.has(leaseKeyId(key));
  }

  /** Resolves true once every report is acknowledged, false if `signal` aborts first. */
  whenEmpty(signal: AbortSignal): Promise<boolean> {
    return this.#changes.until(() => this.size === 0, signal);
  }

  /** Sends `entry`: one the scheduler acknowledges is to be kept until its `Acked` (the caller keeps it). */
  #send(entry: LedgerEntry, send: SendReport): Sent {
    if (!send(entry.report)) return "refused";
    return isAcknowledgedReport(entry.report) ? "kept" : "done";
  }

  /** `node` was sent on the current session: it waits for its `Acked`, the latest sent on its lease. */
  #keep(node: Node): void {
    node.in = "sent";
    node.sentAt = ++this.#sends;
    this.#sent.push(node);
  }

  /** `node` entered the ledger: see `#byLease`. */
  #index(node: Node): void {
    if (node.id === undefined) return;
    const nodes = this.#byLease.get(node.id);
    if (nodes === undefined) this.#byLease.set(node.id, new Set([node]));
    else nodes.add(node);
  }

  /** `node` left the ledger (it is in neither chain now): see `#byLease`. */
  #unindex(node: Node): void {
    if (node.id === undefined) return;
    const nodes = this.#byLease.get(node.id);
    if (nodes === undefined) return;
    nodes.delete(node);
    if (nodes.size === 0) this.#byLease.delete(node.id);
  }
}
