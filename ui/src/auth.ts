/**
 * The bearer token: pasted into the prompt, or handed over once by `npm start`'s link in the URL
 * fragment (`/ui/#token=...`). Either way it is kept in sessionStorage (this tab only, gone when
 * it closes) and never in the URL: the fragment is read and removed from the address bar and the
 * history entry before anything else runs. Fragments are never sent to the server, so the token
 * reaches no access log, and `referrer-policy: no-referrer` keeps the address out of other sites'.
 *
 * Claims are decoded here for display only (who, which scopes, until when); the gateway and the
 * scheduler verify the token and enforce the scopes on every call.
 */

const STORAGE_KEY = "nexusflow.token";

/** Moves a `#token=...` fragment into sessionStorage and removes it from the URL. */
export function takeTokenFromFragment(): void {
  const hash = window.location.hash;
  if (!hash.startsWith("#")) return;
  const params = new URLSearchParams(hash.slice(1));
  const token = params.get("token");
  if (token === null) return;
  if (token.trim() !== "") sessionStorage.setItem(STORAGE_KEY, token.trim());
  params.delete("token");
  const rest = params.toString();
  const url = `${window.location.pathname}${window.location.search}${rest === "" ? "" : `#${rest}`}`;
  window.history.replaceState(window.history.state, "", url);
}

/** The stored token, if any. */
export function storedToken(): string | undefined {
  const token = sessionStorage.getItem(STORAGE_KEY);
  return token === null || token === "" ? undefined : token;
}

/** Keeps `token` for this tab. */
export function storeToken(token: string): void {
  sessionStorage.setItem(STORAGE_KEY, token);
}

/** Forgets the token. */
export function forgetToken(): void {
  sessionStorage.removeItem(STORAGE_KEY);
}

/** What a token says about its holder (unverified: for display only). */
export interface TokenInfo {
  subject: string | undefined;
  scopes: ReadonlySet<string>;
  expiresAt: Date | undefined;
}

function base64UrlDecode(text: string): string {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/**
 * The subject, scopes and expiry of a JWT, read from its payload without verifying it; undefined
 * when it is not a JWT. Scopes come from `scope` (space-separated), `scp` and `roles` (arrays or
 * strings), as the server reads them (common/src/auth.ts).
 */
export function decodeToken(token: string): TokenInfo | undefined {
  const parts = token.split(".");
  if (parts.length !== 3 || parts[1] === undefined) return undefined;
  let claims: unknown;
  try {
    claims = JSON.parse(base64UrlDecode(parts[1]));
  } catch {
    return undefined;
  }
  if (typeof claims !== "object" || claims === null) return undefined;
  const c = claims as Record<string, unknown>;
  const scopes = new Set<string>();
  const add = (v: unknown): void => {
    if (typeof v === "string") v.split(/\s+/).forEach((s) => s !== "" && scopes.add(s));
    else if (Array.isArray(v)) v.forEach((s) => typeof s === "string" && s !== "" && scopes.add(s));
  };
  add(c["scope"]);
  add(c["scp"]);
  add(c["roles"]);
  return {
    subject: typeof c["sub"] === "string" ? c["sub"] : undefined,
    scopes,
    expiresAt: typeof c["exp"] === "number" ? new Date(c["exp"] * 1000) : undefined,
  };
}

/** Whether the token's scopes include `scope` (admin includes every scope). */
export function hasScope(info: TokenInfo | undefined, scope: string): boolean {
  return info !== undefined && (info.scopes.has(scope) || info.scopes.has("admin"));
}
