/**
 * The coordinator role (issue #22, docs/replicas.md): the background jobs that work on the whole
 * database rather than on a partition's runs (the schedules' fire loop, the event match loop, run
 * and event retention, the outbox relay in cluster mode) run on exactly one replica, the one that
 * holds partition 0. They are started when this replica takes partition 0 (or finds it held once
 * its leases started) and stopped, awaiting the pass in progress, when it loses it or before it
 * hands it over. The epoch of partition 0 is the coordinator's fencing token: a singleton's write
 * that must not be repeated by a stale coordinator carries `nexusflow_fence(owner, {0}, {epoch})`
 * in its statement or transaction ({@link coordinatorFenceSql}), so a coordinator paused past its
 * lease cannot commit after another took over.
 *
 * A sole replica (the scheduler lock held: no other replica alive) is always the coordinator, with
 * no fence, as before partitions existed. States: IDLE -> FOLLOWING <-> LEADING -> STOPPED;
 * transitions are serial (one change at a time, each awaiting the roles' stops and starts).
 */
import type { Logger } from "@nexusflow/common";
import type { PartitionListener } from "./partition-leases.js";
import { fencedByDatabase, type PartitionFencedError } from "./partitioning.js";

/** The partition whose holder is the coordinator. */
export const COORDINATOR_PARTITION = 0;

/** The fencing token of a coordinator's term: this replica and the epoch of partition 0. */
export interface CoordinatorFence {
  readonly owner: string;
  readonly epoch: number;
}

/** A singleton started for each term (a new instance each time: loops do not restart). */
export interface CoordinatorRole {
  /** What the logs call it. */
  readonly name: string;
  /** Starts the singleton for a term; `fence` is undefined for a sole replica. */
  start(fence: CoordinatorFence | undefined): { stop(): Promise<void> };
}

/** A role started for the current term. */
interface RunningRole {
  name: string;
  handle: { stop(): Promise<void> };
}

/** What the coordinator needs of the partition leases. */
export interface CoordinatorLeases {
  readonly replicaId: string;
  epochOf(partition: number): number | undefined;
  listen(listener: PartitionListener): void;
  /** A write was refused by the fence: the partitions are lost. */
  fenced(error: PartitionFencedError): void;
}

/** Options of {@link Coordinator}. */
export interface CoordinatorOptions {
  leases: CoordinatorLeases;
  roles: readonly CoordinatorRole[];
  log: Logger;
  /** This replica is the only one alive (the scheduler lock): always the coordinator, unfenced. @default false */
  sole?: boolean | undefined;
}

/** The coordinator's state: a union whose members carry their own data. */
export type CoordinatorState =
  | { kind: "IDLE" }
  | { kind: "FOLLOWING" }
  | { kind: "LEADING"; fence: CoordinatorFence | undefined; running: RunningRole[] }
  | { kind: "STOPPED" };

/**
 * The fence clause of a coordinator's write: `SELECT nexusflow_fence($n, ARRAY[0], ARRAY[$n+1])`
 * and its two parameters, starting at `$first`.
 */
export function coordinatorFenceSql(
  fence: CoordinatorFence,
  first: number,
): { sql: string; params: [string, number] } {
  return {
    sql: `SELECT nexusflow_fence($${first}::uuid, ARRAY[${COORDINATOR_PARTITION}]::int[], ARRAY[$${first + 1}]::bigint[])`,
    params: [fence.owner, fence.epoch],
  };
}

/** See the module comment. */
export class Coordinator {
  private stateValue: CoordinatorState = { kind: "IDLE" };
  private changing: Promise<void> = Promise.resolve();

  constructor(private readonly options: CoordinatorOptions) {}

  /** The current state. */
  get state(): CoordinatorState {
    return this.stateValue;
  }

  /** Whether this replica is the coordinator now. */
  get leading(): boolean {
    return this.stateValue.kind === "LEADING";
  }

