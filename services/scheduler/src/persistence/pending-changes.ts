/**
 * What a group-committing store (the PostgreSQL writer, batch-writer.ts, and the in-memory store,
 * memory-engine-store.ts) shares: the runs, tasks, attempts and events marked since the last
 * commit, the `flush()` calls waiting for them, and when a commit starts. Marking only records the
 * live object (no copy, no allocation beyond the map entry); a commit starts on the next turn of
 * the event loop after a flush, so that everything changed in the same turn shares it, and only
 * one runs at a time: what is marked meanwhile waits for the next.
 */
import { AsyncResource } from "node:async_hooks";
import { UnavailableError } from "@nexusflow/common";
import type { AttemptState, RunState, TaskState } from "../model/run-state.js";
import type { OutboxRow } from "./outbox.js";

/** Changes marked and not yet committed. */
export interface Changes {
  runs: Map<string, RunState>;
  tasks: Map<string, TaskState>;
  attempts: Map<string, AttemptState>;
  events: OutboxRow[];
}

/** A `flush()` call waiting for its commit. */
export interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Raised to flush() waiters when the store is closed before their changes were committed: the
 * scheduler is stopping, so a caller sees UNAVAILABLE and may retry (at another replica, or at
 * this one once started again).
 */
export class WriterClosedError extends UnavailableError {
  override name = "WriterClosedError";
}

/**
 * The pending changes and flush scheduling of a group-committing store (see the module comment).
 * A subclass commits in {@link drain}: it takes the changes and waiters ({@link takeChanges},
 * {@link takeWaiters}), commits them, and resolves the waiters.
 */
export abstract class PendingChanges {
  private runs = new Map<string, RunState>();
  private tasks = new Map<string, TaskState>();
  private attempts = new Map<string, AttemptState>();
  private events: OutboxRow[] = [];
  private waiters: Waiter[] = [];
  /** Rows of runs that left this store's owner for good ({@link retire}): never written again. */
  private readonly retired = new WeakSet<object>();
  /** A commit (a {@link drain}) is scheduled or running. */
  private running = false;
  private closedValue = false;
  private soonTimer: NodeJS.Timeout | undefined;

  /** `name`: what the store is called in the errors of flushes it refuses once closed. */
  protected constructor(private readonly name: string) {}

  /**
   * Commits what is pending: called on a later turn after a flush, never while another drain
   * runs. It must not reject. Waiters that arrive while it runs and are not taken by it start the
   * next drain once it resolves.
   */
  protected abstract drain(): Promise<void>;

  /** Marks a run as changed. */
  markRun(run: RunState): void {
    this.runs.set(run.id, run);
  }

  /** Marks a task as changed. */
  markTask(task: TaskState): void {
    this.tasks.set(task.id, task);
  }

  /** Marks an attempt as changed. */
  markAttempt(attempt: AttemptState): void {
    this.attempts.set(`${attempt.taskRunId}:${attempt.number}`, attempt);
  }

  /** Appends an outbox event (kept in order). */
  addEvent(event: OutboxRow): void {
    this.events.push(event);
  }

  /** Resolves when everything marked so far is committed. */
  flush(): Promise<void> {
    if (this.closedValue)
      return Promise.reject(new WriterClosedError(`${this.name} is closed: the scheduler is stopping`));
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.kick();
    return done;
  }

  /**
   * Commits what is marked within `delayMs` unless another flush takes it along first: for
   * changes nobody waits for (a task started), so they ride with the next commit when one is near.
   */
  flushSoon(delayMs: number): void {
    if (this.closedValue || this.soonTimer !== undefined) return;
    this.soonTimer = setTimeout(() => {
      this.soonTimer = undefined;
      this.kick();
    }, delayMs);
  }

  /** Whether a commit is scheduled or running (its waiters not answered yet). */
  protected get committing(): boolean {
    return this.running;
  }

  /** Whether the store is closed (flushes are refused). */
  protected get closed(): boolean {
    return this.closedValue;
  }

  /** Whether changes are marked or flushes wait. */
  protected hasWork(): boolean {
    return (
      this.runs.size + this.tasks.size + this.attempts.size + this.events.length > 0 ||
      this.waiters.length > 0
    );
  }

