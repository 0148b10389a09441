/**
 * The run model as engine.ts and dispatcher.ts import it. It lives in ../model/run-state.ts, below
 * both the engine and the persistence layer that stores it, so that neither folder imports the
 * other's files in both directions; import it from there.
 */
export * from "../model/run-state.js";
