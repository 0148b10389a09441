/**
 * Where the executor's reports go when it has sessions to several scheduler replicas: the links
 * (replica-links.ts) by id and by the replica they reached, the route of each running attempt, the
 * latest replica map, and the reports a replica rejected NOT_FOUND (their run may have moved). A
 * lease's reports go to the replica that granted it while the map is older than the lease, else to
 * the owner of its run's partition by the map; they move when the map or the sessions change. No
 * I/O here beyond writing on the links' sessions.
 */
import { create } from "@bufbuild/protobuf";
import { isAcknowledgedReport } from "@nexusflow/common";
import { HeartbeatSchema, type LeaseKey, LeaseKeySchema } from "@nexusflow/gen";
import { within } from "./changes.js";
import { type CreditPlan, type LeaseRoute, type Link, planCredit } from "./replica-links.js";
import { type ReplicaMap, ownerOfRun } from "./replica-map.js";
import { type LedgerEntry, type Report, type SendReport, reportKey } from "./report-ledger.js";
import { leaseKeyId } from "./task-attempt.js";

/** What {@link ReplicaRouting} asks of the executor. */
export interface ReplicaRoutingOptions {
  /** Whether the replicas are asked for (discovery on): a NOT_FOUND may then mean a moved run. */
  discovering(): boolean;
  /** Asks for a replica map now. */
  askSoon(): void;
}

/** Sends on `link`'s session if it is attached, else undefined (the ledger keeps the report). */
export function senderIfLive(link: Link): SendReport | undefined {
  const session = link.session;
  // Acknowledged reports go only through the ledger, which counts them in the order the scheduler
  // receives them; the session sends them with the turn's others (SchedulerSession.report).
  return session?.live === true ? (report) => session.report(report) : undefined;
}

/** See the module comment. */
export class ReplicaRouting {
  /**
   * The sessions' links, by id: the primary one (to `schedulerAddress`, the lifecycle's session)
   * and one per other live scheduler replica. Each has its own report ledger and credit.
   */
  readonly links = new Map<string, Link>();
  /** The link of each replica reached (AttachAck.replica_id): one session per replica. */
  readonly byReplica = new Map<string, Link>();
  /** Where each running attempt's lease came from and where its reports go, by attempt id. */
  readonly routes = new Map<string, LeaseRoute>();
  /**
   * Whether several replicas were seen (a map listing two, or a session to another replica): a
   * lease's run may then move between replicas, so a Cancel for a moved partition and a NOT_FOUND
   * rejection do not end its task at once.
   */
  clustered = false;
  #primary: Link | undefined;
  #map: ReplicaMap | undefined;
  /** Reports rejected NOT_FOUND (their run may have moved), to send again by the next map. */
  readonly #misrouted = new Map<string, LedgerEntry>();
  /** When each misrouted report was first rejected NOT_FOUND (monotonic ms). */
  readonly #misroutedSince = new WeakMap<Report, number>();

  constructor(private readonly options: ReplicaRoutingOptions) {}