  /**
   * The fencing token while this replica is the coordinator of a cluster and still holds partition
   * 0 at the term's epoch; undefined otherwise (and always for a sole replica, which needs none).
   */
  get fence(): CoordinatorFence | undefined {
    const state = this.stateValue;
    if (state.kind !== "LEADING" || state.fence === undefined) return undefined;
    return this.options.leases.epochOf(COORDINATOR_PARTITION) === state.fence.epoch ? state.fence : undefined;
  }

  /**
   * Starts following the leases (call once they started: partitions taken by their start are not
   * told). A sole replica starts its roles now, in this turn.
   */
  start(): void {
    if (this.stateValue.kind !== "IDLE")
      throw new Error(`cannot start a coordinator that is ${this.stateValue.kind}`);
    this.stateValue = { kind: "FOLLOWING" };
    if (this.options.sole === true) {
      this.lead(undefined);
      return;
    }
    const { leases } = this.options;
    leases.listen({
      onTaken: (partitions) => {
        if (partitions.includes(COORDINATOR_PARTITION)) this.update();
      },
      onLost: (partitions) => {
        if (partitions.includes(COORDINATOR_PARTITION)) this.update();
      },
      // Before partition 0 is handed over: the singletons' passes end while it is still held.
      beforeRelease: (partitions) =>
        partitions.includes(COORDINATOR_PARTITION) ? this.enqueue(() => this.follow()) : Promise.resolve(),
    });
    this.update();
  }

  /**
   * The fencing error of a coordinator write refused by the database (SQLSTATE NF001), after
   * telling the leases (partition 0 is lost: the roles stop); undefined for any other error.
   */
  refused(e: unknown): PartitionFencedError | undefined {
    const fenced = fencedByDatabase(e, [COORDINATOR_PARTITION]);
    if (fenced !== undefined) this.options.leases.fenced(fenced);
    return fenced;
  }

  /** Leads or follows as the leases now say (serially after any change in progress). */
  update(): void {
    void this.enqueue(async () => {
      const state = this.stateValue;
      if (state.kind === "STOPPED" || state.kind === "IDLE") return;
      const epoch = this.options.leases.epochOf(COORDINATOR_PARTITION);
      if (state.kind === "LEADING" && state.fence?.epoch === epoch) return;
      if (state.kind === "LEADING") await this.follow();
      if (epoch !== undefined && this.stateValue.kind === "FOLLOWING")
        this.lead({ owner: this.options.leases.replicaId, epoch });
    });
  }

  /** Stops the roles (awaiting their passes in progress); the coordinator follows nothing more. */
  async stop(): Promise<void> {
    await this.enqueue(async () => {
      if (this.stateValue.kind === "LEADING") await this.follow();
      this.stateValue = { kind: "STOPPED" };
    });
  }

  private enqueue(change: () => Promise<void>): Promise<void> {
    const next = this.changing.then(change).catch((e: unknown) => {
      this.options.log.error({ err: e }, "coordinator change failed");
    });
    this.changing = next;
    return next;
  }

  private lead(fence: CoordinatorFence | undefined): void {
    const running: RunningRole[] = [];
    for (const role of this.options.roles) {
      try {
        running.push({ name: role.name, handle: role.start(fence) });
      } catch (e) {
        this.options.log.error({ err: e, role: role.name }, "coordinator role could not start");
      }
    }
    this.stateValue = { kind: "LEADING", fence, running };
    if (fence !== undefined)
      this.options.log.info(
        { epoch: fence.epoch },
        "this replica is the coordinator: singleton jobs started",
      );
  }

  private async follow(): Promise<void> {
    const state = this.stateValue;
    if (state.kind !== "LEADING") return;
    this.stateValue = { kind: "FOLLOWING" };
    // Reverse order: the last started (e.g. the relay) stops first.
    for (const r of [...state.running].reverse()) {
      try {
        await r.handle.stop();
      } catch (e) {
        this.options.log.warn({ err: e, role: r.name }, "coordinator role did not stop cleanly");
      }
    }
    if (state.fence !== undefined)
      this.options.log.info({ epoch: state.fence.epoch }, "this replica is no longer the coordinator");
  }
}
