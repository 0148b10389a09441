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
  };
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
}

/**
 * How many of `free` slots each live link gets: each the next slot while it is furthest below its
 * share (`slots` times its weight, the partitions its replica holds, over all weights; equal
 * shares when no weight is known), counting its credit and its running attempts. Every free slot
 * is granted; with one link, all of them. O(free × links), free slots only.
 */
export function creditGrants(
  live: readonly Link[],
  free: number,
  slots: number,
  weightOf: (link: Link) => number,
): Map<Link, number> {
  const grants = new Map<Link, number>();
  if (free <= 0 || live.length === 0) return grants;
  if (live.length === 1) {
    grants.set(live[0]!, free);
    return grants;
  }
  const weights = live.map((link) => Math.max(0, weightOf(link)));
  let total = weights.reduce((a, b) => a + b, 0);
  if (total === 0) {
    weights.fill(1);
    total = live.length;
  }
  const held = live.map((link) => link.credit + link.running);
  for (let n = 0; n < free; n++) {
    let best = 0;
    let bestGap = -Infinity;
    for (let i = 0; i < live.length; i++) {
      const gap = (slots * weights[i]!) / total - held[i]!;
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
 * Credit to take back from live links holding more than their share (credit and running
 * attempts above `slots` times their weight over all weights, rounded up), so that the links below
 * theirs can be granted it: at most what those lack beyond the `free` slots, and never more than a
 * link's unspent credit. Called when the sessions or the map change, not per task.
 */
export function creditWithdrawals(
  live: readonly Link[],
  free: number,
  slots: number,
  weightOf: (link: Link) => number,
): Map<Link, number> {
  const withdrawals = new Map<Link, number>();
  if (live.length < 2) return withdrawals;
  const weights = live.map((link) => Math.max(0, weightOf(link)));
  let total = weights.reduce((a, b) => a + b, 0);
  if (total === 0) {
    weights.fill(1);
    total = live.length;
  }
  const share = (i: number): number => Math.ceil((slots * weights[i]!) / total);
  let lacking = 0;
  for (let i = 0; i < live.length; i++) {
    const link = live[i]!;
    lacking += Math.max(0, Math.floor((slots * weights[i]!) / total) - (link.credit + link.running));
  }
  let need = lacking - Math.max(0, free);
  for (let i = 0; i < live.length && need > 0; i++) {
    const link = live[i]!;
    const excess = link.credit + link.running - share(i);
    const w = Math.min(link.credit, excess, need);
    if (w <= 0) continue;
    withdrawals.set(link, w);
    need -= w;
  }
  return withdrawals;
}