  /** Takes everything marked: changes from now on go to the next commit. */
  protected takeChanges(): Changes {
    const taken: Changes = {
      runs: this.runs,
      tasks: this.tasks,
      attempts: this.attempts,
      events: this.events,
    };
    this.runs = new Map();
    this.tasks = new Map();
    this.attempts = new Map();
    this.events = [];
    return taken;
  }

  /** Takes the waiting flushes. */
  protected takeWaiters(): Waiter[] {
    const waiters = this.waiters;
    this.waiters = [];
    return waiters;
  }

  /**
   * Puts changes that failed to commit back in front of what accumulated meanwhile, to be retried:
   * the rows carry full state, so re-marking is idempotent; events keep their order.
   */
  protected putBack(changes: Changes): void {
    // Rows of runs retired while their commit was in flight stay out (see retire).
    const gone = new Set<string>();
    for (const r of changes.runs.values()) if (this.retired.has(r)) gone.add(r.id);
    for (const t of changes.tasks.values()) if (this.retired.has(t)) gone.add(t.runId);
    if (gone.size > 0)
      changes = {
        runs: new Map([...changes.runs].filter(([id]) => !gone.has(id))),
        tasks: new Map([...changes.tasks].filter(([, t]) => !gone.has(t.runId))),
        attempts: new Map([...changes.attempts].filter(([, a]) => !gone.has(a.runId))),
        events: changes.events.filter((e) => !gone.has(e.message.runId)),
      };
    this.runs = new Map([...changes.runs, ...this.runs]);
    this.tasks = new Map([...changes.tasks, ...this.tasks]);
    this.attempts = new Map([...changes.attempts, ...this.attempts]);
    this.events = [...changes.events, ...this.events];
  }

  /** Puts waiters whose changes are not committed yet back in front of the newer ones. */
  protected putBackWaiters(waiters: Waiter[]): void {
    this.waiters = [...waiters, ...this.waiters];
  }

  /**
   * Runs whose partition this replica lost (cluster/partitioning.ts): what is marked for them is
   * dropped now, and so are their rows when a commit in flight fails and would be made again. They
   * were changed under a hold that ended: written under a later one (the partition taken again),
   * they would overwrite what another replica wrote meanwhile, or what the reload read. Their
   * objects are never written again; the runs, loaded again, are new objects.
   */
  retire(runs: readonly RunState[], tasks: readonly TaskState[]): void {
    for (const run of runs) {
      this.retired.add(run);
      this.dropRun(run.id);
    }
    for (const task of tasks) this.retired.add(task);
  }

  /** Drops what is marked for one run (its changes were refused). */
  protected dropRun(runId: string): void {
    for (const [id, t] of this.tasks) if (t.runId === runId) this.tasks.delete(id);
    for (const [key, a] of this.attempts) if (a.runId === runId) this.attempts.delete(key);
    this.runs.delete(runId);
    this.events = this.events.filter((e) => e.message.runId !== runId);
  }

  /** Refuses new flushes; waiters still pending are rejected once no drain runs. */
  protected closePending(): void {
    this.closedValue = true;
    clearTimeout(this.soonTimer);
    if (!this.running) this.rejectWaiters();
  }

  /** Starts a commit soon if none is running; changes made in the same tick share it. */
  private kick(): void {
    if (this.running || this.closedValue) return;
    this.running = true;
    setImmediate(this.startDrain);
  }

  /**
   * Drains run in the async context the writer was made in (the scheduler's start), not in that of
   * the call whose change kicked the first of them: a commit serves many runs, so its database
   * spans and log lines belong to no one call's trace (with tracing on, the pg instrumentation
   * would otherwise make every commit's queries children of whichever StartRun came first).
   */
  private readonly startDrain = AsyncResource.bind((): void => {
    void this.drain().then(this.drained);
  });

  private readonly drained = (): void => {
    this.running = false;
    if (this.closedValue) this.rejectWaiters();
    // A flush made after the drain's last look (while its promise settled) must not be stranded.
    else if (this.waiters.length > 0) this.kick();
  };

  private rejectWaiters(): void {
    const waiters = this.takeWaiters();
    for (const w of waiters)
      w.reject(
        new WriterClosedError(
          `${this.name} closed before the change was committed: the scheduler is stopping`,
        ),
      );
  }
}
