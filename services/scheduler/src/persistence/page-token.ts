/**
 * Opaque page tokens of the List RPCs: base64url JSON of the keyset position, and (`f`) a digest of
 * the listing's filters: a token continues the listing it came from, and with other filters it is
 * refused (AIP-158) rather than continuing another listing from the wrong place.
 */
import { createHash } from "node:crypto";
import { ApiError } from "@nexusflow/common";

/** Encodes a keyset position as a page token. */
export function encodeToken(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

/** Decodes a page token or throws INVALID_ARGUMENT naming the field. */
export function decodeToken<T>(token: string, check: (v: unknown) => v is T): T {
  try {
    const v: unknown = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    if (check(v)) return v;
  } catch {
    // fall through
  }
  throw ApiError.invalid("page_token", "not a page token returned by this API");
}

/** A short digest of what a listing selects by (never its page size, which may change between pages). */
export function filterDigest(filters: readonly unknown[]): string {
  return createHash("sha256").update(JSON.stringify(filters)).digest("base64url").slice(0, 16);
}

/** Whether `v` is a token's optional filter digest (tokens from before digests carry none). */
export function isDigest(v: unknown): v is string | undefined {
  return v === undefined || typeof v === "string";
}

/**
 * Throws INVALID_ARGUMENT naming page_token when a token's digest `f` is not that of `filters`;
 * `names` says which request fields those are.
 */
export function checkTokenFilters(f: string | undefined, filters: readonly unknown[], names: string): void {
  if (f !== undefined && f !== filterDigest(filters))
    throw ApiError.invalid(
      "page_token",
      `was returned for other filters: list with the same ${names} as the call that returned it`,
    );
}

/** The page size a List RPC serves when asked for 0, and the most it serves. */
export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

/**
 * A List RPC's `page_size`: 0 means {@link DEFAULT_PAGE_SIZE}; anything but 0 to
 * {@link MAX_PAGE_SIZE} is INVALID_ARGUMENT naming the field.
 */
export function pageSizeOf(pageSize: number): number {
  if (!Number.isInteger(pageSize) || pageSize < 0 || pageSize > MAX_PAGE_SIZE)
    throw ApiError.invalid(
      "page_size",
      `must be from 1 to ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE}), got ${pageSize}`,
    );
  return pageSize === 0 ? DEFAULT_PAGE_SIZE : pageSize;
}
