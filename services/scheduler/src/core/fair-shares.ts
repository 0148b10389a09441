/**
 * Fair shares (`fairness` on a workflow, dag/fair-shares.ts): the executors of each task type are
 * shared among the tenants with ready tasks of the type by weighted fair queueing, and among the
 * keys within a tenant the same way, so that a tenant's backlog, however long, delays another's
 * tasks by a bounded number of leases.
 *
 * The rules (start-time fair queueing, two levels): each group (a tenant, or a key within one)
 * has a virtual time that grows by 1 / weight with each lease it is given. The dispatcher leases
 * the head of the group with ready tasks and the smallest virtual time: the tenant first, then
 * its key. A group that gets ready tasks after having none starts from its parent's clock (the
 * virtual time of the latest group served), never below: an idle group banks no credit. So while
 * tenants A and B both have ready tasks, of any n leases A gets n·wA/(wA+wB) give or take one,
 * whatever the lengths of their queues.
 *
 * Minimums and maximums (counted in leases of the type held now) come before virtual time: a
 * group under its minimum is served before every group at or over it, and a group at its maximum
 * only when no other group with ready tasks is under its own (a tenant whose every key is at its
 * maximum counts as at its maximum). So a maximum never leaves a free slot idle while a task
 * waits: it is work-conserving, a cap on a group's share while others want slots, not a limit
 * (keyed concurrency limits are the limits).
 *
 * Priorities order the tasks within one key (the key's PriorityQueue: priority with ageing);
 * fairness decides between keys, so a tenant cannot take more than its share by raising the
 * priority of its steps. Runs of workflows without `fairness` are one tenant (the key ""), and
 * with no fairness anywhere the type has one key: the order is then exactly priority with ageing.
 *
 * Each group sits in its parent's binary heap while it has ready tasks: finding the next, and
 * moving a group when its virtual time or its leases change, is O(log groups). Nothing is stored:
 * recovery charges the leases it finds to their groups, and virtual times start again from 0.
 */
import type { EvalScope } from "../dag/index.js";
import { type CompiledFairShare } from "../dag/index.js";
import {
  type FairGroup,
  type FairKey,
  type FairPath,
  type FairShare,
  FairShareState,
  type FairTenant,
  type FairTree,
} from "../model/fair-share-state.js";
import type { PriorityQueue } from "../model/ready-queue.js";
import { DEFAULT_PRIORITY_AGEING_MS } from "../model/ready-queue.js";
import type { RunState, TaskState } from "../model/run-state.js";
import { ConcurrencyKeyError, runScope } from "./concurrency.js";
import type { Core } from "./context.js";
import { keyString } from "./key-value.js";

export { type FairKey, type FairPath, type FairShare, FairShareState, type FairTenant, type FairTree };

/** The share of a group nothing is declared for: weight 1, no minimum, no maximum. */
export const PLAIN_SHARE: FairShare = Object.freeze({ weight: 1, min: 0, max: 0 });

/** Where the tasks of runs without fairness go: the tenant "" and its key "". */
export const PLAIN_PATH: FairPath = Object.freeze({
  tenant: "",
  key: "",
  tenantShare: PLAIN_SHARE,
  keyShare: PLAIN_SHARE,
});

/**
 * A fairness key that is not a string or a number, or that cannot be evaluated. A kind of
 * ConcurrencyKeyError, so that StartRun and the schedules refuse it as they refuse those.
 */
export class FairShareKeyError extends ConcurrencyKeyError {
  override name = "FairShareKeyError";
}

/** The fair-share state of `core`, made on first use. */
export function fairSharesOf(core: Core): FairShareState {
  return (core.fairShares ??= new FairShareState(DEFAULT_PRIORITY_AGEING_MS));
}

// ---------------------------------------------------------------- paths

