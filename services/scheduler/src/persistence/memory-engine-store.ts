/**
 * The engine's store in memory: the same contract as PostgreSQL's (engine-store-contract.ts), for
 * tests of the engine and its rules without a database. A commit copies the marked rows, as the
 * database would, so what recovery reads is what was committed, not the live objects; like
 * PostgreSQL's jsonb it refuses text with a NUL character, and drops that run's changes.
 */
import { create } from "@bufbuild/protobuf";
import { errorToProto } from "@nexusflow/common";
import { LifecycleEventSchema, RunStatus } from "@nexusflow/gen";
import type {
  CommittedChanges,
  EngineStore,
  EngineStoreListener,
  KeyRecord,
  PartitionScope,
  RefusedRunOutcome,
  RunOutcome,
  StoredActiveState,
  StoredRun,
  StoredRunRows,
  StoredTask,
} from "./engine-store.js";
import { bucketId, type StoredBucket } from "../model/rate-limit-state.js";
import {
  afterInPage,
  bucketOrder,
  type RateLimitPage,
  type RateLimitPause,
  type StoredPause,
} from "./engine-store.js";
import type { OutboxRow } from "./outbox.js";
import { PendingChanges } from "./pending-changes.js";
import { partitionOf } from "../cluster/partitioning.js";
import {
  ACTIVE_LEASE,
  TERMINAL_RUN_STATUSES,
  TERMINAL_TASK_STATUSES,
  type AttemptState,
  type ErrorInfo,
  type RunState,
  type RunStatusName,
  type TaskState,
} from "../model/run-state.js";

/** A run row as committed. */
export interface MemoryRunRow extends StoredRun {
  readonly workflowVersion: number;
  readonly output: unknown;
  readonly eventSeq: number;
  readonly endedAt: Date | null;
}

/** An event as committed: its sequence number and the case of its oneof. */
export interface MemoryEventRow {
  readonly runId: string;
  readonly sequence: number;
  readonly type: string;
  readonly event: OutboxRow["message"]["event"];
}

const ACTIVE_RUN: ReadonlySet<RunStatusName> = new Set(["PENDING", "RUNNING", "COMPENSATING"]);

/** Whether a JSON value holds a string with a NUL character (PostgreSQL's jsonb refuses it). */
function hasNul(value: unknown): boolean {
  if (typeof value === "string") return value.includes("\u0000");
  if (value === null || typeof value !== "object") return false;
  if (Array.isArray(value)) return value.some(hasNul);
  return Object.entries(value).some(([k, v]) => k.includes("\u0000") || hasNul(v));
}

/** The engine's store in memory (see the module comment). */
export class MemoryEngineStore extends PendingChanges implements EngineStore {
  private listener: EngineStoreListener | undefined;
  private readonly stored = new WeakSet<object>();
  /** Committed rows. */
  private readonly runRows = new Map<string, MemoryRunRow>();
  private readonly taskRows = new Map<string, StoredTask>();
  private readonly attemptRows = new Map<string, AttemptState>();
  private readonly eventRows: MemoryEventRow[] = [];
  private readonly keyRows = new Map<string, KeyRecord>();
  /** Token buckets by name NUL key (rate_limit_buckets). */
  private readonly bucketRows = new Map<string, StoredBucket>();
  /** Commits made, for tests. */
  commits = 0;

  constructor() {
    super("the store");
  }

  listen(listener: EngineStoreListener): void {
    this.listener = listener;
  }

  get isHealthy(): boolean {
    return true;
  }

  isStored(row: object): boolean {
    return this.stored.has(row);
  }

  /** Like the writer: what is marked in the same turn shares the commit, one commit a drain. */
  protected drain(): Promise<void> {
    this.commit();
    return Promise.resolve();
  }

