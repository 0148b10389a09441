/**
 * What one event-loop turn gives the session, sent together at its end: the Started of attempts
 * begun in the turn (an attempt that already ended sends only its Completed or Failed, which
 * implies the start: a fast task costs the session one message less) and one Credit for every
 * slot freed in the turn.
 */
import type { TaskAttempt } from "./task-attempt.js";

/** Sends what a turn accumulated. */
export type FlushTurn = (started: readonly TaskAttempt[], freedSlots: number) => void;

/** Collects Started and freed slots until the end of the event-loop turn. */
export class TurnBatch {
  readonly #flush: FlushTurn;
  #started: TaskAttempt[] = [];
  #freed = 0;
  #scheduled = false;

  /** `flush` is called at the end of each turn that collected something. */
  constructor(flush: FlushTurn) {
    this.#flush = flush;
  }

  /** An attempt began: its Started goes at the end of the turn, if it still runs then. */
  started(attempt: TaskAttempt): void {
    this.#started.push(attempt);
    this.#schedule();
  }

  /** A slot is free again. */
  slotFreed(): void {
    this.#freed++;
    this.#schedule();
  }

  /** Forgets the freed slots: a new session was granted every free slot. */
  forgetFreedSlots(): void {
    this.#freed = 0;
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      const started = this.#started;
      const freed = this.#freed;
      this.#started = [];
      this.#freed = 0;
      this.#flush(started, freed);
    });
  }
}
