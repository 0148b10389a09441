/**
 * Routing between scheduler replicas (issue #22, milestone 3): which live replica owns each
 * partition, and one gRPC client per replica address to forward a call to it.
 *
 * The owners come from the `partitions` and `replicas` tables (a partition whose lease holds, of a
 * replica whose heartbeat is younger than a lease and that advertises an address), read in one
 * statement and cached. The cache is read again on a miss (a partition with no known owner, or one
 * it names this replica for while it does not hold it) and after a forwarded call answered
 * UNAVAILABLE ({@link ReplicaRouter.invalidate}), never more often than `refreshIntervalMs`: a call
 * for a run of a partition held here costs no database read, and neither does one whose owner is
 * known. While something follows a run held elsewhere ({@link ReplicaRouter.onMove}: a WatchRun),
 * the table is read every `watchIntervalMs`, so that an owner that stopped answering (killed,
 * paused) is replaced by the replica that takes its partitions.
 *
 * A forwarded call carries the caller's metadata (authorization, traceparent, ...), the remaining
 * deadline and `nexusflow-forwarded-by: <replica id>`; a replica never forwards a call that has
 * that header (see api/workflow-service.ts). Clients of replicas that left the table are closed at
 * the next read; {@link ReplicaRouter.stop} closes them all.
 */
import { create, fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { ApiError, Code, type FieldViolation, type Logger, clientConstructor } from "@nexusflow/common";
import { CancelRunRequestSchema, type CancelRunResponse, WorkflowService } from "@nexusflow/gen";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  ResourceInfoSchema,
} from "@nexusflow/gen/google/rpc/error_details_pb";
import { StatusSchema } from "@nexusflow/gen/google/rpc/status_pb";
import type pg from "pg";
import { partitionOf, type OwnedPartition } from "./partitioning.js";

/** The header a forwarded call carries: the id of the replica that forwarded it. */
export const FORWARDED_BY_HEADER = "nexusflow-forwarded-by";

/** ErrorInfo reason of the UNAVAILABLE a replica answers a forwarded call for a run it does not hold. */
export const RUN_MOVING_REASON = "RUN_MOVING";
const DOMAIN = "nexusflow.dev";

/** A live replica, as other replicas reach it. */
export interface ReplicaAddress {
  id: string;
  address: string;
}

/** What the router reads of this replica's partition leases (cluster/partition-leases.ts). */
export interface RouterLeases {
  readonly replicaId: string;
  readonly leaseMs: number;
  readonly partitionCount: number;
  epochOf(partition: number): number | undefined;
  held(): OwnedPartition[];
  /** Adds a listener told of partitions taken, lost, and about to be released. */
  listen(listener: {
    onLost?: (partitions: readonly number[]) => void;
    onTaken?: (partitions: readonly number[]) => void;
    beforeRelease?: (partitions: readonly number[]) => Promise<void>;
  }): void;
}

/** Options of {@link ReplicaRouter}. */
export interface ReplicaRouterOptions {
  /** Where `partitions` and `replicas` are read. */
  pool: Pick<pg.Pool, "query">;
  leases: RouterLeases;
  log: Logger;
  /** Least time between two reads of the owners on misses. @default leaseMs / 10 */
  refreshIntervalMs?: number;
  /** Time between two reads of the owners while a watch follows a run held elsewhere. @default leaseMs / 2 */
  watchIntervalMs?: number;
  /**
   * Deadline of a call this replica makes on its own (no incoming call to take one from: e.g. the
   * fire loop's cancel). @default 30000
   */
  ownCallTimeoutMs?: number;
  /** Channel options of the clients to other replicas. @default keepalive every 10 s, any message size */
  channelOptions?: grpc.ChannelOptions;
}

/** The router's state. */
export type ReplicaRouterState = { kind: "IDLE" } | { kind: "RUNNING" } | { kind: "STOPPED" };

const OWNERS_SQL = `SELECT p.partition, r.id::text AS id, r.address
FROM partitions p JOIN replicas r ON r.id = p.owner
WHERE p.lease_expires_at > now() AND r.heartbeat_at > now() - $1 * interval '1 millisecond'
  AND r.address <> ''`;

/** Headers of a call that describe its own hop, not the caller: never copied to a forwarded call. */
const HOP_HEADERS = new Set([
  "content-type",
  "user-agent",
  "te",
  "host",
  "connection",
  "accept-encoding",
  "grpc-accept-encoding",
  "grpc-encoding",
  "grpc-timeout",
  FORWARDED_BY_HEADER,
]);

