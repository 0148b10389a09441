/**
 * A background loop of passes, as the schedules' fire loop and the events' match loop run: each
 * pass says how long to sleep before the next; `wake()` cuts a sleep short; a failing pass is
 * retried with a pause doubling up to `maxRetryMs`, logged once per outage (and once when passes
 * work again). States: IDLE -> RUNNING -> STOPPING -> STOPPED; stop() aborts the sleep and waits
 * for the pass in progress, at most a grace (a pass stuck on an unreachable database must not hold
 * the scheduler's stop).
 */
import type { Logger } from "@nexusflow/common";
import { endedWithin } from "./grace.js";

/** Options of {@link PassLoop}. */
export interface PassLoopOptions {
  /** What the logs call the loop, e.g. "schedule fire loop". */
  name: string;
  log: Logger;
  /** One pass; resolves with how long to sleep before the next (0: at once). */
  pass: (signal: AbortSignal) => Promise<number>;
  /** The first pause after a failed pass (doubling while passes fail), ms. */
  retryInitialMs: number;
  /** The longest pause after failed passes, ms. @default 5000 */
  retryMaxMs?: number | undefined;
}

/** The loop's state; RUNNING carries what stop() needs. */
export type PassLoopState =
  | { kind: "IDLE" }
  | { kind: "RUNNING"; controller: AbortController; done: Promise<void> }
  | { kind: "STOPPING"; done: Promise<void> }
  | { kind: "STOPPED" };

/** See the module comment. */
export class PassLoop {
  private stateValue: PassLoopState = { kind: "IDLE" };
  private woken = false;
  private wakeSleep: (() => void) | undefined;
  private passes = 0;

  constructor(private readonly options: PassLoopOptions) {}

  /** The current state's kind. */
  get state(): PassLoopState["kind"] {
    return this.stateValue.kind;
  }

  /** Passes completed. */
  get passCount(): number {
    return this.passes;
  }

  /** Starts the loop; its first pass is at once. */
  start(): void {
    if (this.stateValue.kind !== "IDLE")
      throw new Error(`cannot start a ${this.options.name} that is ${this.stateValue.kind}`);
    const controller = new AbortController();
    const done = this.run(controller.signal);
    this.stateValue = { kind: "RUNNING", controller, done };
  }

  /** Makes the loop pass again now (or as soon as the pass in progress ends). */
  wake(): void {
    this.woken = true;
    this.wakeSleep?.();
  }

  /** Stops the loop after the pass in progress, waiting at most `graceMs` for it. */
  async stop(graceMs = 5000): Promise<void> {
    const state = this.stateValue;
    if (state.kind === "IDLE") {
      this.stateValue = { kind: "STOPPED" };
      return;
    }
    if (state.kind === "STOPPED") return;
    if (state.kind === "STOPPING") return state.done;
    state.controller.abort();
    this.stateValue = { kind: "STOPPING", done: state.done };
    if (!(await endedWithin(state.done, graceMs)))
      this.options.log.warn({ grace_ms: graceMs }, `${this.options.name} stopped mid-pass`);
    this.stateValue = { kind: "STOPPED" };
  }

  private async run(signal: AbortSignal): Promise<void> {
    const { name, log } = this.options;
    const retryMaxMs = this.options.retryMaxMs ?? 5000;
    let failures = 0;
    while (!signal.aborted) {
      let delay: number;
      try {
        delay = await this.options.pass(signal);
        this.passes++;
        if (failures > 0) log.info({ failures }, `${name} passes again`);
        failures = 0;
      } catch (e) {
        if (signal.aborted) break;
        // Backing off while the database is away; said once per outage (then again when a pass
        // works), not at every retry while it lasts.
        failures++;
        delay = Math.min(this.options.retryInitialMs * 2 ** (failures - 1), retryMaxMs);
        if (failures === 1) log.error({ err: e, retry_ms: delay }, `${name} pass failed; retrying`);
        else log.debug({ err: e, retry_ms: delay, failures }, `${name} pass failed again`);
      }
      await this.sleep(delay, signal);
    }
  }

  /** Sleeps `ms` unless woken or aborted. */
  private sleep(ms: number, signal: AbortSignal): Promise<void> {
    if (this.woken || signal.aborted || ms <= 0) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.wakeSleep = undefined;
        this.woken = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
      this.wakeSleep = done;
    });
  }
}