function groupValue(level: CompiledFairShare, scope: EvalScope): string {
  const path = `${level.path}.key`;
  const what = `fairness key ${JSON.stringify(level.expression)} (${path})`;
  return keyString(
    level.key,
    scope,
    what,
    "a fairness key",
    (message, options) => new FairShareKeyError(path, message, options),
  );
}

function shareOf(level: CompiledFairShare, value: string): FairShare {
  return { weight: level.weights.get(value) ?? level.weight, min: level.min, max: level.max };
}

/**
 * The tenant and key of a run of `workflow` with `input` (what StartRun checks before creating the
 * run); throws FairShareKeyError when a key is not a string or a number.
 */
export function fairPath(run: Pick<RunState, "id" | "workflow" | "input">): FairPath {
  const [first, second] = run.workflow.fairness;
  if (first === undefined) return PLAIN_PATH;
  const scope = runScope(run);
  const tenant = groupValue(first, scope);
  const key = second === undefined ? "" : groupValue(second, scope);
  return {
    tenant,
    key,
    tenantShare: shareOf(first, tenant),
    keyShare: second === undefined ? PLAIN_SHARE : shareOf(second, key),
  };
}

/**
 * The path of `task`'s run, evaluated once per run (kept on it). A key StartRun did not check (a
 * run recovered from an older scheduler) that fails now puts the run with the runs without
 * fairness rather than fail it.
 */
export function sharePath(core: Pick<Core, "runs">, task: TaskState): FairPath {
  const run = core.runs.get(task.runId);
  if (run === undefined) return PLAIN_PATH;
  if (run.fair === undefined) {
    try {
      run.fair = fairPath(run);
    } catch (error) {
      if (!(error instanceof FairShareKeyError)) throw error;
      run.fair = PLAIN_PATH;
    }
  }
  return run.fair;
}

// ---------------------------------------------------------------- order

/** 0: under its minimum; 1: between; 2: at its maximum. */
function rankOf(g: FairGroup): number {
  if (g.leased < g.share.min) return 0;
  return g.share.max > 0 && g.leased >= g.share.max ? 2 : 1;
}

/**
 * A tenant's rank counts its best key's: under its minimum (or its best key under its own) it
 * goes first, and at its maximum (or with every key with ready tasks at its own) last.
 */
function tenantRank(t: FairTenant): number {
  const own = rankOf(t);
  const top = t.heap[0];
  const key = top === undefined ? 1 : rankOf(top);
  if (own === 2 || key === 2) return 2;
  return own === 0 || key === 0 ? 0 : 1;
}

/** Whether `a` is served before `b`. */
function before(a: FairGroup, rankA: number, b: FairGroup, rankB: number): boolean {
  if (rankA !== rankB) return rankA < rankB;
  if (a.vtime !== b.vtime) return a.vtime < b.vtime;
  return a.seq < b.seq;
}

const keyBefore = (a: FairKey, b: FairKey): boolean => before(a, rankOf(a), b, rankOf(b));
const tenantBefore = (a: FairTenant, b: FairTenant): boolean => before(a, tenantRank(a), b, tenantRank(b));

// ---------------------------------------------------------------- heaps

function place<G extends FairGroup>(heap: G[], g: G, i: number): void {
  heap[i] = g;
  g.at = i;
}

function siftUp<G extends FairGroup>(heap: G[], i: number, less: (a: G, b: G) => boolean): void {
  const g = heap[i] as G;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    const p = heap[parent] as G;
    if (!less(g, p)) break;
    place(heap, p, i);
    i = parent;
  }
  place(heap, g, i);
}

function siftDown<G extends FairGroup>(heap: G[], i: number, less: (a: G, b: G) => boolean): void {
  const g = heap[i] as G;
  const n = heap.length;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= n) break;
    const r = l + 1;
    const c = r < n && less(heap[r] as G, heap[l] as G) ? r : l;
    const child = heap[c] as G;
    if (!less(child, g)) break;
    place(heap, child, i);
    i = c;
  }
  place(heap, g, i);
}

