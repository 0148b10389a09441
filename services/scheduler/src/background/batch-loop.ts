/**
 * The component around a {@link PassLoop} that the scheduler's batch loops share (the events' match
 * loop, the wait match loop, the schedules' fire loop): its state, pass count, start, wake and stop,
 * and the pacing options with their defaults applied in one place. A subclass gives its name and
 * its pass; states: IDLE -> RUNNING -> STOPPING -> STOPPED (pass-loop.ts).
 */
import type { Logger } from "@nexusflow/common";
import { PassLoop, type PassLoopState } from "./pass-loop.js";

/** The pacing options of a {@link BatchLoop}. */
export interface BatchLoopOptions {
  log: Logger;
  /** How often the loop looks again while work could not be done for now; also the pause after a failed pass. */
  pollMs?: number | undefined;
  /** Most rows one pass takes. */
  batchSize?: number | undefined;
  /** How long the loop sleeps when nothing is left to do, unless woken. */
  idleMs?: number | undefined;
}

/** A kind of loop: its name in the logs and its defaults. */
export interface BatchLoopKind {
  /** What the logs call the loop, e.g. "event match loop". */
  name: string;
  /** @default 1000 */
  pollMs?: number;
  /** @default 500 */
  batchSize?: number;
  /** @default 30000 */
  idleMs?: number;
  /** The longest pause after failed passes, ms. @default 5000 */
  retryMaxMs?: number;
}

/** See the module comment. */
export abstract class BatchLoop {
  protected readonly pollMs: number;
  protected readonly batchSize: number;
  protected readonly idleMs: number;
  private readonly loop: PassLoop;

  protected constructor(kind: BatchLoopKind, options: BatchLoopOptions) {
    this.pollMs = options.pollMs ?? kind.pollMs ?? 1000;
    this.batchSize = options.batchSize ?? kind.batchSize ?? 500;
    this.idleMs = options.idleMs ?? kind.idleMs ?? 30_000;
    this.loop = new PassLoop({
      name: kind.name,
      log: options.log,
      pass: (signal) => this.pass(signal),
      retryInitialMs: this.pollMs,
      retryMaxMs: kind.retryMaxMs,
    });
  }

  /** The current state's kind. */
  get state(): PassLoopState["kind"] {
    return this.loop.state;
  }

  /** Passes completed (for tests and metrics). */
  get passCount(): number {
    return this.loop.passCount;
  }

  /** Starts the loop; its first pass is at once. */
  start(): void {
    this.loop.start();
  }

  /** Makes the loop pass again now (or as soon as the pass in progress ends). */
  wake(): void {
    this.loop.wake();
  }

  /** Stops the loop after the pass in progress, waiting at most `graceMs` for it. */
  stop(graceMs = 5000): Promise<void> {
    return this.loop.stop(graceMs);
  }

  /** One pass; resolves with how long to sleep before the next (0: at once). */
  protected abstract pass(signal: AbortSignal): Promise<number>;
}
