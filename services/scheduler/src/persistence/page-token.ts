/** Opaque page tokens of the List RPCs: base64url JSON of the keyset position. */
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