/** Puts `g` where it belongs after its order changed (in the heap or not). */
function resift<G extends FairGroup>(heap: G[], g: G, less: (a: G, b: G) => boolean): void {
  if (g.at < 0) return;
  const i = g.at;
  siftUp(heap, i, less);
  if (g.at === i) siftDown(heap, i, less);
}

function insert<G extends FairGroup>(heap: G[], g: G, less: (a: G, b: G) => boolean): void {
  heap.push(g);
  siftUp(heap, heap.length - 1, less);
}

function remove<G extends FairGroup>(heap: G[], g: G, less: (a: G, b: G) => boolean): void {
  const i = g.at;
  if (i < 0) return;
  g.at = -1;
  const last = heap.pop() as G;
  if (last === g) return;
  place(heap, last, i);
  resift(heap, last, less);
}

// ---------------------------------------------------------------- queueing

/** The key of `path` in `tree`, made (with its tenant) when missing; shares as `path` gives them. */
function keyOf(state: FairShareState, tree: FairTree, path: FairPath): FairKey {
  let tenant = tree.tenants.get(path.tenant);
  if (tenant === undefined) {
    tenant = {
      value: path.tenant,
      share: path.tenantShare,
      vtime: 0,
      leased: 0,
      at: -1,
      seq: tree.seq++,
      tree,
      keys: new Map(),
      heap: [],
      clock: 0,
    };
    tree.tenants.set(path.tenant, tenant);
  } else tenant.share = path.tenantShare;
  let key = tenant.keys.get(path.key);
  if (key === undefined) {
    key = {
      value: path.key,
      share: path.keyShare,
      vtime: 0,
      leased: 0,
      at: -1,
      seq: tree.seq++,
      tenant,
      queue: state.queue(),
      ready: 0,
    };
    tenant.keys.set(path.key, key);
  } else key.share = path.keyShare;
  return key;
}

/** The order of `key` (and so of its tenant) may have changed: both move to their places. */
function reorder(key: FairKey): void {
  const tenant = key.tenant;
  resift(tenant.heap, key, keyBefore);
  resift(tenant.tree.heap, tenant, tenantBefore);
}

/**
 * Queues `task` in the key of `path` of its type's tree (`push` puts it in the key's queue) and
 * makes the key and its tenant contend: a group that had no ready task joins at its parent's clock.
 */
export function enqueueShare(
  state: FairShareState,
  task: TaskState,
  path: FairPath,
  push: (queue: PriorityQueue) => void,
): void {
  const tree = state.tree(task.type);
  const key = keyOf(state, tree, path);
  const tenant = key.tenant;
  push(key.queue);
  key.ready++;
  tree.ready++;
  task.fairKey = key;
  if (key.at < 0) {
    key.vtime = Math.max(key.vtime, tenant.clock);
    insert(tenant.heap, key, keyBefore);
  } else resift(tenant.heap, key, keyBefore);
  if (tenant.at < 0) {
    tenant.vtime = Math.max(tenant.vtime, tree.clock);
    insert(tree.heap, tenant, tenantBefore);
  } else resift(tree.heap, tenant, tenantBefore);
}

/**
 * The first ready task of `tree` by fair share: the head of the first key of the first tenant
 * (stale entries and groups left without ready tasks are dropped on the way); `tree.head` is set
 * to its key, whose queue's latest peek it is. No allocation: the dispatcher's inner loop.
 */
export function peekShare(tree: FairTree): TaskState | undefined {
  for (;;) {
    const tenant = tree.heap[0];
    if (tenant === undefined) {
      tree.head = undefined;
      return undefined;
    }
    const key = tenant.heap[0];
    if (key === undefined) {
      remove(tree.heap, tenant, tenantBefore);
      tidyTenant(tenant);
      continue;
    }
    const task = key.queue.peek();
    if (task === undefined) {
      empty(key);
      continue;
    }
    tree.head = key;
    return task;
  }
}

