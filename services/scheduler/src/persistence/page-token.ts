/**
 * Opaque page tokens of the List RPCs: base64url JSON of the keyset position, and (`f`) a digest of
 * the listing's filters: a token continues the listing it came from, and with other filters it is
 * refused (AIP-158) rather than continuing another listing from the wrong place.
 */
import { createHash } from "node:crypto";
import { ApiError } from "@nexusflow/common";

/** What a listing selects by, which its tokens are bound to, and the request fields that are. */
export interface Listing {
  filters: readonly unknown[];
  /** The fields, for the refusal: "name and latest_only". */
  names: string;
}

/** Encodes a keyset position as a page token, bound to `listing` when given (its digest as `f`). */
export function encodeToken(position: object, listing?: Listing): string {
  const value = listing === undefined ? position : { ...position, f: filterDigest(listing.filters) };
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

/**
 * Decodes a page token or throws INVALID_ARGUMENT naming the field: when it is not ours, or (with
 * `listing`) when it was returned for other filters.
 */
export function decodeToken<T>(token: string, check: (v: unknown) => v is T, listing?: Listing): T {
  let position: T | undefined;
  try {
    const v: unknown = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    if (check(v) && (listing === undefined || isDigest((v as { f?: unknown }).f))) position = v;
  } catch {
    // fall through
  }
  if (position === undefined) throw ApiError.invalid("page_token", "not a page token returned by this API");
  if (listing !== undefined)
    checkTokenFilters((position as { f?: string }).f, listing.filters, listing.names);
  return position;
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