  /** The primary link; throws before it was set (the executor has not started). */
  get primary(): Link {
    if (this.#primary === undefined) throw new Error("the executor has not started");
    return this.#primary;
  }

  /** The primary link, or undefined before start. */
  get primaryIfSet(): Link | undefined {
    return this.#primary;
  }

  /** The replicas by the latest ListReplicas; undefined before one answered. */
  get map(): ReplicaMap | undefined {
    return this.#map;
  }

  /** Adds a link (the first one added as primary is the lifecycle's). */
  add(link: Link): void {
    if (link.primary) this.#primary = link;
    else this.clustered = true;
    this.links.set(link.id, link);
  }

  /** Takes a new map (one listing several replicas makes the executor clustered). */
  setMap(map: ReplicaMap): void {
    this.#map = map;
    if (map.replicas.size > 1) this.clustered = true;
  }

  /**
   * The attached sessions by the scheduler replica they reached (AttachAck.replica_id; "" from a
   * scheduler without replicas): one per live replica, or the one session.
   */
  sessions(): ReadonlyMap<string, string> {
    const sessions = new Map<string, string>();
    for (const link of this.links.values()) {
      const id = link.session?.live === true ? link.session.id : undefined;
      if (id !== undefined && !link.retired) sessions.set(link.replicaId, id);
    }
    return sessions;
  }

  /**
   * `link` reached replica `replicaId` (its AttachAck): records it, unless another link holds a
   * session to that replica already. Returns `link` itself when it should close (another link, not
   * the primary one, reached that replica first), the other link when that one should close (the
   * primary one wins), else undefined.
   */
  reached(link: Link, replicaId: string): Link | undefined {
    if (link.replicaId !== replicaId && this.byReplica.get(link.replicaId) === link)
      this.byReplica.delete(link.replicaId);
    link.replicaId = replicaId;
    const other = this.byReplica.get(replicaId);
    let closing: Link | undefined;
    if (other !== undefined && other !== link && !other.retired) {
      if (!link.primary) return link;
      closing = other;
    }
    this.byReplica.set(replicaId, link);
    return closing;
  }

  /** `link` leaves: it no longer stands for its replica. */
  forget(link: Link): void {
    if (this.byReplica.get(link.replicaId) === link) this.byReplica.delete(link.replicaId);
  }

  /**
   * Closes a link to a replica that left (or that another session reached): no new leases on it,
   * its queued reports go to their owners, and it is closed once its sent reports are settled
   * (acknowledged, or handed on when its session ends) or after `settleMs` (cut short when the
   * executor stops: it aborts every link's `closing` then), its session given `closeMs` to end.
   * Never the primary link.
   */
  async retire(link: Link, settleMs: number, closeMs: number): Promise<void> {
    if (link.primary || link.retired) return;
    link.retired = true;
    this.forget(link);
    this.rebalance();
    await within(settleMs, (signal) => link.ledger.whenEmpty(AbortSignal.any([signal, link.closing.signal])));
    link.closing.abort();
    await link.session?.close(closeMs);
    await link.loop;
    link.client.close();
    link.ledger.detach();
    this.links.delete(link.id);
    // What it still had (its session ended unacknowledged) goes to the owners.
    this.rebalance(link);
  }

  /** The live links to replicas the latest map no longer lists (never the primary one). */
  departed(): Link[] {
    const map = this.#map;
    if (map === undefined) return [];
    return [...this.links.values()].filter(
      (link) =>
        !link.primary && !link.retired && !map.replicas.has(link.replicaId === "" ? link.id : link.replicaId),
    );
  }

  /**
   * How the free slots are shared among the live sessions now (replica-links.ts planCredit), each
   * replica's share about proportional to the partitions it holds by the latest map.
   */
  planCredit(slots: number, running: number, rebalance: boolean): CreditPlan {
    const map = this.#map;
    return planCredit(this.links.values(), {
      slots,
      running,
      weightOf: (link) => map?.replicas.get(link.replicaId)?.partitions ?? 0,
      rebalance,
      now: performance.now(),
    });
  }

  /**
   * The link a lease's reports go to: the one it came on (`origin`) while the latest map is older
   * than the lease (`leasedAt`: its replica owned the run's partition when it granted it, which
   * the map may not show yet); else the session of the replica owning the run's partition by the
   * latest map, else `origin`, else the primary one.
   */
  route(runId: string, origin: Link | undefined, leasedAt?: number): Link {
    const primary = this.primary;
    if (this.links.size === 1) return primary;
    const viaOrigin = origin !== undefined && !origin.retired && this.links.get(origin.id) === origin;
    const map = this.#map;
    if (viaOrigin && leasedAt !== undefined && (map === undefined || map.askedAt < leasedAt)) return origin;
    const owner = map === undefined || runId === "" ? undefined : ownerOfRun(map, runId);
    const link = owner === undefined ? undefined : this.byReplica.get(owner);
    if (link !== undefined && !link.retired) return link;
    if (viaOrigin) return origin;
    return primary;
  }

  /** The link a running attempt's reports go to now. */
  linkFor(key: LeaseKey): Link | undefined {
    if (this.links.size === 1) return this.#primary;
    const route = this.routes.get(leaseKeyId(key));
    return route === undefined ? this.#primary : this.route(route.runId, route.origin, route.leasedAt);
  }

  /** Sends a report now, or queues it for the next attached session of its run's replica. */
  report(report: Report, runId: string, origin: Link | undefined, leasedAt?: number): void {
    const link = this.route(runId, origin, leasedAt);
    link.ledger.record(report, senderIfLive(link), runId, (origin ?? link).id, leasedAt);
  }

  /** {@link ReplicaRouting.report} of a running (or just ended) attempt of run `runId`. */
  reportAttempt(report: Report, attemptId: string, runId: string): void {
    const route = this.routes.get(attemptId);
    this.report(report, route?.runId ?? runId, route?.origin, route?.leasedAt);
  }

  /**
   * Leases this executor still holds, with their runs: the running tasks (`running`) and finished
   * or released ones whose report is queued on any session or waits for a map (rejected
   * NOT_FOUND): a Release not delivered yet gives its lease back free once delivered. Every
   * Attach lists them all, and every Pong asked to (Ping.list_held); each replica judges its own.
   */
  heldLeases(running: Iterable<LeaseKey>): LeaseKey[] {
    const held = new Map<string, LeaseKey>();
    for (const key of running) {
      const id = leaseKeyId(key);
      held.set(id, create(LeaseKeySchema, { ...key, runId: this.routes.get(id)?.runId ?? "" }));
    }
    for (const link of this.links.values()) {
      for (const key of link.ledger.heldLeases()) {
        const id = leaseKeyId(key);
        if (!held.has(id)) held.set(id, key);
      }
    }
    // Reports rejected NOT_FOUND, waiting for a map that says where their run went: still held.
    for (const [id, entry] of this.#misrouted) {
      const key = reportKey(entry.report);
      if (key !== undefined && !held.has(id))
        held.set(id, create(LeaseKeySchema, { ...key, runId: entry.runId }));
    }
    return [...held.values()];
  }

  /**
   * Whether a report on `key`'s lease waits for the scheduler's acknowledgement (queued or sent on
   * any session, or rejected NOT_FOUND and waiting for a map): the lease is still this executor's.
   */
  reporting(key: LeaseKey): boolean {
    if (this.#misrouted.size > 0 && this.#misrouted.has(leaseKeyId(key))) return true;
    for (const link of this.links.values()) if (link.ledger.holds(key)) return true;
    return false;
  }

  /** Reports not acknowledged yet, on every session. */
  unacknowledged(): number {
    let n = 0;
    for (const link of this.links.values()) n += link.ledger.size;
    return n;
  }

  /** Resolves true once every session's reports are acknowledged, false if `signal` aborts first. */
  async whenSettled(signal: AbortSignal): Promise<boolean> {
    for (;;) {
      const pending = [...this.links.values()].find((link) => link.ledger.size > 0);
      if (pending === undefined) return true;
      if (!(await pending.ledger.whenEmpty(signal))) return false;
    }
  }

  /**
   * A report on `key`'s lease was rejected NOT_FOUND by `link`'s replica, while this executor has
   * sessions to several: the run's partition may have moved, its new owner not loaded it yet. Its
   * last acknowledged report is kept to be sent again by the next map, the task keeps running (a
   * Heartbeat goes to the owner by the next map), and the map is asked for now; for at most the
   * session timeout since the first such rejection (no lease grace lasts longer: by then the new
   * owner has expired the lease), once a map asked for after that rejection has come: a map that
   * cannot be refreshed (the database restarting) says nothing of where the run went, and its
   * owner may hold the lease meanwhile. A rejection by a replica its reports no longer go to (a
   * report sent by an older map) is not counted: the report goes to the run's owner now. Returns
   * false (the lease is lost, as always) with one session, or once that time is over.
   */
  misroutedTo(link: Link, key: LeaseKey): boolean {
    if (!this.clustered || !this.options.discovering()) return false;
    const now = performance.now();
    const id = leaseKeyId(key);
    const entry = link.ledger.sentOn(key);
    const route = this.routes.get(id);
    const current =
      route !== undefined
        ? this.route(route.runId, route.origin, route.leasedAt)
        : entry && this.route(entry.runId, this.links.get(entry.origin), entry.leasedAt);
    const elsewhere = current !== undefined && current !== link;
    const over = (since: number): boolean =>
      !elsewhere && now - since > link.sessionTimeoutMs && (this.#map?.askedAt ?? -Infinity) > since;
    if (entry !== undefined && isAcknowledgedReport(entry.report)) {
      const since = this.#misroutedSince.get(entry.report) ?? now;
      if (over(since)) return false;
      this.#misroutedSince.set(entry.report, since);
      this.#misrouted.set(id, entry);
    } else if (route !== undefined) {
      route.notFoundSince ??= now;
      if (over(route.notFoundSince)) return false;
      route.sentTo = undefined;
    } else return false;
    if (elsewhere) this.rebalance();
    else this.options.askSoon();
    return true;
  }

  /**
   * After the map or the sessions changed: queued reports move to the link their run's owner is
   * reached on (all of `gone`'s, a link closed), reports rejected NOT_FOUND go out again, and every
   * running lease whose reports go to another replica now gets a Heartbeat there (so that the new
   * owner adopts it in its grace).
   */
  rebalance(gone?: Link): void {
    const moving: LedgerEntry[] = [];
    const links = gone === undefined ? [...this.links.values()] : [gone, ...this.links.values()];
    for (const link of links) {
      moving.push(
        ...link.ledger.take(
          (e) => link === gone || this.route(e.runId, this.links.get(e.origin), e.leasedAt) !== link,
        ),
      );
    }
    for (const entry of moving) {
      const to = this.route(entry.runId, this.links.get(entry.origin), entry.leasedAt);
      to.ledger.put(entry, senderIfLive(to));
    }
    for (const [id, entry] of [...this.#misrouted]) {
      const to = this.route(entry.runId, this.links.get(entry.origin), entry.leasedAt);
      const send = senderIfLive(to);
      if (send === undefined) continue;
      this.#misrouted.delete(id);
      to.ledger.put(entry, send);
    }
    for (const route of this.routes.values()) {
      const to = this.route(route.runId, route.origin, route.leasedAt);
      if (to === route.sentTo || to.session?.live !== true) continue;
      route.sentTo = to;
      to.session.report({ case: "heartbeat", value: create(HeartbeatSchema, { key: route.key }) });
    }
  }
}