/** The replica id a call was forwarded by (its {@link FORWARDED_BY_HEADER}), if it was. */
export function forwardedBy(metadata: grpc.Metadata): string | undefined {
  const value = metadata.get(FORWARDED_BY_HEADER)[0];
  return typeof value === "string" && value !== "" ? value : undefined;
}

/** The UNAVAILABLE a replica answers a forwarded call for a run it does not hold. */
export function runMoving(runId: string): ApiError {
  return new ApiError(Code.UNAVAILABLE, `run ${runId} is moving between replicas; retry`, [], {
    errorInfo: { reason: RUN_MOVING_REASON, domain: DOMAIN, metadata: { run_id: runId } },
  });
}

/** Whether `e` is {@link runMoving}'s answer (as an ApiError, after {@link apiErrorOf}). */
export function isRunMoving(e: unknown): boolean {
  return e instanceof ApiError && e.errorInfo?.reason === RUN_MOVING_REASON;
}

/** Whether an error from a gRPC client is one (grpc-js's ServiceError shape). */
function isServiceError(e: unknown): e is grpc.ServiceError {
  return e instanceof Error && typeof (e as { code?: unknown }).code === "number" && "metadata" in e;
}

/**
 * A status another replica answered (a grpc-js ServiceError) as the ApiError that answers it again
 * as it was: code, message and the details a scheduler sends (field violations, error info,
 * resource info) from its `grpc-status-details-bin`. Any other error is returned as it is.
 */
export function apiErrorOf(e: unknown): Error {
  if (!isServiceError(e)) return e instanceof Error ? e : new Error(String(e));
  const code = e.code as Code;
  let message = e.details;
  const violations: FieldViolation[] = [];
  const options: ConstructorParameters<typeof ApiError>[3] = { cause: e };
  const bin = e.metadata.get("grpc-status-details-bin")[0];
  if (bin instanceof Buffer) {
    try {
      const status = fromBinary(StatusSchema, bin);
      if (status.message !== "") message = status.message;
      for (const any of status.details) {
        const badRequest = anyUnpack(any, BadRequestSchema);
        if (badRequest !== undefined)
          for (const v of badRequest.fieldViolations)
            violations.push({ field: v.field, description: v.description });
        const info = anyUnpack(any, ErrorInfoSchema);
        if (info !== undefined)
          options.errorInfo = { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } };
        const resource = anyUnpack(any, ResourceInfoSchema);
        if (resource !== undefined)
          options.resourceInfo = {
            resourceType: resource.resourceType,
            resourceName: resource.resourceName,
            description: resource.description,
          };
      }
    } catch {
      // Undecodable details: the code and message still say what happened.
    }
  }
  return new ApiError(code, message, violations, options);
}

/** A unary method of the generic client: request, metadata, options, callback. */
type UnaryMethod = (
  req: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (e: grpc.ServiceError | null, res?: unknown) => void,
) => grpc.ClientUnaryCall;
/** A server-streaming method of the generic client. */
type StreamMethod = (
  req: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
) => grpc.ClientReadableStream<unknown>;

/** What a forwarded call takes from the incoming one. */
export interface IncomingCall {
  metadata: grpc.Metadata;
  getDeadline(): grpc.Deadline;
  /** Told when the caller cancels (a server call's "cancelled" event). */
  on?(event: "cancelled", listener: () => void): unknown;
  removeListener?(event: "cancelled", listener: () => void): unknown;
}

/** See the module comment. */
export class ReplicaRouter {
  private stateValue: ReplicaRouterState = { kind: "IDLE" };
  private owners = new Map<number, ReplicaAddress>();
  private readAt = Number.NEGATIVE_INFINITY;
  private stale = false;
  private reading: Promise<void> | undefined;
  private readonly clients = new Map<string, grpc.Client>();
  private readonly moveListeners = new Set<() => void>();
  /** Listeners that follow a run held elsewhere: the owners are read every watch interval for them. */
  private readonly pollers = new Set<() => void>();
  private watchTimer: NodeJS.Timeout | undefined;
  private nextAny = 0;
  private readonly refreshIntervalMs: number;
  private readonly watchIntervalMs: number;
  private readonly ownCallTimeoutMs: number;
  private static readonly Client = clientConstructor(WorkflowService);
  /** Counters (tests, logs). */
  readonly stats = { reads: 0, forwarded: 0 };