/** The rank (see tenantRank) of the first tenant of `tree`: 0 under a minimum, 2 at a maximum. */
export function headRank(tree: FairTree): number {
  const tenant = tree.heap[0];
  return tenant === undefined ? 1 : tenantRank(tenant);
}

/**
 * The dispatcher took `task`, the head of `key`, out of the key's queue: leased (`lease`), its
 * key and tenant are charged (see chargeShare); the key leaves the contest once its queue is empty.
 */
export function takeShare(key: FairKey, task: TaskState, lease: boolean): void {
  key.ready--;
  key.tenant.tree.ready--;
  if (lease) chargeShare(key, task);
  if (key.queue.size === 0) empty(key);
}

/** `key`'s queue holds no ready task (what is left in it was cancelled): it leaves the contest. */
function empty(key: FairKey): void {
  key.tenant.tree.ready -= key.ready;
  key.ready = 0;
  leave(key);
}

/** `key` has no ready task: out of its tenant's heap (the tenant out of its tree's once empty). */
function leave(key: FairKey): void {
  const tenant = key.tenant;
  remove(tenant.heap, key, keyBefore);
  if (tenant.heap.length === 0) remove(tenant.tree.heap, tenant, tenantBefore);
  else resift(tenant.tree.heap, tenant, tenantBefore);
  tidyKey(key);
}

/** Forgets a key with neither ready tasks nor leases (and its tenant when that is its last). */
function tidyKey(key: FairKey): void {
  if (key.at >= 0 || key.leased > 0 || key.queue.size > 0) return;
  const tenant = key.tenant;
  if (tenant.keys.get(key.value) === key) tenant.keys.delete(key.value);
  tidyTenant(tenant);
}

function tidyTenant(tenant: FairTenant): void {
  if (tenant.at >= 0 || tenant.leased > 0 || tenant.keys.size > 0) return;
  const tree = tenant.tree;
  if (tree.tenants.get(tenant.value) === tenant) tree.tenants.delete(tenant.value);
}

// ---------------------------------------------------------------- leases

/**
 * `task` of `key` is leased: the key and its tenant are charged one lease and advance their
 * virtual times by 1 / weight; the clocks move to the virtual times they were served at.
 */
function chargeShare(key: FairKey, task: TaskState): void {
  const tenant = key.tenant;
  const tree = tenant.tree;
  tenant.clock = Math.max(tenant.clock, key.vtime);
  key.vtime += 1 / key.share.weight;
  key.leased++;
  tree.clock = Math.max(tree.clock, tenant.vtime);
  tenant.vtime += 1 / tenant.share.weight;
  tenant.leased++;
  task.fairLease = key;
  reorder(key);
}

/**
 * Charges a lease recovery found (held by an executor before the restart) to its group, so that
 * minimums and maximums count it; virtual times are not moved.
 */
export function chargeRecovered(core: Core, task: TaskState): void {
  const state = fairSharesOf(core);
  const key = keyOf(state, state.tree(task.type), sharePath(core, task));
  key.leased++;
  key.tenant.leased++;
  task.fairLease = key;
}

/** The task's lease ended (or it was never sent): its group has one lease less. */
export function releaseShare(task: TaskState): void {
  const key = task.fairLease;
  if (key === undefined) return;
  task.fairLease = undefined;
  key.leased--;
  key.tenant.leased--;
  reorder(key);
  tidyKey(key);
}

// ---------------------------------------------------------------- explaining

/** Why fair shares hold a queued task back (core/explain.ts turns it into a gate). */
export interface FairWait {
  /** The level whose share is used. */
  readonly level: "tenant" | "key";
  readonly tenant: string;
  readonly key: string;
  readonly type: string;
  /** The group's leases of the type now, and its share. */
  readonly leased: number;
  readonly weight: number;
  readonly min: number;
  readonly max: number;
  readonly atMax: boolean;
  /** The group served first in its place. */
  readonly next: string;
  /** Groups at the level with ready tasks of the type. */
  readonly waiting: number;
}

