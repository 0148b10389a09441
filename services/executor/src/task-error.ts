/**
 * TaskError and its helpers live with the rest of the handler API in ./handlers/task-error.ts, so
 * that the handlers import nothing from this folder; this re-export serves the imports that still
 * name the old path.
 */
export * from "./handlers/task-error.js";