  constructor(private readonly options: ReplicaRouterOptions) {
    this.refreshIntervalMs = options.refreshIntervalMs ?? Math.max(10, options.leases.leaseMs / 10);
    this.watchIntervalMs = options.watchIntervalMs ?? Math.max(50, options.leases.leaseMs / 2);
    this.ownCallTimeoutMs = options.ownCallTimeoutMs ?? 30_000;
  }

  get state(): ReplicaRouterState {
    return this.stateValue;
  }

  /**
   * Starts: follows the partitions this replica takes, loses and releases (moves told to
   * {@link onMove}'s listeners). Owners are read on the first lookup.
   */
  start(): void {
    if (this.stateValue.kind !== "IDLE")
      throw new Error(`cannot start a router that is ${this.stateValue.kind}`);
    this.stateValue = { kind: "RUNNING" };
    this.options.leases.listen({
      onTaken: () => this.moved(),
      onLost: () => this.moved(),
      beforeRelease: (partitions) => {
        this.movedOnceReleased(partitions);
        return Promise.resolve();
      },
    });
  }

  /** Tells the listeners once `partitions` are no longer held (the leases drop them after every beforeRelease). */
  private movedOnceReleased(partitions: readonly number[], tries = 0): void {
    const timer = setTimeout(() => {
      if (this.stateValue.kind !== "RUNNING") return;
      const { leases } = this.options;
      if (tries < 1000 && partitions.some((p) => leases.epochOf(p) !== undefined))
        this.movedOnceReleased(partitions, tries + 1);
      else this.moved();
    }, 10);
    timer.unref();
  }

  /** This replica's id. */
  get replicaId(): string {
    return this.options.leases.replicaId;
  }

  /** Whether this replica holds the run's partition now. */
  holdsRun(runId: string): boolean {
    const { leases } = this.options;
    return leases.epochOf(partitionOf(runId, leases.partitionCount)) !== undefined;
  }

  /** Whether this replica holds `partition` now. */
  holds(partition: number): boolean {
    return this.options.leases.epochOf(partition) !== undefined;
  }

  /** Whether this replica holds any partition now. */
  holdsAny(): boolean {
    return this.options.leases.held().length > 0;
  }

  /** The partition count of the installation. */
  get partitionCount(): number {
    return this.options.leases.partitionCount;
  }

  /**
   * The live owner of `partition` (maybe this replica), from the cache; read again (at most once per
   * refresh interval) when the cache names none, names this replica while it does not hold the
   * partition, or was invalidated. Undefined: no live replica holds it (a takeover is under way).
   */
  async ownerOf(partition: number): Promise<ReplicaAddress | undefined> {
    const cached = this.owners.get(partition);
    const miss =
      this.stale ||
      cached === undefined ||
      (cached.id === this.replicaId && this.options.leases.epochOf(partition) === undefined);
    if (miss) await this.read(false);
    return this.owners.get(partition);
  }

  /** The live owner of a run's partition (see {@link ownerOf}). */
  ownerOfRun(runId: string): Promise<ReplicaAddress | undefined> {
    return this.ownerOf(partitionOf(runId, this.options.leases.partitionCount));
  }

  /** The owner of a run's partition as the cache has it now (no read). */
  cachedOwnerOfRun(runId: string): ReplicaAddress | undefined {
    return this.owners.get(partitionOf(runId, this.options.leases.partitionCount));
  }

  /** How long to wait before asking again for an owner that was not found or did not answer. */
  get retryDelayMs(): number {
    return this.refreshIntervalMs;
  }

  /** A live replica other than this one that holds partitions (in turn), for a StartRun this one cannot take. */
  async anyOwner(): Promise<ReplicaAddress | undefined> {
    let others = this.otherOwners();
    if (others.length === 0 || this.stale) {
      await this.read(false);
      others = this.otherOwners();
    }
    const pick = others[this.nextAny++ % Math.max(1, others.length)];
    return pick;
  }

