/**
 * The executor's sessions to the scheduler replicas: one link per replica (the primary one to the
 * configured address, the others to the replicas it discovers), each with its own session, report
 * ledger and credit; and how free slots are shared among them. No I/O here.
 */
import type * as grpc from "@grpc/grpc-js";
import type { LeaseKey } from "@nexusflow/gen";
import { ReportLedger } from "./report-ledger.js";
import type { SchedulerSession } from "./scheduler-session.js";

/** Used until an AttachAck names the session timeout (the scheduler's default). */
const DEFAULT_SESSION_TIMEOUT_MS = 10_000;

/** A session, kept open (reconnecting) to one scheduler replica. */
export interface Link {
  /** "primary", or the id of the replica it was opened for. */
  readonly id: string;
  /** The link to the configured address: its session is the executor's lifecycle session. */
  readonly primary: boolean;
  readonly address: string;
  readonly client: grpc.Client;
  /** Aborted when the link closes: cuts its reconnect backoff short. */
  readonly closing: AbortController;
  /** Its session loop; settles once its last session ended. */
  loop: Promise<void>;
  /** The current session, if any (attached or not). */
  session: SchedulerSession | undefined;
  /** The replica its last AttachAck named ("" from a scheduler without replicas). */
  replicaId: string;
  /** Its reports until acknowledged by its session. */
  readonly ledger: ReportLedger;
  /** Credit granted on the current session and not yet spent on a lease received. */
  credit: number;
  /** Attempts running whose lease came on this link. */
  running: number;
  /** How many times its sessions attached. */
  attaches: number;
  /** The session timeout its last AttachAck named, in ms: no lease grace lasts longer. */
  sessionTimeoutMs: number;
  /** Leaving: no new session, closed once its reports are settled. */
  retired: boolean;
  /** When a lease last came on it, or its session last attached (monotonic ms): see {@link isIdle}. */
  lastLeaseAt: number;
}

/** A new link (its loop not started). */
export function newLink(
  id: string,
  primary: boolean,
  address: string,
  client: grpc.Client,
  closing: AbortController,
): Link {
  return {
    id,
    primary,
    address,
    client,
    closing,
    loop: Promise.resolve(),
    session: undefined,
    replicaId: "",
    ledger: new ReportLedger(),
    credit: 0,
    running: 0,
    attaches: 0,
    sessionTimeoutMs: DEFAULT_SESSION_TIMEOUT_MS,
    retired: false,
    lastLeaseAt: performance.now(),
  };
}

/**
 * How long a link may hold credit without a lease coming before it counts as idle: its replica has
 * nothing this executor runs queued (a replica with work spends credit within a commit).
 */
export const IDLE_AFTER_MS = 250;

/** Whether `link` has held credit for {@link IDLE_AFTER_MS} with no lease coming (`now`: monotonic ms). */
export function isIdle(link: Link, now: number, idleAfterMs = IDLE_AFTER_MS): boolean {
  return link.credit > 0 && now - link.lastLeaseAt >= idleAfterMs;
}

/** The slots an idle link keeps of its share, so that work queued there starts at once. */
export function idleFloor(slots: number): number {
  return Math.max(1, Math.ceil(slots / 16));
}

/**
 * Each live link's share of `slots` (fractional): by weight, the partitions its replica holds
 * (equal shares when no weight is known). A link that is idle (`idle`) keeps at most
 * {@link idleFloor} of its share, and what it leaves goes to the links that are not, by weight: the
 * slots follow the work, so runs that are all on one replica (a coordinator's scheduled runs, one
 * replica's keyed starts) use every slot, not its partitions' share. With every link idle, or none,
 * the shares by weight.
 */
export function creditShares(
  live: readonly Link[],
  slots: number,
  weightOf: (link: Link) => number,
  idle: (link: Link) => boolean = () => false,
): number[] {
  const weights = live.map((link) => Math.max(0, weightOf(link)));
  let total = weights.reduce((a, b) => a + b, 0);
  if (total === 0) {
    weights.fill(1);
    total = live.length;
  }
  const shares = weights.map((w) => (slots * w) / total);
  const idles = live.map((link) => idle(link));
  const busyWeight = weights.reduce((a, w, i) => (idles[i] === true ? a : a + w), 0);
  const busy = idles.filter((x) => !x).length;
  if (busy === 0 || busy === live.length) return shares;
  const floor = idleFloor(slots);
  let left = 0;
  for (let i = 0; i < live.length; i++) {
    if (idles[i] !== true) continue;
    const kept = Math.min(shares[i]!, floor);
    left += shares[i]! - kept;
    shares[i] = kept;
  }
  for (let i = 0; i < live.length; i++)
    if (idles[i] !== true) shares[i]! += busyWeight === 0 ? left / busy : (left * weights[i]!) / busyWeight;
  return shares;
}

