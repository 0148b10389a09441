/** Lifecycle events of the runs the engine holds, numbered per run in the order they happen (persistence/outbox.ts). */
export { lifecycleEvent, type EventInit } from "../persistence/outbox.js";