  private otherOwners(): ReplicaAddress[] {
    const byId = new Map<string, ReplicaAddress>();
    for (const o of this.owners.values()) if (o.id !== this.replicaId) byId.set(o.id, o);
    return [...byId.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  /** The cache may be wrong (a forwarded call answered UNAVAILABLE): the next lookup reads the table. */
  invalidate(): void {
    this.stale = true;
  }

  /**
   * Reads the owners now, or waits for the read in progress; a read made less than the refresh
   * interval ago is followed by one once the interval has passed (so that the table is read at most
   * once per interval, and a miss still gets an answer newer than itself).
   */
  async read(force: boolean): Promise<void> {
    if (this.stateValue.kind !== "RUNNING") return;
    if (this.reading !== undefined) return this.reading;
    const wait = force ? 0 : this.readAt + this.refreshIntervalMs - performance.now();
    const reading = (
      wait > 0
        ? new Promise<void>((resolve) => setTimeout(resolve, wait)).then(() => this.readOnce())
        : this.readOnce()
    ).finally(() => {
      if (this.reading === reading) this.reading = undefined;
    });
    this.reading = reading;
    return reading;
  }

  private async readOnce(): Promise<void> {
    if (this.stateValue.kind !== "RUNNING") return;
    this.readAt = performance.now();
    this.stale = false;
    this.stats.reads++;
    const { rows } = await this.options.pool.query<{ partition: number; id: string; address: string }>(
      OWNERS_SQL,
      [this.options.leases.leaseMs],
    );
    const owners = new Map<number, ReplicaAddress>();
    for (const r of rows) owners.set(r.partition, { id: r.id, address: r.address });
    let changed = owners.size !== this.owners.size;
    for (const [p, o] of owners) if (this.owners.get(p)?.id !== o.id) changed = true;
    this.owners = owners;
    // Clients of replicas that hold nothing any more (stopped, or dead) are closed.
    const addresses = new Set([...owners.values()].map((o) => o.address));
    for (const [address, client] of this.clients) {
      if (addresses.has(address)) continue;
      client.close();
      this.clients.delete(address);
    }
    if (changed) this.moved();
  }

  /** The WorkflowService client of a replica (one per address, kept while it holds partitions). */
  client(address: string): grpc.Client {
    if (this.stateValue.kind !== "RUNNING")
      throw new ApiError(Code.UNAVAILABLE, "this scheduler replica is stopping; retry");
    let client = this.clients.get(address);
    if (client === undefined) {
      client = new ReplicaRouter.Client(address, grpc.credentials.createInsecure(), {
        "grpc.keepalive_time_ms": 10_000,
        "grpc.keepalive_timeout_ms": 5_000,
        // Unlimited, as a replica sends answers of any size (a run whose input and tasks' inputs add
        // up to more than 16 MiB): with a limit, such a run's forwarded GetRun or CancelRun failed
        // RESOURCE_EXHAUSTED here although the owner had acted, and a WatchRun could not follow it.
        "grpc.max_receive_message_length": -1,
        ...this.options.channelOptions,
      });
      this.clients.set(address, client);
    }
    return client;
  }

  /** The metadata of a call forwarded on behalf of `call` (or of this replica itself, without one). */
  forwardedMetadata(call?: IncomingCall): grpc.Metadata {
    const out = new grpc.Metadata();
    if (call !== undefined) {
      for (const key of Object.keys(call.metadata.toJSON())) {
        if (HOP_HEADERS.has(key) || key.startsWith(":") || key.startsWith("grpc-")) continue;
        for (const v of call.metadata.get(key)) out.add(key, v);
      }
    }
    out.set(FORWARDED_BY_HEADER, this.replicaId);
    return out;
  }

  /**
   * Calls the unary WorkflowService method `method` (its local name, e.g. "cancelRun") of `owner` on
   * behalf of `call`: its metadata, its deadline, cancelled with it. The owner's error is thrown as
   * an ApiError that answers the same status ({@link apiErrorOf}); an UNAVAILABLE invalidates the
   * cache. An answer that the run is moving is retried (twice, after reading the owners again):
   * the owner acted on nothing.
   */
  async forward<Res>(
    method: string,
    owner: ReplicaAddress,
    req: unknown,
    call?: IncomingCall,
    route?: () => Promise<ReplicaAddress | undefined>,
  ): Promise<Res> {
    let target = owner;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.callOnce<Res>(method, target, req, call);
      } catch (e) {
        if (isRunMoving(e) && attempt < 2 && route !== undefined) {
          await this.read(true);
          const next = await route();
          if (next !== undefined && next.id !== this.replicaId) {
            target = next;
            continue;
          }
        }
        throw e;
      }
    }
  }

  private callOnce<Res>(
    method: string,
    owner: ReplicaAddress,
    req: unknown,
    call: IncomingCall | undefined,
  ): Promise<Res> {
    const client = this.client(owner.address) as unknown as Record<string, UnaryMethod>;
    const fn = client[method];
    if (fn === undefined) throw new Error(`WorkflowService has no unary method ${method}`);
    this.stats.forwarded++;
    return new Promise<Res>((resolve, reject) => {
      const options = this.callOptions(call);
      const onCancel = (): void => outgoing.cancel();
      const outgoing = fn.call(client, req, this.forwardedMetadata(call), options, (e, res) => {
        call?.removeListener?.("cancelled", onCancel);
        if (e === null) {
          resolve(res as Res);
          return;
        }
        if (e.code === grpc.status.UNAVAILABLE) this.invalidate();
        reject(apiErrorOf(e));
      });
      call?.on?.("cancelled", onCancel);
    });
  }