/**
 * Whether another group goes before `task`'s when a slot of its type frees, as the heaps the
 * latest scheduling pass left say: its tenant is not first among the tenants, or its key is not
 * first among its tenant's keys. Null when its group is first (or it is in no ready queue).
 */
export function fairWait(task: Pick<TaskState, "fairKey">): FairWait | null {
  const key = task.fairKey;
  if (key === undefined || key.at < 0) return null;
  const tenant = key.tenant;
  const tree = tenant.tree;
  // A group forgotten since (its tasks left the queue): not the task's any more.
  if (tenant.keys.get(key.value) !== key || tree.tenants.get(tenant.value) !== tenant) return null;
  let group: FairGroup = key;
  let level: FairWait["level"] = "key";
  let first: FairGroup | undefined = tenant.heap[0];
  let waiting = tenant.heap.length;
  if (tenant.at >= 0 && tree.heap[0] !== tenant) {
    group = tenant;
    level = "tenant";
    first = tree.heap[0];
    waiting = tree.heap.length;
  } else if (first === key) return null;
  if (first === undefined) return null;
  return {
    level,
    tenant: tenant.value,
    key: key.value,
    type: tree.type,
    leased: group.leased,
    weight: group.share.weight,
    min: group.share.min,
    max: group.share.max,
    atMax: rankOf(group) === 2,
    next: first.value,
    waiting,
  };
}

// ---------------------------------------------------------------- metrics

/** One tenant's ready tasks and leases of one type (metrics). */
export interface FairShareStat {
  readonly type: string;
  /** The tenant, or {@link OTHER_TENANTS} for the sum of those past the most named. */
  readonly tenant: string;
  readonly ready: number;
  readonly leased: number;
  /** When its oldest ready task was queued (ms since the epoch); null when none is ready. */
  readonly oldest: number | null;
}

/** The tenant label of the tenants past the most a type's metrics name. */
export const OTHER_TENANTS = "(other)";

/**
 * Per type, the `most` tenants with the most ready tasks (then leases), each with its counts and
 * the queue time of its oldest ready task, and the rest summed (with their oldest) as
 * {@link OTHER_TENANTS}: the metrics' label values stay bounded whatever the number of tenants.
 * Ready counts include entries cancelled since (dropped at the next pass).
 */
export function fairShareStats(state: FairShareState, most = 20): FairShareStat[] {
  const out: FairShareStat[] = [];
  for (const tree of state.trees.values()) {
    if (tree.tenants.size === 0) continue;
    const rows: { tenant: string; ready: number; leased: number; oldest: number | null }[] = [];
    for (const tenant of tree.tenants.values()) {
      let ready = 0;
      let oldest: number | null = null;
      for (const key of tenant.keys.values()) {
        ready += key.queue.size;
        oldest = earliest(oldest, key.queue.oldestQueuedAt());
      }
      rows.push({ tenant: tenant.value, ready, leased: tenant.leased, oldest });
    }
    rows.sort((a, b) => b.ready - a.ready || b.leased - a.leased || (a.tenant < b.tenant ? -1 : 1));
    for (const r of rows.slice(0, most)) out.push({ type: tree.type, ...r });
    if (rows.length > most) {
      let ready = 0;
      let leased = 0;
      let oldest: number | null = null;
      for (const r of rows.slice(most)) {
        ready += r.ready;
        leased += r.leased;
        oldest = earliest(oldest, r.oldest);
      }
      out.push({ type: tree.type, tenant: OTHER_TENANTS, ready, leased, oldest });
    }
  }
  return out;
}

function earliest(a: number | null, b: number | null): number | null {
  return a === null || (b !== null && b < a) ? b : a;
}
