/** Builds the artifact store the configuration asks for. */
import { type ArtifactConfig, ConfigError } from "../config.js";
import { FilesystemArtifactStore } from "./filesystem.js";
import { S3ArtifactStore } from "./s3.js";
import type { ArtifactStore } from "./store.js";

/**
 * The store of `config`: S3 when `s3Endpoint` is set (credentials required), the filesystem
 * under `dir` otherwise. Prepares it (`ensureReady`: bucket or folder created when missing), so a
 * store that cannot be used fails here, at start-up. Throws {@link ConfigError} for missing
 * credentials, `ArtifactError` `UNAVAILABLE` when the back end cannot be reached.
 */
export async function createArtifactStore(config: ArtifactConfig): Promise<ArtifactStore> {
  let store: ArtifactStore;
  if (config.s3Endpoint !== undefined) {
    if (config.s3AccessKey === undefined)
      throw new ConfigError("S3_ACCESS_KEY", "required when S3_ENDPOINT is set");
    if (config.s3SecretKey === undefined)
      throw new ConfigError("S3_SECRET_KEY", "required when S3_ENDPOINT is set");
    store = new S3ArtifactStore({
      endpoint: config.s3Endpoint,
      accessKey: config.s3AccessKey,
      secretKey: config.s3SecretKey,
      region: config.s3Region,
      bucket: config.s3Bucket,
    });
  } else {
    store = new FilesystemArtifactStore({ root: config.dir });
  }
  await store.ensureReady();
  return store;
}
