/**
 * Group commit. Engine code changes its in-memory model synchronously and marks what changed; the
 * writer persists every marked run, task, attempt and outbox event in ONE statement (one implicit
 * transaction, one round trip, a prepared statement per shape of batch), while the next batch
 * accumulates behind it. A large batch is split by run into two statements that commit in
 * parallel on the writer's two connections; a run's changes and events always share one. Waiting
 * for `flush()` means "my change is durable". A failed commit (database down) is retried with
 * backoff, in order, until it succeeds or the writer is closed. A commit that PostgreSQL refuses for
 * its data (see {@link isDataError}) is split by run until the runs it cannot store are found; the
 * others commit, and each refused run's changes and events of that batch are handed to `onRefused`
 * instead of being retried forever (which would stop every later commit). With a `fence` (issue
 * #22, docs/replicas.md) every statement checks, in itself, that this replica still holds the
 * partitions of the runs it writes at the epochs it believes; a statement refused for that
 * ({@link PartitionFencedError}) is not retried: the runs of the lost partitions are dropped and
 * handed to `onFenced`, the others of the statement are committed again.
 *
 * The writer's parts: pending-changes.ts (what is marked, flush waiters, when a commit starts, shared
 * with the in-memory store), batch-rows.ts (a batch as rows, split by run), batch-sql.ts (the
 * statement), and here the commit loop: retries, refused data, statistics and observers.
 */
import type pg from "pg";
import type { Logger } from "@nexusflow/common";
import type { RunState, TaskState } from "../model/run-state.js";
import {
  claimOf,
  fencedByDatabase,
  isPartitionFencedError,
  partitionOf,
  PartitionFencedError,
  type WriteFence,
} from "../cluster/partitioning.js";
import { runsOf, subPart, takeParts, type Part } from "./batch-rows.js";
import { fencedStatement, StatementTooLargeError } from "./batch-sql.js";
import type { OutboxRow } from "./outbox.js";
import { PendingChanges } from "./pending-changes.js";

/** What one committed batch contained, for watchers and metrics. */
export interface CommittedBatch {
  runIds: ReadonlySet<string>;
  taskIds: ReadonlySet<string>;
  events: number;
}

/**
 * One committed statement, as a {@link BatchWriter.observe} observer sees it (metrics). The runs
 * and tasks are the live objects: their state may have moved on since the statement was taken.
 */
export interface CommitObservation {
  /** Rows written (runs, tasks, attempts, outbox rows). */
  rows: number;
  /** Seconds from taking a connection to the statement's success. */
  seconds: number;
  /** The lifecycle events it committed, in order. */
  events: readonly OutboxRow[];
  /** The tasks it wrote, by id. */
  tasks: ReadonlyMap<string, TaskState>;
  /** The runs it wrote, by id. */
  runs: ReadonlyMap<string, RunState>;
}

/** Options of {@link BatchWriter}. */
export interface BatchWriterOptions {
  pool: pg.Pool;
  log: Logger;
  /** Called after each successful commit. */
  onCommit?: (batch: CommittedBatch) => void;
  /**
   * Called, before the batch's `flush()` waiters resolve, for a run whose changes PostgreSQL
   * refused for their data: they, the run's events of that batch and whatever was marked for the
   * run since are dropped (the run keeps its last committed state and events). Without it they
   * are logged and dropped.
   */
  onRefused?: (runId: string, error: Error) => void;
  /**
   * Fences every commit with the partitions this replica holds (see the module comment).
   * @default none: nothing is checked (one writer per database, as the scheduler lock ensures)
   */
  fence?: WriteFence | undefined;
  /**
   * Called for the runs of a commit refused by the fence, after their changes (and whatever was
   * marked for them since) were dropped: they belong to another replica now.
   */
  onFenced?: (runIds: readonly string[], error: PartitionFencedError) => void;
  /** First retry delay after a failed commit. @default 100 */
  retryInitialMs?: number;
  /** Longest retry delay. @default 2000 */
  retryMaxMs?: number;
}

/**
 * Whether PostgreSQL refused a statement for the data it carries, so that retrying the same rows
 * can never succeed: SQLSTATE classes 22 (data exception, e.g. a NUL character), 23 (integrity
 * constraint violation) and 54 (program limit exceeded, e.g. a value too large or too deep).
 * Connection loss, shutdown, lack of resources and errors in the statement itself are not: those
 * are retried.
 */
