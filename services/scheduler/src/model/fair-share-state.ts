/**
 * The state of fair shares (core/fair-shares.ts has the rules): for each task type, a tree of the
 * tenants that have ready tasks or leases of the type, and of the keys within each tenant; each
 * key holds its ready tasks in a {@link PriorityQueue}. The groups with ready tasks sit in their
 * parent's heap, so the next group to serve is found in O(log groups). In memory only, derived
 * from the queued and leased tasks: recovery rebuilds it (virtual times start again from 0).
 */
import { PriorityQueue } from "./ready-queue.js";

/** What a group (a tenant, or a key within one) is given, resolved from the definition. */
export interface FairShare {
  /** Leases in proportion to it while groups compete, 1..1000. */
  readonly weight: number;
  /** Leases of a type it is guaranteed: served before groups at their minimum. */
  readonly min: number;
  /** Leases of a type beyond which it yields to any group that can be served; 0: none. */
  readonly max: number;
}

/** Where a run's tasks are queued: its tenant and its key within the tenant, with their shares. */
export interface FairPath {
  /** The first level's key value ("" for runs of workflows without fairness). */
  readonly tenant: string;
  /** The second level's key value ("" with one level or none). */
  readonly key: string;
  readonly tenantShare: FairShare;
  readonly keyShare: FairShare;
}

/** A group of a type's tree: a tenant, or a key within a tenant. */
export interface FairGroup {
  /** Its key value. */
  readonly value: string;
  /** Its share as its latest queued task's definition gives it. */
  share: FairShare;
  /**
   * Virtual time: the leases it was given, each worth 1 / weight, from where it joined. The group
   * with ready tasks and the smallest is served next (after the minimums, before the maximums).
   */
  vtime: number;
  /** Leases of the type charged to it and not yet released (leased or running tasks). */
  leased: number;
  /** Its index in its parent's heap; -1 while it is not in it (no ready task). */
  at: number;
  /** Creation order within the tree: equal virtual times go to the older group. */
  readonly seq: number;
}

/** A key within a tenant: the leaf that holds ready tasks. */
export interface FairKey extends FairGroup {
  readonly tenant: FairTenant;
  readonly queue: PriorityQueue;
  /** Entries put in its queue and not taken out (see FairTree.ready). */
  ready: number;
}

/** A tenant of a type's tree. */
export interface FairTenant extends FairGroup {
  readonly tree: FairTree;
  /** Its keys with ready tasks or leases. */
  readonly keys: Map<string, FairKey>;
  /** Its keys with ready tasks, a binary heap in serving order. */
  readonly heap: FairKey[];
  /** The virtual time of its latest served key: where a key that gets ready tasks again starts. */
  clock: number;
}

/** The fair shares of one task type. */
export interface FairTree {
  readonly type: string;
  /** Tenants with ready tasks or leases. */
  readonly tenants: Map<string, FairTenant>;
  /** Tenants with ready tasks, a binary heap in serving order. */
  readonly heap: FairTenant[];
  /** The virtual time of its latest served tenant: where a tenant that gets ready tasks starts. */
  clock: number;
  /** The key the latest peek of the tree found its head in (what the dispatcher shifts). */
  head: FairKey | undefined;
  /** Groups made so far (their `seq`). */
  seq: number;
  /**
   * Ready tasks of the type, counted as they are queued and taken (O(1) to read): entries
   * cancelled since count until their key's queue is found empty.
   */
  ready: number;
}

/** The fair-share trees of every task type with ready tasks or leases. */
export class FairShareState {
  readonly trees = new Map<string, FairTree>();

  /** `ageingMs`: the ready queues' ageing (see PriorityQueue). */
  constructor(readonly ageingMs: number) {}

  /** The tree of `type`, made when missing. */
  tree(type: string): FairTree {
    let tree = this.trees.get(type);
    if (tree === undefined) {
      tree = { type, tenants: new Map(), heap: [], clock: 0, head: undefined, seq: 0, ready: 0 };
      this.trees.set(type, tree);
    }
    return tree;
  }

  /** A new ready queue for a key. */
  queue(): PriorityQueue {
    return new PriorityQueue(this.ageingMs);
  }
}
