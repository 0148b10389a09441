/** Who waits for commits: WatchRun streams by run id, and the outbox relay for events. */
export class Watchers {
  private readonly byRun = new Map<string, Set<() => void>>();
  private readonly eventListeners: (() => void)[] = [];

  /** Whether any run is watched. */
  get size(): number {
    return this.byRun.size;
  }

  /** Calls `listener` after each commit that touched the run. Returns the unsubscribe function. */
  watch(runId: string, listener: () => void): () => void {
    let set = this.byRun.get(runId);
    if (set === undefined) {
      set = new Set();
      this.byRun.set(runId, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.byRun.delete(runId);
    };
  }

  /** Wakes the watchers of `runId`. */
  notify(runId: string): void {
    const set = this.byRun.get(runId);
    if (set === undefined) return;
    for (const l of set) l();
  }

  /** Calls `listener` after each commit that wrote lifecycle events. */
  onEvents(listener: () => void): void {
    this.eventListeners.push(listener);
  }

  /** Wakes the listeners of events. */
  eventsCommitted(): void {
    for (const l of this.eventListeners) l();
  }
}