export function isDataError(e: unknown): e is Error & { code: string } {
  const code = (e as { code?: unknown } | null)?.code;
  return e instanceof Error && typeof code === "string" && /^(22|23|54)/.test(code);
}

/** The group-commit writer. */
export class BatchWriter extends PendingChanges {
  /**
   * Rows known to exist in the database, and for tasks the input they were last written with.
   * Unknown rows (new, or loaded by recovery) take the full upsert, which is always correct.
   */
  private readonly written = new WeakMap<object, unknown>();
  /**
   * Rows (and outbox rows) of statements that failed other than for their data: the commit may
   * have succeeded before the connection broke, so they are upserted (events inserted unless
   * there) until one commits.
   */
  private readonly uncertain = new WeakSet<object>();
  /** Ids of runs and tasks loaded by recovery and not written since: they exist. */
  private readonly loaded = new Set<string>();
  /** Whether a run or task not known as written may exist (see takeParts). */
  private readonly mayExist = (row: RunState | TaskState | OutboxRow): boolean =>
    this.uncertain.has(row) || ("id" in row && this.loaded.has(row.id));
  private healthy = true;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryWake: (() => void) | undefined;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly observers: ((commit: CommitObservation) => void)[] = [];
  /**
   * Commits not yet shown to the observers. They are shown while PostgreSQL works on the next
   * statement (right after it is sent), or as soon as the loop has nothing more to commit or must
   * wait to retry: never on the path from one commit's answer to the next statement, where the
   * leases the commit freed and the next batch wait (what metrics derive costs no throughput),
   * and always before the next commit's answer is handled (a run an observer reads is still in
   * memory as the commit left it).
   */
  private unobserved: CommitObservation[] = [];
  /**
   * Statistics, for the benchmark and metrics. `rows` counts rows written (an outbox row holds a
   * run's events of one commit); `commits` counts statements (a split batch is two); `refusedRuns`
   * counts runs whose changes PostgreSQL refused for their data (see {@link isDataError});
   * `fencedCommits` counts statements refused by the partitions' fence.
   */
  readonly stats = { commits: 0, failedCommits: 0, rows: 0, refusedRuns: 0, fencedCommits: 0 };

  constructor(private readonly options: BatchWriterOptions) {
    super("the batch writer");
    this.retryInitialMs = options.retryInitialMs ?? 100;
    this.retryMaxMs = options.retryMaxMs ?? 2000;
  }

  /** Calls `observer` after each committed statement (metrics); it must not throw. */
  observe(observer: (commit: CommitObservation) => void): void {
    this.observers.push(observer);
  }

  /**
   * Shows the observers the commits they have not seen yet, in commit order. Never throws: an
   * observer that does (it must not) is logged, and the others and the commits go on.
   */
  private deliverObservations(): void {
    if (this.unobserved.length === 0) return;
    const commits = this.unobserved;
    this.unobserved = [];
    for (const commit of commits)
      for (const observer of this.observers) {
        try {
          observer(commit);
        } catch (e) {
          this.options.log.error({ err: e }, "a commit's observer (metrics) failed; the commits go on");
        }
      }
  }

  /** False while commits are failing (the database is unreachable). */
  get isHealthy(): boolean {
    return this.healthy;
  }

  /**
   * Names runs and tasks that exist in the database though this writer has not written them
   * (loaded by recovery), so that their first write here is an upsert, not an insert.
   */
  expectStored(ids: Iterable<string>): void {
    for (const id of ids) this.loaded.add(id);
  }

  /**
   * Forgets ids named by {@link expectStored} whose rows left memory (a parked run's, committed):
   * a later load names them again.
   */
  forgetExpected(ids: Iterable<string>): void {
    if (this.loaded.size === 0) return;
    for (const id of ids) this.loaded.delete(id);
  }

  /** Whether `row` (a run, task or attempt) has been committed once. */
  isStored(row: object): boolean {
    return this.written.has(row);
  }

  /** Commits until nothing is pending, retrying failed commits with backoff. */
  protected async drain(): Promise<void> {
    try {
      await this.commitUntilDone();
    } finally {
      this.deliverObservations();
    }
  }