  /** Commits everything marked, run by run refusing what PostgreSQL would refuse. */
  private commit(): void {
    const { runs, tasks, attempts, events } = this.takeChanges();
    const waiters = this.takeWaiters();
    const refused = new Set<string>();
    for (const r of runs.values())
      if (hasNul(r.input) || hasNul(r.output) || hasNul(r.error)) refused.add(r.id);
    for (const t of tasks.values())
      if (hasNul(t.input) || hasNul(t.output) || hasNul(t.error)) refused.add(t.runId);
    for (const a of attempts.values()) if (hasNul(a.error) || hasNul(a.logs)) refused.add(a.runId);
    const runIds = new Set<string>();
    let written = 0;
    for (const r of runs.values()) {
      if (refused.has(r.id)) continue;
      this.writeRun(r);
      runIds.add(r.id);
    }
    for (const t of tasks.values()) {
      if (refused.has(t.runId)) continue;
      this.writeTask(t);
      runIds.add(t.runId);
      for (const b of t.rateTaken ?? []) {
        const id = bucketId(b.name, b.key);
        const row = this.bucketRows.get(id);
        if (row !== undefined && row.seq >= b.seq) continue;
        this.bucketRows.set(id, {
          pausedUntil: null,
          pausedBy: "",
          pauseNote: "",
          ...row,
          name: b.name,
          key: b.key,
          tokens: b.tokens,
          refilledAt: b.refilledAt,
          seq: b.seq,
          fullAt: b.fullAt,
        });
      }
    }
    for (const a of attempts.values()) {
      if (refused.has(a.runId)) continue;
      this.attemptRows.set(`${a.taskRunId}:${a.number}`, { ...a });
      this.stored.add(a);
    }
    for (const e of events) {
      if (refused.has(e.message.runId)) continue;
      this.eventRows.push({
        runId: e.message.runId,
        sequence: Number(e.message.sequence),
        type: e.message.event.case ?? "",
        event: e.message.event,
      });
      written++;
    }
    this.commits++;
    for (const runId of refused)
      this.listener?.refused(runId, new Error("invalid byte sequence: \\u0000 cannot be converted to text"));
    const changes: CommittedChanges = { runIds, events: written };
    this.listener?.committed(changes);
    for (const w of waiters) w.resolve();
  }

  private writeRun(r: RunState): void {
    const before = this.runRows.get(r.id);
    this.runRows.set(r.id, {
      id: r.id,
      definitionId: r.definitionId,
      workflowName: r.workflow.name,
      workflowVersion: r.workflow.version,
      status: r.status,
      input: r.input,
      idempotencyKey: r.idempotencyKey,
      labels: r.labels,
      traceParent: r.traceParent,
      signals: r.signals.map((s) => ({ ...s })),
      parent: r.parent,
      ...(r.rerun === undefined ? {} : { rerun: r.rerun }),
      cancelRequested: r.cancelRequested,
      compensateOnCancel: r.compensateOnCancel,
      error: r.error,
      output: r.output,
      eventSeq: r.eventSeq,
      lastEventSeq: r.eventSeq,
      deadline: r.deadline,
      createdAt: before?.createdAt ?? r.createdAt,
      endedAt: r.endedAt,
    });
    this.stored.add(r);
    if (r.idempotencyKey !== null && r.requestHash !== null) {
      const scope = `${r.workflow.name}\u0000${r.idempotencyKey}`;
      const key = this.keyRows.get(scope);
      // A key only ever moves to a newer run.
      if (key === undefined || key.createdAt.getTime() <= r.createdAt.getTime())
        this.keyRows.set(scope, { runId: r.id, requestHash: r.requestHash, createdAt: r.createdAt });
    }
  }

  private writeTask(t: TaskState): void {
    this.taskRows.set(t.id, {
      id: t.id,
      runId: t.runId,
      stepId: t.stepId,
      ...(t.elementIndex === undefined ? {} : { elementIndex: t.elementIndex }),
      kind: t.kind,
      type: t.type,
      position: t.position,
      status: t.status,
      input: t.input,
      output: t.output,
      outputRef: t.outputRef,
      error: t.error,
      skipReason: t.skipReason,
      attempt: t.attempt,
      fencingToken: t.fencingToken,
      failures: 0,
      executorId: t.executorId,
      leaseExpiresAt: t.leaseExpiresAt,
      nextAttemptAt: t.nextAttemptAt,
      queuedAt: t.queuedAt,
      createdAt: t.createdAt,
      endedAt: t.endedAt,
      current: null,
    });
    this.stored.add(t);
  }

  runOutcome(runId: string): Promise<RunOutcome | undefined> {
    const r = this.runRows.get(runId);
    return Promise.resolve(
      r === undefined ? undefined : { status: r.status, output: r.output ?? null, error: r.error },
    );
  }

  loadRateLimits(page?: RateLimitPage): Promise<StoredBucket[]> {
    const rows = [...this.bucketRows.values()]
      .filter((b) => page === undefined || afterInPage(b, page))
      .sort(bucketOrder);
    return Promise.resolve(rows.slice(0, page?.limit ?? rows.length).map((b) => ({ ...b })));
  }

  loadRateLimitPauses(): Promise<StoredPause[]> {
    const now = Date.now();
    const out: StoredPause[] = [];
    for (const b of this.bucketRows.values())
      if (b.pausedUntil !== null && b.pausedUntil > now)
        out.push({
          name: b.name,
          key: b.key,
          pausedUntil: b.pausedUntil,
          pausedBy: b.pausedBy,
          pauseNote: b.pauseNote,
        });
    return Promise.resolve(out);
  }

  pauseRateLimit(p: RateLimitPause): Promise<void> {
    const id = bucketId(p.name, p.key);
    const row = this.bucketRows.get(id) ?? {
      name: p.name,
      key: p.key,
      tokens: p.tokens,
      refilledAt: p.refilledAt,
      seq: 0,
      fullAt: p.fullAt,
    };
    this.bucketRows.set(id, {
      ...row,
      pausedUntil: p.until,
      pausedBy: p.until === null ? "" : p.by,
      pauseNote: p.until === null ? "" : p.note,
    });
    return Promise.resolve();
  }

