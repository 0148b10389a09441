/** Small networking helpers shared by services, the dev stack and tests. */
import { createServer } from "node:net";

/** Finds a TCP port that is free on `host` right now (the OS picks it). */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** True when `e` is a Node error with the given `code` (e.g. "EADDRINUSE"). */
export function hasErrorCode(e: unknown, code: string): boolean {
  return typeof e === "object" && e !== null && "code" in e && e.code === code;
}

/**
 * Whether something listens on `host`:`port` now, by the errno of a listen there (EADDRINUSE).
 * For servers whose bind errors keep only the text of the system error (grpc-js). Port 0 is never
 * in use.
 */
export function portInUse(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.unref();
    probe.once("error", (e) => resolve(hasErrorCode(e, "EADDRINUSE")));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(false)));
  });
}
