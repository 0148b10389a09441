/**
 * Which HTTP headers belong to the call and which to one hop of it: shared by the gRPC forwarder
 * (../proxy.ts) and the REST handler (../rest/handler.ts), which both pass a call on.
 */

/** Hop-by-hop headers (RFC 9110 §7.6.1) plus `host`, which belongs to the upstream hop. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
]);

/** Framing headers each protocol implementation writes itself; forwarding them would conflict. */
const FRAMING = new Set([
  "content-type",
  "content-length",
  "content-encoding",
  "accept-encoding",
  "user-agent",
  "x-user-agent",
  "x-grpc-web",
  "date",
]);
const FRAMING_PREFIXES = [":", "grpc-", "connect-"];

/**
 * Headers the services set for one another (e.g. `nexusflow-forwarded-by`, a call one scheduler
 * replica passed to another, which is then never routed on): never taken from outside.
 */
const INTERNAL_PREFIX = "nexusflow-";

/** True for headers that describe one hop of the call rather than the call itself. */
export function isHopHeader(name: string): boolean {
  const key = name.toLowerCase();
  return HOP_BY_HOP.has(key) || FRAMING.has(key) || FRAMING_PREFIXES.some((p) => key.startsWith(p));
}

/**
 * The end-to-end subset of `headers`: hop-by-hop and framing headers removed, as well as any header
 * the `Connection` header names (RFC 9110 §7.6.1) and the services' internal ones (`nexusflow-*`).
 */
export function endToEndHeaders(headers: Headers): Headers {
  const listed = new Set(
    (headers.get("connection") ?? "")
      .split(",")
      .map((h) => h.trim().toLowerCase())
      .filter((h) => h !== ""),
  );
  const out = new Headers();
  headers.forEach((value, key) => {
    if (!isHopHeader(key) && !listed.has(key) && !key.startsWith(INTERNAL_PREFIX)) out.append(key, value);
  });
  return out;
}
