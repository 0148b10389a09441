/**
 * A fix for kafkajs 2.2.4's request queue, applied when the scheduler makes a Kafka client.
 *
 * `RequestQueue.scheduleCheckPendingRequests` arms a timer for `throttledUntil - Date.now()` ms
 * even when no request is pending; `throttledUntil` starts at -1, so the delay is minus the
 * epoch, which setTimeout turns into 1 ms, and the timer's callback schedules the next one: every
 * open broker connection wakes the process a thousand times a second for as long as it is idle,
 * and Node 24 warns about the negative delay (TimeoutNegativeWarning, once per process).
 * Upstream: tulios/kafkajs#1751, fixes proposed in #1755 and #1768, none released.
 *
 * The replacement schedules a check only when requests are pending (at the end of a throttle, or
 * after the same 10 ms as kafkajs) or when a throttle is still running; with nothing pending and
 * no throttle there is nothing to send, and a request pushed or a response fulfilled checks the
 * queue anyway, as before. It is applied once, and only when the method is the one described (its
 * source is checked), so that a kafkajs that fixed it keeps its own.
 */
import { createRequire } from "node:module";

/** The fields of a kafkajs RequestQueue the replacement uses. */
interface RequestQueueLike {
  pending: unknown[];
  throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  checkPendingRequests(): void;
  scheduleCheckPendingRequests: (this: RequestQueueLike) => void;
}

/** kafkajs' delay before a pending request is checked again when not throttled (CHECK_PENDING_REQUESTS_INTERVAL). */
const CHECK_PENDING_MS = 10;
const PATCHED = Symbol.for("nexusflow.kafkajs.requestQueue.patched");

/** The replacement of `RequestQueue.prototype.scheduleCheckPendingRequests` (see the module comment). */
export function scheduleCheckPendingRequests(this: RequestQueueLike): void {
  if (this.throttleCheckTimeoutId) return;
  const throttledFor = this.throttledUntil - Date.now();
  let delay: number;
  if (this.pending.length > 0) delay = throttledFor > 0 ? throttledFor : CHECK_PENDING_MS;
  else if (throttledFor > 0) delay = throttledFor;
  else return;
  this.throttleCheckTimeoutId = setTimeout(() => {
    this.throttleCheckTimeoutId = null;
    this.checkPendingRequests();
  }, delay);
}

/** What {@link fixKafkaRequestQueue} did. */
export type RequestQueueFix = "fixed" | "already fixed" | "not the method described" | "not found";

/**
 * Replaces the method on `prototype` (by default kafkajs' RequestQueue's) when it is the 2.2.4 one.
 * Idempotent.
 */
export function fixKafkaRequestQueue(prototype?: object): RequestQueueFix {
  const found = prototype ?? requestQueuePrototype();
  if (found === undefined) return "not found";
  const proto = found as RequestQueueLike & { [PATCHED]?: true };
  if (proto[PATCHED] === true) return "already fixed";
  const source = String(proto.scheduleCheckPendingRequests);
  if (
    !source.includes("this.throttledUntil - Date.now()") ||
    !source.includes("CHECK_PENDING_REQUESTS_INTERVAL") ||
    !source.includes("setTimeout")
  )
    return "not the method described";
  Object.defineProperty(proto, "scheduleCheckPendingRequests", {
    value: scheduleCheckPendingRequests,
    writable: true,
    configurable: true,
  });
  Object.defineProperty(proto, PATCHED, { value: true });
  return "fixed";
}

/**
 * kafkajs' RequestQueue prototype (the module the kafkajs package loads), or undefined when that
 * file is not there or cannot be loaded (another layout, an `exports` map).
 */
function requestQueuePrototype(): object | undefined {
  try {
    const require = createRequire(import.meta.url);
    const RequestQueue = require("kafkajs/src/network/requestQueue/index.js") as { prototype?: unknown };
    return typeof RequestQueue.prototype === "object" && RequestQueue.prototype !== null
      ? RequestQueue.prototype
      : undefined;
  } catch {
    return undefined;
  }
}
