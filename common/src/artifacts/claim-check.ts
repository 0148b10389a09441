/**
 * Claim check for large task outputs: the executor stores the output's JSON as
 * `attempt-{n}/output.json` and reports only its {@link ArtifactRef}; whoever needs the value
 * reads it back with {@link resolveOutputRef}, which checks size and SHA-256 against the ref.
 */
import { type JsonValue, fromJson, isMessage } from "@bufbuild/protobuf";
import { type ArtifactRef, ArtifactRefSchema } from "@nexusflow/gen";
import { ArtifactError } from "./errors.js";
import { OUTPUT_OBJECT, checkKey } from "./keys.js";
import { type ArtifactStore, readAll, sha256Hex } from "./store.js";

/** Outputs whose JSON is larger than this are offloaded by default, in bytes (256 KiB). */
export const DEFAULT_OFFLOAD_THRESHOLD_BYTES = 256 * 1024;
/** Largest offloaded output {@link resolveOutputRef} reads by default, in bytes (256 MiB). */
export const DEFAULT_MAX_RESOLVED_BYTES = 256 * 1024 * 1024;

/** Stores an output's JSON text as `output.json` under an attempt prefix; resolves to its ref. */
export function offloadOutput(
  store: ArtifactStore,
  attemptPrefix: string,
  json: string,
): Promise<ArtifactRef> {
  return store.put(`${attemptPrefix}${OUTPUT_OBJECT}`, json, { contentType: "application/json" });
}

/**
 * An ArtifactRef from a message or from its JSON form (as kept in the scheduler's jsonb columns,
 * `toJson(ArtifactRefSchema, ref)`). Throws {@link ArtifactError} `INVALID_ARGUMENT` for anything else.
 */
export function toArtifactRef(ref: unknown): ArtifactRef {
  if (isMessage(ref, ArtifactRefSchema)) return ref;
  try {
    return fromJson(ArtifactRefSchema, ref as JsonValue, { ignoreUnknownFields: true });
  } catch (e) {
    throw new ArtifactError("INVALID_ARGUMENT", `not an artifact ref: ${JSON.stringify(ref)}`, undefined, {
      cause: e,
    });
  }
}

/** Options of {@link resolveOutputRef}. */
export interface ResolveOptions {
  /**
   * Largest object read, in bytes.
   * @default 256 MiB
   */
  maxBytes?: number | undefined;
}

/**
 * Reads an offloaded output back: the JSON value stored under `ref.key`. `ref` is an
 * ArtifactRef message or its JSON form. Throws {@link ArtifactError}: `NOT_FOUND` when the object
 * is gone, `INTEGRITY` when size, hash or JSON do not match the ref, `UNAVAILABLE` when the store
 * cannot be read, `INVALID_ARGUMENT` when `ref` is not a ref.
 */
export async function resolveOutputRef(
  store: ArtifactStore,
  ref: unknown,
  options: ResolveOptions = {},
): Promise<JsonValue> {
  const r = toArtifactRef(ref);
  const key = checkKey(r.key);
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_RESOLVED_BYTES;
  if (r.size > BigInt(maxBytes))
    throw new ArtifactError(
      "INTEGRITY",
      `offloaded output ${key} is ${r.size} bytes, more than ${maxBytes}`,
      key,
    );
  const data = await readAll(await store.get(key));
  if (r.size > 0n && BigInt(data.length) !== r.size)
    throw new ArtifactError(
      "INTEGRITY",
      `offloaded output ${key} is ${data.length} bytes, its ref says ${r.size}`,
      key,
    );
  if (r.sha256 !== "" && sha256Hex(data) !== r.sha256)
    throw new ArtifactError(
      "INTEGRITY",
      `offloaded output ${key} does not match the SHA-256 of its ref`,
      key,
    );
  try {
    return JSON.parse(data.toString("utf8")) as JsonValue;
  } catch (e) {
    throw new ArtifactError("INTEGRITY", `offloaded output ${key} is not JSON`, key, { cause: e });
  }
}
