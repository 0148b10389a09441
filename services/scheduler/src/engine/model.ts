/**
 * The run model as the engine's files import it. It lives in ../model/run-state.ts, below both
 * the engine and the persistence layer that stores it, so that neither folder imports the other's
 * files in both directions.
 */
export * from "../model/run-state.js";
