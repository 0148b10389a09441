/**
 * @nexusflow/common/artifacts: the {@link ArtifactStore} contract shared by scheduler and
 * executor, its S3 and filesystem back ends, the key layout of task artifacts and the claim check
 * of large outputs. The contract test suite is in ./contract.ts (test code, not exported here).
 */
export * from "./errors.js";
export * from "./keys.js";
export * from "./store.js";
export { FilesystemArtifactStore, type FilesystemArtifactStoreOptions } from "./filesystem.js";
export { S3ArtifactStore, type S3ArtifactStoreOptions } from "./s3.js";
export { createArtifactStore } from "./factory.js";
export * from "./claim-check.js";
export * from "./log-lines.js";