  /** The caller's deadline, if it has one; a call of this replica's own gets {@link ReplicaRouterOptions.ownCallTimeoutMs}. */
  private callOptions(call: IncomingCall | undefined): grpc.CallOptions {
    const deadline = call === undefined ? Date.now() + this.ownCallTimeoutMs : call.getDeadline();
    return deadline === Infinity ? {} : { deadline };
  }

  /** Opens the server-streaming WorkflowService method `method` of `owner` on behalf of `call`. */
  openStream(
    method: string,
    owner: ReplicaAddress,
    req: unknown,
    call?: IncomingCall,
  ): grpc.ClientReadableStream<unknown> {
    const client = this.client(owner.address) as unknown as Record<string, StreamMethod>;
    const fn = client[method];
    if (fn === undefined) throw new Error(`WorkflowService has no streaming method ${method}`);
    this.stats.forwarded++;
    return fn.call(client, req, this.forwardedMetadata(call), this.callOptions(call));
  }

  /**
   * Cancels a run wherever it is held (for this replica's own loops: the schedules' fire loop ends
   * runs held elsewhere): CancelRun sent to the run's owner with `metadata` (e.g. a token, when the
   * installation checks them; none by default) and the `nexusflow-forwarded-by` header. Undefined
   * when this replica holds the run (the caller cancels it through its engine) ; throws an
   * ApiError UNAVAILABLE when no live replica holds it (a takeover is under way: retry).
   */
  async cancelRun(
    runId: string,
    reason: string,
    options: { compensate?: boolean; metadata?: grpc.Metadata; deadline?: Date } = {},
  ): Promise<CancelRunResponse | undefined> {
    if (this.holdsRun(runId)) return undefined;
    const route = (): Promise<ReplicaAddress | undefined> => this.ownerOfRun(runId);
    const owner = await route();
    if (owner === undefined || owner.id === this.replicaId)
      throw new ApiError(Code.UNAVAILABLE, `run ${runId} is held by no live replica now; retry`);
    const metadata = options.metadata ?? new grpc.Metadata();
    const call: IncomingCall = {
      metadata,
      getDeadline: () => options.deadline ?? Date.now() + this.ownCallTimeoutMs,
    };
    return this.forward<CancelRunResponse>(
      "cancelRun",
      owner,
      create(CancelRunRequestSchema, { runId, reason, compensate: options.compensate ?? false }),
      call,
      route,
    );
  }

  /**
   * Tells `listener` when the partitions held here or their owners may have changed (the scheduler
   * calls {@link moved} on a take, a loss or a release; a read that finds other owners calls it
   * too). While a listener with `poll` (one following a run held elsewhere) is registered, the
   * owners are read every watch interval.
   */
  onMove(listener: () => void, poll: boolean): () => void {
    this.moveListeners.add(listener);
    if (poll) this.pollers.add(listener);
    if (poll && this.watchTimer === undefined && this.stateValue.kind === "RUNNING") {
      this.watchTimer = setInterval(() => {
        this.read(true).catch((e: unknown) =>
          this.options.log.warn({ err: e }, "could not read the partitions' owners"),
        );
      }, this.watchIntervalMs);
      this.watchTimer.unref();
    }
    return () => {
      this.moveListeners.delete(listener);
      this.pollers.delete(listener);
      if (this.pollers.size === 0 && this.watchTimer !== undefined) {
        clearInterval(this.watchTimer);
        this.watchTimer = undefined;
      }
    };
  }

  /** Partitions were taken, lost or released here (or owners changed): listeners are told. */
  moved(): void {
    for (const listener of [...this.moveListeners]) listener();
  }

  /**
   * Stops: no more forwarding (calls answer UNAVAILABLE), every client closed, listeners told (a
   * watch following a run ends, so that its caller retries at a replica that stays).
   */
  stop(): void {
    if (this.stateValue.kind === "STOPPED") return;
    this.stateValue = { kind: "STOPPED" };
    if (this.watchTimer !== undefined) clearInterval(this.watchTimer);
    this.watchTimer = undefined;
    this.moved();
    this.moveListeners.clear();
    this.pollers.clear();
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}