  private async commitUntilDone(): Promise<void> {
    let delay = this.retryInitialMs;
    while (this.hasWork() && !this.closed) {
      const waiters = this.takeWaiters();
      const parts = takeParts(this.written, this.takeChanges(), this.mayExist);
      // Parts hold disjoint runs: each commits on its own connection, in parallel, as its own
      // transaction; a run's changes and events are always in one part, so each run stays atomic.
      const results = await Promise.allSettled(parts.map((part) => this.commit(part)));
      let failure: unknown;
      // Every part's refusal: a waiter reads from it whether its runs' changes were dropped.
      const refusals: PartitionFencedError[] = [];
      const failed: Part[] = [];
      for (const [i, result] of results.entries()) {
        const part = parts[i] as Part;
        if (result.status === "fulfilled") this.committedPart(part, result.value);
        else if (isPartitionFencedError(result.reason)) {
          refusals.push(result.reason);
          // The runs of partitions still held were rolled back with the others: again, at once.
          const again = this.fencedPart(part, result.reason);
          if (again !== undefined) failed.push(again);
        } else if (isDataError(result.reason)) {
          // Split by run until what PostgreSQL refuses is found; the rest commits now.
          const left = await this.isolate(part, result.reason);
          if (left !== undefined) {
            failure ??= left.error;
            failed.push(...left.parts);
          }
        } else {
          failure ??= result.reason;
          failed.push(part);
        }
      }
      // In reverse, so that each goes in front of the one after it, all in front of what is new.
      for (const part of failed.reverse()) {
        for (const row of part.written.keys()) this.uncertain.add(row);
        for (const event of part.events) this.uncertain.add(event);
        this.putBack(part);
      }
      // Some of these waiters' changes were dropped by the fence: none of them may read "committed".
      const fenced = mergeRefusals(refusals);
      if (fenced !== undefined) for (const w of waiters) w.reject(fenced);
      if (failure === undefined) {
        if (!this.healthy) this.options.log.info("database commits succeed again");
        this.healthy = true;
        delay = this.retryInitialMs;
        if (fenced === undefined) for (const w of waiters) w.resolve();
        // Nothing more to send: the observers see this commit now, before the waiters go on.
        if (!this.hasWork()) this.deliverObservations();
        // The refused waiters whose runs were kept wait again (PartitionRuns.whenCommitted) in
        // their rejection's callbacks: a turn first, so that they are in the commit of what was
        // kept (refused in turn, it must reject them too; they would read "committed" after it).
        else await new Promise<void>((resolve) => setImmediate(resolve));
        continue;
      }
      // What failed is back in front of what accumulated meanwhile (see putBack); its waiters wait
      // for the retry. Parts that committed stay committed: their rows are known now.
      if (fenced === undefined) this.putBackWaiters(waiters);
      this.stats.failedCommits++;
      if (this.healthy)
        this.options.log.error({ err: failure }, "database commit failed; retrying until it is back");
      this.healthy = false;
      if (this.closed) break;
      this.deliverObservations();
      await new Promise<void>((resolve) => {
        this.retryWake = resolve;
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          resolve();
        }, delay);
      });
      this.retryWake = undefined;
      delay = Math.min(delay * 2, this.retryMaxMs);
    }
  }

  /**
   * Commits what it can of a part PostgreSQL refused for its data, halving it by run; a single run
   * it still refuses is dropped and reported to `onRefused`. Returns what is left when a commit
   * fails for another reason (connection lost meanwhile), to be retried as usual.
   */
  private async isolate(part: Part, error: Error): Promise<{ parts: Part[]; error: unknown } | undefined> {
    const runIds = runsOf(part);
    const [only] = runIds;
    // A part with rows always has a run; one with none has no statement, which cannot fail.
    if (only === undefined) return undefined;
    if (runIds.length === 1) {
      this.refused(only, part, error);
      return undefined;
    }
    const half = Math.ceil(runIds.length / 2);
    const halves = [runIds.slice(0, half), runIds.slice(half)].map((ids) => subPart(part, new Set(ids)));
    for (const [i, sub] of halves.entries()) {
      try {
        this.committedPart(sub, await this.commit(sub));
      } catch (e) {
        const rest = halves.slice(i + 1);
        if (!isDataError(e)) return { parts: [sub, ...rest], error: e };
        const left = await this.isolate(sub, e);
        if (left !== undefined) return { parts: [...left.parts, ...rest], error: left.error };
      }
    }
    return undefined;
  }

  /**
   * A part the fence refused: the runs of the lost partitions are dropped (with what was marked
   * for them since) and reported; returns the share of the others, to be committed again.
   */
  private fencedPart(part: Part, error: PartitionFencedError): Part | undefined {
    const fence = this.options.fence;
    this.stats.fencedCommits++;
    const lost = new Set(error.partitions);
    const runIds = runsOf(part);
    const dropped: string[] = [];
    const kept = new Set<string>();
    for (const id of runIds) {
      if (fence === undefined || lost.has(partitionOf(id, fence.partitionCount))) dropped.push(id);
      else kept.add(id);
    }
    this.options.log.error(
      { err: error, partitions: error.partitions, runs: dropped.length },
      "a commit was refused: this replica no longer holds the partitions of its runs; their changes are dropped",
    );
    for (const id of dropped) this.dropRun(id);
    fence?.fenced(error);
    this.options.onFenced?.(dropped, error);
    return kept.size === 0 ? undefined : subPart(part, kept);
  }

  /** Drops a single run's share of a batch that PostgreSQL refuses for its data, and reports it. */
  private refused(runId: string, part: Part, error: Error): void {
    this.stats.refusedRuns++;
    this.options.log.error(
      { err: error, run_id: runId, code: (error as { code?: string }).code, rows: part.rows },
      "PostgreSQL refused a run's changes for their data; they and their events are dropped",
    );
    this.options.onRefused?.(runId, error);
    // Changes marked for the run while this batch was committing follow the dropped ones (their
    // events would leave a gap in its sequence): they go too.
    this.dropRun(runId);
  }

  private committedPart(part: Part, seconds: number): void {
    for (const [row, input] of part.written) {
      this.written.set(row, input);
      if (this.loaded.size > 0 && "id" in row) this.loaded.delete((row as { id: string }).id);
    }
    if (part.statement !== undefined) this.stats.commits++;
    this.stats.rows += part.rows;
    if (part.statement !== undefined && this.observers.length > 0)
      this.unobserved.push({
        rows: part.rows,
        seconds,
        events: part.events,
        tasks: part.tasks,
        runs: part.runs,
      });
    this.options.onCommit?.({
      runIds: new Set([...part.runs.keys(), ...[...part.tasks.values()].map((t) => t.runId)]),
      taskIds: new Set(part.tasks.keys()),
      events: part.events.length,
    });
  }

  /**
   * Commits one part's statement, fenced when the writer has a fence; resolves with the seconds it
   * took (0 for none). Rejects with {@link PartitionFencedError} when the fence refuses it.
   */
  private async commit(part: Part): Promise<number> {
    let statement = part.statement;
    if (statement === undefined) return 0;
    if (statement instanceof StatementTooLargeError) throw statement;
    const fence = this.options.fence;
    let checked: readonly number[] = [];
    if (fence !== undefined) {
      const claim = claimOf(fence, runsOf(part));
      if (isPartitionFencedError(claim)) throw claim;
      checked = claim.partitions;
      statement = fencedStatement(statement, fence.replicaId, claim.partitions, claim.epochs);
    }
    const started = performance.now();
    // Connection errors while checked out are handled where clients are made (openDatabase).
    const client = await this.options.pool.connect();
    let broken = false;
    try {
      // Named: each connection parses and plans each shape of batch once, not on every commit.
      const answer = client.query({ name: statement.name, text: statement.sql, values: statement.params });
      // Sent: the previous commits' observers run while PostgreSQL works on it. Their time is
      // not the commit's (an answer that came meanwhile waited for them).
      const observing = performance.now();
      this.deliverObservations();
      const observed = performance.now() - observing;
      await answer;
      return (performance.now() - started - observed) / 1000;
    } catch (e) {
      const fenced = fencedByDatabase(e, checked);
      if (fenced !== undefined) throw fenced;
      broken = true;
      throw e;
    } finally {
      client.release(broken);
    }
  }

  /** Commits what is pending (best effort, bounded by `timeoutMs`), then refuses new work. */
  async close(timeoutMs = 5000): Promise<void> {
    // What is pending, and a commit in flight (its waiters are answered when it ends).
    if ((this.hasWork() || this.committing) && this.healthy) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.flush().catch(() => undefined),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
      ]);
      clearTimeout(timer);
    }
    if (this.retryTimer !== undefined) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.closePending();
    this.retryWake?.();
  }
}

/**
 * One refusal naming every partition the parts' refusals name (each part is fenced on its own):
 * a waiter whose runs are in none of them knows its changes were kept and committed again.
 */
function mergeRefusals(refusals: readonly PartitionFencedError[]): PartitionFencedError | undefined {
  const [first] = refusals;
  if (refusals.length <= 1) return first;
  const partitions = [...new Set(refusals.flatMap((r) => r.partitions))].sort((a, b) => a - b);
  return new PartitionFencedError(partitions, refusals.map((r) => r.message).join("; "), { cause: first });
}
