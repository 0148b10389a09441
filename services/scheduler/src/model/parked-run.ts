/** What is stored for a run that left memory to wait (core/parking.ts, persistence/parked-runs.ts). */

/** A wait for an event of a parked run: its task, and the key or pattern it listens to. */
export interface ParkedEventWait {
  readonly taskRunId: string;
  /** The literal key it waits for; null when it is a pattern. */
  readonly key: string | null;
  /**
   * A POSIX regular expression (PostgreSQL `~`) that every key the pattern matches matches
   * (dag/triggers.ts keyMatches decides, once the run is back); null for a literal key.
   */
  readonly pattern: string | null;
}

/** What is stored for a parked run (core/parking.ts parkRun). */
export interface ParkedEntry {
  readonly runId: string;
  /** When it must be loaded back at the latest: its earliest wait timeout, sleep or deadline. */
  readonly wakeAt: Date | null;
  readonly eventWaits: readonly ParkedEventWait[];
}