  loadActive(scope?: PartitionScope): Promise<StoredActiveState> {
    const inScope = (id: string): boolean =>
      scope === undefined || scope.partitions.includes(partitionOf(id, scope.count));
    const runs = [...this.runRows.values()]
      .filter((r) => ACTIVE_RUN.has(r.status) && inScope(r.id))
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime())
      .map((r) => this.storedRun(r));
    return Promise.resolve({ runs, tasks: this.storedTasks(new Set(runs.map((r) => r.id))) });
  }

  loadRun(runId: string): Promise<StoredRunRows | undefined> {
    const r = this.runRows.get(runId);
    return Promise.resolve(
      r === undefined ? undefined : { run: this.storedRun(r), tasks: this.storedTasks(new Set([runId])) },
    );
  }

  private storedRun(r: MemoryRunRow): StoredRun {
    return { ...r, lastEventSeq: Math.max(r.eventSeq, this.lastEvent(r.id)) };
  }

  /** The task rows of the runs `ids`, by run and position, with their failures and current attempt. */
  private storedTasks(ids: ReadonlySet<string>): StoredTask[] {
    return [...this.taskRows.values()]
      .filter((t) => ids.has(t.runId))
      .sort((a, b) => (a.runId === b.runId ? a.position - b.position : a.runId < b.runId ? -1 : 1))
      .map((t): StoredTask => {
        const attempts = [...this.attemptRows.values()].filter((a) => a.taskRunId === t.id);
        const a = ACTIVE_LEASE.has(t.status) ? attempts.find((x) => x.number === t.attempt) : undefined;
        return {
          ...t,
          failures: attempts.filter((x) => x.status === "FAILED").length,
          current: a === undefined ? null : { ...a, error: null, logs: null, endedAt: null },
        };
      });
  }

  private lastEvent(runId: string): number {
    let last = 0;
    for (const e of this.eventRows) if (e.runId === runId && e.sequence > last) last = e.sequence;
    return last;
  }

  lookupKey(workflowName: string, key: string, notBefore: Date): Promise<KeyRecord | undefined> {
    const r = this.keyRows.get(`${workflowName}\u0000${key}`);
    return Promise.resolve(r !== undefined && r.createdAt.getTime() >= notBefore.getTime() ? r : undefined);
  }

  keysOfRuns(
    runs: readonly { id: string; workflowName: string; key: string }[],
  ): Promise<Map<string, KeyRecord>> {
    const byRun = new Map<string, KeyRecord>();
    for (const r of runs) {
      const k = this.keyRows.get(`${r.workflowName}\u0000${r.key}`);
      if (k?.runId === r.id) byRun.set(r.id, k);
    }
    return Promise.resolve(byRun);
  }

  failRefusedRun(runId: string, error: ErrorInfo): Promise<RefusedRunOutcome> {
    const row = this.runRows.get(runId);
    if (row === undefined) return Promise.resolve("not-stored");
    if (TERMINAL_RUN_STATUSES.has(row.status)) return Promise.resolve("already-ended");
    const now = new Date();
    const sequence = Math.max(row.eventSeq, this.lastEvent(runId)) + 1;
    this.runRows.set(runId, {
      ...row,
      status: "FAILED",
      error,
      eventSeq: sequence,
      lastEventSeq: sequence,
      endedAt: now,
    });
    for (const [key, a] of this.attemptRows)
      if (a.runId === runId && ACTIVE_LEASE.has(a.status))
        this.attemptRows.set(key, { ...a, status: "CANCELLED", endedAt: now });
    for (const [id, t] of this.taskRows)
      if (t.runId === runId && !TERMINAL_TASK_STATUSES.has(t.status))
        this.taskRows.set(id, {
          ...t,
          status: "CANCELLED",
          leaseExpiresAt: null,
          nextAttemptAt: null,
          endedAt: now,
        });
    this.eventRows.push({
      runId,
      sequence,
      type: "runCompleted",
      event: create(LifecycleEventSchema, {
        event: { case: "runCompleted", value: { status: RunStatus.FAILED, error: errorToProto(error) } },
      }).event,
    });
    return Promise.resolve("failed");
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.hasWork()) await this.flush().catch(() => undefined);
    this.closePending();
  }

  /** The committed rows, for tests that check what a database would hold. */
  read(): {
    runs: ReadonlyMap<string, MemoryRunRow>;
    tasks: ReadonlyMap<string, StoredTask>;
    attempts: readonly AttemptState[];
    events: readonly MemoryEventRow[];
  } {
    return {
      runs: this.runRows,
      tasks: this.taskRows,
      attempts: [...this.attemptRows.values()],
      events: this.eventRows,
    };
  }
}
