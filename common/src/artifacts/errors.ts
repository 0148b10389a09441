/**
 * Errors of the artifact stores. Callers tell them apart by `code` (never by message text) and map
 * them to API codes: NOT_FOUND -> NOT_FOUND, INVALID_KEY and INVALID_ARGUMENT -> INVALID_ARGUMENT, INTEGRITY ->
 * DATA_LOSS, CONFLICT -> FAILED_PRECONDITION, UNAVAILABLE -> UNAVAILABLE.
 */

/** Why an artifact operation failed. */
export type ArtifactErrorCode =
  /** No object under the key. */
  | "NOT_FOUND"
  /** The key (or prefix, or name) is not acceptable: empty, absolute, `..`, NUL, reserved. */
  | "INVALID_KEY"
  /** Another argument is not acceptable (e.g. a malformed content type). */
  | "INVALID_ARGUMENT"
  /** The content does not match its recorded size or SHA-256, or is not what it claims to be. */
  | "INTEGRITY"
  /** The key cannot be stored next to an existing one (filesystem: a file where a folder must be). */
  | "CONFLICT"
  /** The back end could not be reached or refused the request. */
  | "UNAVAILABLE";

/** An artifact store failure; `key` names the object when there is one. */
export class ArtifactError extends Error {
  override name = "ArtifactError";
  constructor(
    readonly code: ArtifactErrorCode,
    message: string,
    readonly key?: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Type guard for {@link ArtifactError}, optionally of one code. */
export function isArtifactError(e: unknown, code?: ArtifactErrorCode): e is ArtifactError {
  return e instanceof ArtifactError && (code === undefined || e.code === code);
}