/** Where a running attempt's lease came from and where its reports went last. */
export interface LeaseRoute {
  readonly runId: string;
  /** The link the lease came on. */
  readonly origin: Link;
  readonly key: LeaseKey;
  /** The link its reports last went to; undefined: send a Heartbeat to its owner on the next map. */
  sentTo: Link | undefined;
  /** When a report of it was first rejected NOT_FOUND (its run's partition moving), monotonic ms. */
  notFoundSince: number | undefined;
  /** When the lease came (monotonic ms). */
  readonly leasedAt: number;
}

/**
 * How many of `free` slots each live link gets: each the next slot while it is furthest below its
 * share (`shares`, {@link creditShares}), counting its credit and its running attempts. Every free
 * slot is granted; with one link, all of them. O(free × links), free slots only.
 */
export function creditGrants(
  live: readonly Link[],
  free: number,
  shares: readonly number[],
): Map<Link, number> {
  const grants = new Map<Link, number>();
  if (free <= 0 || live.length === 0) return grants;
  if (live.length === 1) {
    grants.set(live[0]!, free);
    return grants;
  }
  const held = live.map((link) => link.credit + link.running);
  for (let n = 0; n < free; n++) {
    let best = 0;
    let bestGap = -Infinity;
    for (let i = 0; i < live.length; i++) {
      const gap = (shares[i] ?? 0) - held[i]!;
      if (gap > bestGap) {
        bestGap = gap;
        best = i;
      }
    }
    held[best]!++;
    const link = live[best]!;
    grants.set(link, (grants.get(link) ?? 0) + 1);
  }
  return grants;
}

/**
 * Credit to take back from live links holding more than their share (credit and running attempts
 * above `shares`, {@link creditShares}, rounded up), so that the links below theirs can be granted
 * it: at most what those lack beyond the `free` slots, and never more than a link's unspent
 * credit. Called when the sessions, the map or which links are idle change, not per task.
 */
export function creditWithdrawals(
  live: readonly Link[],
  free: number,
  shares: readonly number[],
): Map<Link, number> {
  const withdrawals = new Map<Link, number>();
  if (live.length < 2) return withdrawals;
  let lacking = 0;
  for (let i = 0; i < live.length; i++) {
    const link = live[i]!;
    lacking += Math.max(0, Math.floor(shares[i] ?? 0) - (link.credit + link.running));
  }
  let need = lacking - Math.max(0, free);
  for (let i = 0; i < live.length && need > 0; i++) {
    const link = live[i]!;
    const excess = link.credit + link.running - Math.ceil(shares[i] ?? 0);
    const w = Math.min(link.credit, excess, need);
    if (w <= 0) continue;
    withdrawals.set(link, w);
    need -= w;
  }
  return withdrawals;
}

/** Credit to withdraw from and to grant on each live link. */
export interface CreditPlan {
  withdrawals: Map<Link, number>;
  grants: Map<Link, number>;
}

/** What {@link planCredit} needs. */
export interface CreditInputs {
  /** The executor's slots. */
  readonly slots: number;
  /** Attempts running (every link's). */
  readonly running: number;
  /** A link's weight: the partitions its replica holds (0: unknown). */
  readonly weightOf: (link: Link) => number;
  /** Take back credit above a share too (the sessions, the map or the idle links changed). */
  readonly rebalance: boolean;
  /** Monotonic ms, for {@link isIdle}. */
  readonly now: number;
}

/**
 * Shares the free slots (neither running an attempt nor granted as credit on a live link) among
 * the live links (not retired, session live): each one's share by {@link creditShares}; with
 * `rebalance`, credit above a share is taken back first ({@link creditWithdrawals}). Applies the
 * plan to the links' `credit`; the caller sends a Credit (`withdraw`, then `n`) per entry.
 */
export function planCredit(links: Iterable<Link>, inputs: CreditInputs): CreditPlan {
  const live: Link[] = [];
  let credit = 0;
  for (const link of links) {
    if (link.retired || link.session?.live !== true) continue;
    live.push(link);
    credit += link.credit;
  }
  const shares = creditShares(live, inputs.slots, inputs.weightOf, (link) => isIdle(link, inputs.now));
  let free = inputs.slots - inputs.running - credit;
  const withdrawals =
    inputs.rebalance && live.length > 1 ? creditWithdrawals(live, free, shares) : new Map<Link, number>();
  for (const [link, n] of withdrawals) {
    link.credit -= n;
    free += n;
  }
  const grants = free <= 0 || live.length === 0 ? new Map<Link, number>() : creditGrants(live, free, shares);
  for (const [link, n] of grants) link.credit += n;
  return { withdrawals, grants };
}
