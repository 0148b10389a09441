/**
 * Which of the executor's sessions to scheduler replicas are idle (replica-links.ts isIdle: credit
 * held with no lease coming), checked twice per {@link IDLE_AFTER_MS}: when that set changes, the
 * executor shares its slots again (creditShares), so slots held for a replica with nothing to lease
 * go to the replicas that have work, and come back when it has some again.
 */
import { IDLE_AFTER_MS, isIdle, type Link } from "./replica-links.js";

/** What {@link IdleWatch} needs. */
export interface IdleWatchOptions {
  /** Every link (live or not). */
  links(): Iterable<Link>;
  /** Called when the idle links of two or more live ones changed. */
  changed(): void;
  /** Between two checks, ms. @default IDLE_AFTER_MS / 2 */
  intervalMs?: number;
}

/** See the module comment. */
export class IdleWatch {
  #timer: NodeJS.Timeout | undefined;
  #last = "";

  constructor(private readonly options: IdleWatchOptions) {}

  /** Starts checking (idempotent). */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => this.check(), this.options.intervalMs ?? IDLE_AFTER_MS / 2);
    this.#timer.unref();
  }

  /** Stops checking (idempotent). */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One check, at `now` (monotonic ms). */
  check(now = performance.now()): void {
    let live = 0;
    const idle: string[] = [];
    for (const link of this.options.links()) {
      if (link.retired || link.session?.live !== true) continue;
      live++;
      if (isIdle(link, now)) idle.push(link.id);
    }
    const key = live < 2 ? "" : idle.join(",");
    if (key === this.#last) return;
    this.#last = key;
    if (live >= 2) this.options.changed();
  }
}
