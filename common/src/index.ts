/** @nexusflow/common: configuration, logging, durations and errors shared by the services. */
export * from "./auth.js";
export * from "./config.js";
export * from "./duration.js";
export * from "./event-id.js";
export * from "./logger.js";
export * from "./errors.js";
export * from "./grpc.js";
export * from "./health.js";
export * from "./net.js";
export * from "./reflection.js";
export * from "./json-value.js";
export * from "./session.js";
export * from "./value-wire.js";
export * from "./wire/varint.js";
export * from "./task-error-types.js";
export * from "./text.js";
